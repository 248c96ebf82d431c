/* One entry of the configuration's "listeners" list: a named listener as
 * the API, MCP and HOME/config.json give it.
 *
 *   {"name": "web", "type": "http-proxy", "listen": "127.0.0.1:8080"}
 *   {"name": "api", "type": "reverse", "url": "https://backend:8443",
 *    "listen": 8443}
 *   {"name": "db", "type": "forward", "listen": "5432", "target": "db:5432",
 *    "protocol": "raw", "tls": false, "upstream_tls": true,
 *    "upstream_insecure_skip_verify": true, "max_connections": 100}
 *   {"name": "dns", "type": "udp-forward", "listen": 5353, "target": "ns:53"}
 *   {"name": "x", "type": "forward", "spec": "9000=host:443,tls"}
 *
 * type: http-proxy, socks5, http-proxy+socks5 (one port for both), reverse,
 * forward, udp-forward. Instead of the fields, "spec" may give the listener
 * in the syntax of run's option of the same name (listen/target.h). */
#ifndef WGMITM_LISTEN_ENTRY_H
#define WGMITM_LISTEN_ENTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "listen/target.h"

#define LISTEN_NAME_MAX 95

enum listen_kind { LISTEN_PROXY, LISTEN_TARGET, LISTEN_UDP_FORWARD };

struct listen_entry {
	char name[LISTEN_NAME_MAX + 1];
	const char *type; /* static: one of the types above */
	enum listen_kind kind;
	bool http, socks5;        /* LISTEN_PROXY */
	struct listen_target t;   /* t.addr for every kind; the target for the others */
	uint32_t max_connections; /* open client connections; 0: the listener's default */
};

/* 0, or -1 with the member that is wrong in `field` ("" for the entry)
 * and why in `why`. */
int listen_entry_parse(const json_t *e, struct listen_entry *out, char *field, size_t fieldlen,
		       char *why, size_t whylen);

/* The entry of a listener given by run's options: the type's option spec
 * (as --forward takes it) under a generated name, TYPE@ADDR:PORT. */
json_t *listen_entry_from_spec(const char *type, const char *spec,
			       const struct sockaddr_storage *addr);

#endif
