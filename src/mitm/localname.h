/* The endpoint's own names inside the tunnel. The tunnel's DNS answers
 * them with the endpoint's tunnel addresses, without asking upstream; the
 * CA page (mitm/capage.h) is served there on port 80.
 *
 * ".internal" is reserved by ICANN for private use (2024): it is never
 * delegated in the public DNS, so these names cannot shadow a real one. */
#ifndef WGMITM_MITM_LOCALNAME_H
#define WGMITM_MITM_LOCALNAME_H

#define LOCALNAME_HOST "wgmitm.internal"
#define LOCALNAME_CA_HOST "ca." LOCALNAME_HOST
#define LOCALNAME_TTL 60 /* seconds, A and AAAA answers */

#endif
