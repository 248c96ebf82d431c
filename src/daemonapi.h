/* The running endpoint as the control API sees it. */
#ifndef WGMITM_DAEMONAPI_H
#define WGMITM_DAEMONAPI_H

#include "control/api.h"
#include "daemon_internal.h"

void daemon_api_ops(struct daemon *d, struct api_ops *ops);

#endif
