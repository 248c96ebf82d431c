# llhttp's C sources ship in Debian's node-llhttp package; they are compiled
# here as a private static library (never copied into the repository).
# Included by every folder that parses HTTP; the first defines the target.
include_guard(GLOBAL)
set(WGMITM_LLHTTP_DIR "/usr/share/llhttp" CACHE PATH "llhttp C sources (node-llhttp)")
set(WGMITM_LLHTTP_INCLUDE "/usr/share/include/llhttp" CACHE PATH "llhttp.h (node-llhttp)")
if(NOT EXISTS "${WGMITM_LLHTTP_DIR}/llhttp.c" OR NOT EXISTS "${WGMITM_LLHTTP_INCLUDE}/llhttp.h")
  message(FATAL_ERROR "llhttp sources not found in ${WGMITM_LLHTTP_DIR}: install node-llhttp")
endif()
add_library(llhttp STATIC ${WGMITM_LLHTTP_DIR}/llhttp.c ${WGMITM_LLHTTP_DIR}/api.c
  ${WGMITM_LLHTTP_DIR}/http.c)
target_include_directories(llhttp SYSTEM PUBLIC ${WGMITM_LLHTTP_INCLUDE})
# Third-party code: our warning flags are not its problem.
target_compile_options(llhttp PRIVATE -w)
set_target_properties(llhttp PROPERTIES POSITION_INDEPENDENT_CODE ON)
