# lwIP 2.1.3 core, built from Debian's `lwip` source package (fetched into
# WGMITM_LWIP_DIR by scripts/fetch-lwip) with the project's own lwipopts.h
# and arch/cc.h from src/netstack. Only the raw-API core: no sockets, no
# netconn, no PPP, no OS port (NO_SYS=1 on the libuv loop thread).
#
# Include once; defines the static library target `lwip`.

if(TARGET lwip)
  return()
endif()

if(NOT EXISTS "${WGMITM_LWIP_DIR}/src/core/tcp.c")
  message(FATAL_ERROR
    "lwIP sources not found in WGMITM_LWIP_DIR=${WGMITM_LWIP_DIR}.\n"
    "Run scripts/fetch-lwip (fetches Debian's lwip 2.1.3 source package into "
    "third_party/lwip), or pass -DWGMITM_LWIP_DIR=/path/to/lwip-2.1.3.")
endif()

file(STRINGS "${WGMITM_LWIP_DIR}/src/include/lwip/init.h" _lwip_ver
     REGEX "^#define LWIP_VERSION_(MAJOR|MINOR|REVISION)[ \t]")
string(REGEX REPLACE ".*MAJOR[ \t]+([0-9]+).*MINOR[ \t]+([0-9]+).*REVISION[ \t]+([0-9]+).*"
       "\\1.\\2.\\3" _lwip_ver "${_lwip_ver}")
if(NOT _lwip_ver STREQUAL "2.1.3")
  message(WARNING "lwIP in ${WGMITM_LWIP_DIR} is ${_lwip_ver}; lwipopts.h is tuned for 2.1.3")
endif()

set(_lwip_src "${WGMITM_LWIP_DIR}/src")

# Project patches to lwIP (patches/lwip/*.patch, applied in name order; each
# says why in its header). third_party/lwip stays as Debian ships it: the
# tree's src/ is copied into the build directory and patched there, again
# whenever the set of patches, their contents or the source tree changes
# (a stamp file records which). The upstream files have CRLF line ends; the
# files a patch touches are converted to LF first so patches are plain text.
file(GLOB _lwip_patches CONFIGURE_DEPENDS "${CMAKE_SOURCE_DIR}/patches/lwip/*.patch")
list(SORT _lwip_patches)
if(_lwip_patches)
  # An edited patch re-runs the configure step, which re-applies the set.
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${_lwip_patches})
  set(_lwip_patched "${CMAKE_BINARY_DIR}/lwip-patched")
  set(_lwip_sig "tree=${WGMITM_LWIP_DIR}")
  foreach(_p IN LISTS _lwip_patches)
    file(SHA256 "${_p}" _h)
    string(APPEND _lwip_sig "\n${_p}=${_h}")
  endforeach()
  set(_lwip_stamp "${_lwip_patched}/patches.stamp")
  set(_lwip_old_sig "")
  if(EXISTS "${_lwip_stamp}")
    file(READ "${_lwip_stamp}" _lwip_old_sig)
  endif()
  if(NOT _lwip_old_sig STREQUAL _lwip_sig)
    find_program(PATCH_EXECUTABLE patch REQUIRED)
    file(REMOVE_RECURSE "${_lwip_patched}")
    file(COPY "${WGMITM_LWIP_DIR}/src" DESTINATION "${_lwip_patched}")
    foreach(_p IN LISTS _lwip_patches)
      file(STRINGS "${_p}" _targets REGEX "^\\+\\+\\+ b/")
      foreach(_t IN LISTS _targets)
        string(REGEX REPLACE "^\\+\\+\\+ b/([^\t ]+).*" "\\1" _t "${_t}")
        file(READ "${_lwip_patched}/${_t}" _text)
        string(REPLACE "\r\n" "\n" _text "${_text}")
        file(WRITE "${_lwip_patched}/${_t}" "${_text}")
      endforeach()
      execute_process(
        COMMAND "${PATCH_EXECUTABLE}" -p1 --batch --forward --no-backup-if-mismatch
                -d "${_lwip_patched}" -i "${_p}"
        RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _out)
      if(NOT _rc EQUAL 0)
        file(REMOVE_RECURSE "${_lwip_patched}")
        message(FATAL_ERROR "lwIP patch ${_p} does not apply:\n${_out}")
      endif()
    endforeach()
    file(WRITE "${_lwip_stamp}" "${_lwip_sig}")
    message(STATUS "lwIP: applied ${_lwip_patches}")
  endif()
  set(_lwip_src "${_lwip_patched}/src")
endif()
set(LWIP_CORE_SOURCES
  ${_lwip_src}/core/def.c
  ${_lwip_src}/core/inet_chksum.c
  ${_lwip_src}/core/init.c
  ${_lwip_src}/core/ip.c
  ${_lwip_src}/core/mem.c
  ${_lwip_src}/core/memp.c
  ${_lwip_src}/core/netif.c
  ${_lwip_src}/core/pbuf.c
  ${_lwip_src}/core/raw.c
  ${_lwip_src}/core/stats.c
  ${_lwip_src}/core/sys.c
  ${_lwip_src}/core/tcp.c
  ${_lwip_src}/core/tcp_in.c
  ${_lwip_src}/core/tcp_out.c
  ${_lwip_src}/core/timeouts.c
  ${_lwip_src}/core/udp.c
  ${_lwip_src}/core/ipv4/icmp.c
  ${_lwip_src}/core/ipv4/ip4.c
  ${_lwip_src}/core/ipv4/ip4_addr.c
  ${_lwip_src}/core/ipv4/ip4_frag.c
  ${_lwip_src}/core/ipv6/icmp6.c
  ${_lwip_src}/core/ipv6/inet6.c
  ${_lwip_src}/core/ipv6/ip6.c
  ${_lwip_src}/core/ipv6/ip6_addr.c
  ${_lwip_src}/core/ipv6/ip6_frag.c
  ${_lwip_src}/core/ipv6/mld6.c
  ${_lwip_src}/core/ipv6/nd6.c
)
# Left out: altcp*, dns.c, dhcp.c, autoip.c, igmp.c, etharp.c, dhcp6.c,
# ethip6.c (all disabled in lwipopts.h; the files would compile to nothing).

add_library(lwip STATIC ${LWIP_CORE_SOURCES})
# lwipopts.h and arch/cc.h live in src/netstack; users of the netstack see
# neither (netstack.h includes no lwIP header), so these stay PRIVATE except
# for the netstack library itself, which adds them again.
target_include_directories(lwip
  PUBLIC ${_lwip_src}/include ${CMAKE_SOURCE_DIR}/src/netstack)
# Not our code: its warnings must not fail a -Werror build, so silence them
# for these files only. The project's own flags (sanitizers, fuzzer coverage)
# still apply, so lwIP is instrumented in ASan and fuzz builds.
target_compile_options(lwip PRIVATE -w)
# lwIP uses PACK_STRUCT and casts heavily; strict aliasing is not safe for it.
target_compile_options(lwip PRIVATE -fno-strict-aliasing)

# The port (sys_now, diagnostics, asserts, random numbers) is our code: it is
# compiled with the project's warnings and linked into lwip, so the library
# has no undefined symbols left for its users.
add_library(lwip_port OBJECT ${CMAKE_SOURCE_DIR}/src/netstack/arch/sys_arch.c)
target_include_directories(lwip_port
  PRIVATE ${_lwip_src}/include ${CMAKE_SOURCE_DIR}/src/netstack)
target_link_libraries(lwip_port PRIVATE PkgConfig::SODIUM PkgConfig::UV)
if(WGMITM_FUZZ)
  # Reproducible "random" numbers and ISNs, so fuzz inputs can complete TCP
  # handshakes. Never in a normal build.
  # A failed assert always aborts there, so the fuzzer reports it.
  target_compile_definitions(lwip_port PRIVATE NETSTACK_FIXED_RANDOM=1 NETSTACK_ASSERT_ABORTS=1)
endif()
target_sources(lwip PRIVATE $<TARGET_OBJECTS:lwip_port>)
# The port counts half-open connections per source with common/tally.
target_link_libraries(lwip PUBLIC wgmitm_common)
target_link_libraries(lwip PUBLIC PkgConfig::SODIUM)
