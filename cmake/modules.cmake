# The module prefix of a test, fuzz target or benchmark (wg, qr, netstack,
# common, flows, control; anything else means the whole application) picks
# the libraries it links, so a module's tests build without the layers above
# it.
function(wgmitm_libs_for name out)
  if(name MATCHES "^(test|fuzz|bench)_wg_")
    set(${out} wgmitm_wg PARENT_SCOPE)
  elseif(name MATCHES "^(test|fuzz|bench)_qr_")
    set(${out} wgmitm_qr PARENT_SCOPE)
  elseif(name MATCHES "^(test|fuzz|bench)_common_")
    set(${out} wgmitm_common PARENT_SCOPE)
  elseif(name MATCHES "^(test|fuzz|bench)_control_")
    set(${out} wgmitm_control PARENT_SCOPE)
  elseif(name MATCHES "^(test|fuzz|bench)_flows_")
    set(${out} wgmitm_flows PARENT_SCOPE)
  elseif(name MATCHES "^(test|fuzz|bench)_listen_")
    set(${out} wgmitm_listen PARENT_SCOPE)
  elseif(name MATCHES "^(test|fuzz|bench)_netstack_")
    set(${out} wgmitm_netstack PARENT_SCOPE)
  else()
    set(${out} wgmitm_app wgmitm_control wgmitm_mitm wgmitm_flows wgmitm_netstack wgmitm_wg wgmitm_qr PARENT_SCOPE)
  endif()
endfunction()
