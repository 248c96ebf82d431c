/* Reading the indexed fields of a flow record. */
#include "flows/fields.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <sodium.h>

static const char *str(const json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

static int64_t num(const json_t *o, const char *key)
{
	const json_t *v = json_object_get(o, key);
	return json_is_integer(v) ? (int64_t)json_integer_value(v) : 0;
}

/* The address of "ip:port" or "[ip6]:port", or of a URL's authority
 * ("host", "host:port", "[ip6]:port", "user@host"), lowercased. */
static void host_of(const char *s, size_t n, char out[static FLOW_HOST_LEN])
{
	const char *at = memchr(s, '@', n);
	if (at) {
		n -= (size_t)(at + 1 - s);
		s = at + 1;
	}
	const char *end = s + n;
	if (n && s[0] == '[') {
		const char *close = memchr(s, ']', n);
		s++;
		end = close ? close : end;
	} else {
		const char *colon = memchr(s, ':', n);
		/* A bare IPv6 address has several colons and no port. */
		if (colon && !memchr(colon + 1, ':', (size_t)(end - colon - 1)))
			end = colon;
	}
	size_t len = (size_t)(end - s);
	if (len >= FLOW_HOST_LEN)
		len = FLOW_HOST_LEN - 1;
	for (size_t i = 0; i < len; i++)
		out[i] = (char)tolower((unsigned char)s[i]);
	out[len] = '\0';
}

static void url_host(const char *url, char out[static FLOW_HOST_LEN])
{
	out[0] = '\0';
	const char *p = strstr(url, "://");
	if (!p)
		return;
	p += 3;
	size_t n = strcspn(p, "/?#");
	host_of(p, n, out);
}

int64_t flow_time_us(const char *t)
{
	if (!t)
		return 0;
	struct tm tm = { 0 };
	const char *rest = strptime(t, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!rest)
		return 0;
	int64_t us = 0;
	if (*rest == '.') {
		int digits = 0;
		for (rest++; isdigit((unsigned char)*rest); rest++) {
			if (digits < 6) {
				us = us * 10 + (*rest - '0');
				digits++;
			}
		}
		for (; digits < 6; digits++)
			us *= 10;
	}
	if (*rest != 'Z')
		return 0;
	time_t s = timegm(&tm);
	if (s == (time_t)-1)
		return 0;
	return (int64_t)s * 1000000 + us;
}

const char *flow_header(const json_t *headers, const char *name)
{
	size_t i;
	const json_t *h;
	json_array_foreach(headers, i, h)
	{
		const char *n = json_string_value(json_array_get(h, 0));
		if (n && strcasecmp(n, name) == 0)
			return json_string_value(json_array_get(h, 1));
	}
	return NULL;
}

int flow_headers_text(const json_t *headers, char **text, size_t *len)
{
	*text = NULL;
	*len = 0;
	if (!json_is_array(headers))
		return 0;
	size_t n = 1, i;
	const json_t *h;
	json_array_foreach(headers, i, h)
	{
		const json_t *name = json_array_get(h, 0), *value = json_array_get(h, 1);
		if (json_is_string(name) && json_is_string(value))
			n += json_string_length(name) + json_string_length(value) + 3;
	}
	char *out = malloc(n), *p = out;
	if (!out)
		return -ENOMEM;
	json_array_foreach(headers, i, h)
	{
		const json_t *name = json_array_get(h, 0), *value = json_array_get(h, 1);
		if (!json_is_string(name) || !json_is_string(value))
			continue;
		memcpy(p, json_string_value(name), json_string_length(name));
		p += json_string_length(name);
		*p++ = ':';
		*p++ = ' ';
		memcpy(p, json_string_value(value), json_string_length(value));
		p += json_string_length(value);
		*p++ = '\n';
	}
	*p = '\0';
	*text = out;
	*len = (size_t)(p - out);
	return 0;
}

const uint8_t *flow_body_bytes(const json_t *body, size_t *len, uint8_t **owned)
{
	*len = 0;
	*owned = NULL;
	const json_t *t = json_object_get(body, "text");
	if (json_is_string(t)) {
		*len = json_string_length(t);
		return (const uint8_t *)json_string_value(t);
	}
	const char *b64 = str(body, "base64");
	if (!b64)
		return NULL;
	size_t n = strlen(b64);
	uint8_t *buf = malloc(n / 4 * 3 + 3);
	if (!buf)
		return NULL;
	size_t out;
	if (sodium_base642bin(buf, n / 4 * 3 + 3, b64, n, "\r\n", &out, NULL,
			      sodium_base64_VARIANT_ORIGINAL) != 0) {
		free(buf);
		return NULL;
	}
	*len = out;
	*owned = buf;
	return buf;
}

int flow_fields_derive(const struct flow_raw *r, struct flow_fields *f)
{
	memset(f, 0, sizeof(*f));
	if (!r->type || !r->id)
		return -1;
	f->type = r->type;
	f->id = r->id;
	f->peer = r->peer;
	f->client = r->client;
	f->server = r->server;
	f->conn = r->conn;
	f->start_us = flow_time_us(r->start);
	f->end_us = flow_time_us(r->end);
	f->bytes_up = r->bytes_up;
	f->bytes_down = r->bytes_down;
	f->end_reason = r->end_reason;
	f->error = r->error ? r->error : r->tls_error;
	f->url = r->url;
	f->via = r->via ? r->via : "wireguard";
	f->user = r->user;
	f->replay_of = r->replay_of;

	if (strcmp(f->type, "http") == 0) {
		f->method = r->method;
		f->proto = r->http_version;
		f->req_ctype = r->req_ctype;
		if (r->has_response) {
			f->has_response = true;
			f->status = (int)r->status;
			f->resp_ctype = r->resp_ctype;
		}
		f->websocket = r->websocket;
		if (f->url)
			url_host(f->url, f->host);
	} else if (strcmp(f->type, "websocket") == 0) {
		f->websocket = true;
		if (f->url)
			url_host(f->url, f->host);
	} else if (strcmp(f->type, "tcp") == 0) {
		f->proto = r->proto;
		f->passthrough =
			(f->proto && strcmp(f->proto, "tls-passthrough") == 0) || r->passthrough;
		f->tls_rejected =
			f->end_reason && strcmp(f->end_reason, "tls:client_rejected") == 0;
		if (r->sni)
			host_of(r->sni, strlen(r->sni), f->host);
		else if (f->server)
			host_of(f->server, strlen(f->server), f->host);
	} else if (strcmp(f->type, "dns") == 0) {
		f->proto = r->transport;
		if (r->name) {
			size_t n = strlen(r->name);
			if (n > 1 && r->name[n - 1] == '.')
				n--;
			host_of(r->name, n, f->host);
		}
	} else if (f->server) {
		host_of(f->server, strlen(f->server), f->host);
	}
	return 0;
}

int flow_fields_read(const json_t *r, struct flow_fields *f)
{
	if (!json_is_object(r)) {
		memset(f, 0, sizeof(*f));
		return -1;
	}
	const json_t *req = json_object_get(r, "request");
	const json_t *resp = json_object_get(r, "response");
	const json_t *req_headers = json_object_get(req, "headers");
	const json_t *resp_headers = json_object_get(resp, "headers");
	struct flow_raw raw = {
		.type = str(r, "type"),
		.id = str(r, "id"),
		.peer = str(r, "peer"),
		.client = str(r, "client"),
		.server = str(r, "server"),
		.conn = str(r, "conn"),
		.start = str(r, "start"),
		.end = str(r, "end"),
		.end_reason = str(r, "end_reason"),
		.error = str(r, "error"),
		.tls_error = str(r, "tls_error"),
		.url = str(r, "url"),
		.method = str(r, "method"),
		.http_version = str(r, "http_version"),
		.proto = str(r, "proto"),
		.sni = str(r, "sni"),
		.name = str(r, "name"),
		.transport = str(r, "transport"),
		.via = str(r, "via"),
		.user = str(r, "user"),
		.replay_of = str(r, "replay_of"),
		.bytes_up = num(r, "bytes_up"),
		.bytes_down = num(r, "bytes_down"),
		.status = num(resp, "status"),
		.has_response = json_is_object(resp),
		.websocket = json_is_true(json_object_get(r, "websocket")),
		.passthrough = json_is_string(json_object_get(r, "passthrough")),
		.req_ctype = flow_header(req_headers, "content-type"),
		.resp_ctype = flow_header(resp_headers, "content-type"),
	};
	if (flow_fields_derive(&raw, f) < 0)
		return -1;
	if (strcmp(f->type, "http") == 0) {
		f->req_headers = req_headers;
		f->req_body = json_object_get(req, "body");
		if (f->has_response) {
			f->resp_headers = resp_headers;
			f->resp_body = json_object_get(resp, "body");
		}
	}
	return 0;
}

json_t *flow_time_json(int64_t us)
{
	if (us <= 0)
		return json_null();
	time_t secs = (time_t)(us / 1000000);
	struct tm tm;
	if (!gmtime_r(&secs, &tm))
		return json_null();
	char t[40];
	size_t n = strftime(t, sizeof(t), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(t + n, sizeof(t) - n, ".%06dZ", (int)(us % 1000000));
	return json_string(t);
}

static json_t *str_or_null(const char *s)
{
	return s ? json_string(s) : json_null();
}

json_t *flow_summary_json(const struct flow_fields *f)
{
	json_t *o = json_object();
	json_object_set_new(o, "id", str_or_null(f->id));
	json_object_set_new(o, "type", str_or_null(f->type));
	json_object_set_new(o, "start", flow_time_json(f->start_us));
	json_object_set_new(o, "duration_ms",
			    f->start_us && f->end_us >= f->start_us
				    ? json_real((double)(f->end_us - f->start_us) / 1000.0)
				    : json_null());
	json_object_set_new(o, "peer", str_or_null(f->peer));
	json_object_set_new(o, "method", str_or_null(f->method));
	json_object_set_new(o, "status", f->status ? json_integer(f->status) : json_null());
	json_object_set_new(o, "host", json_string(f->host));
	json_object_set_new(o, "url", str_or_null(f->url));
	json_object_set_new(o, "bytes_up", json_integer(f->bytes_up));
	json_object_set_new(o, "bytes_down", json_integer(f->bytes_down));
	json_object_set_new(o, "size", json_integer(f->bytes_up + f->bytes_down));
	json_object_set_new(o, "proto", str_or_null(f->proto));
	json_object_set_new(o, "passthrough", json_boolean(f->passthrough));
	json_object_set_new(o, "tls_rejected", json_boolean(f->tls_rejected));
	json_object_set_new(o, "websocket", json_boolean(f->websocket));
	json_object_set_new(o, "end_reason", str_or_null(f->end_reason));
	json_object_set_new(o, "error", str_or_null(f->error));
	json_object_set_new(o, "via", str_or_null(f->via));
	json_object_set_new(o, "user", str_or_null(f->user));
	json_object_set_new(o, "replay_of", str_or_null(f->replay_of));
	return o;
}
