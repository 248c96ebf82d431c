/* The blocking control API client. */
#include "control/apiclient.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <llhttp.h>

#include "common/strbuf.h"

int apiclient_open(struct apiclient *c, const char *home, char *err, size_t errlen)
{
	memset(c, 0, sizeof(*c));
	c->timeout_ms = 30000;
	char path[4200];
	snprintf(path, sizeof(path), "%s/%s", home, APICLIENT_INFO_FILE);
	json_error_t je;
	json_t *info = json_load_file(path, 0, &je);
	if (!info) {
		snprintf(err, errlen,
			 "%s: %s: is `wgmitm run` running (with its API on; see --api)?", path,
			 je.text);
		return -1;
	}
	const char *host = json_string_value(json_object_get(info, "address"));
	json_int_t port = json_integer_value(json_object_get(info, "port"));
	if (!host || port <= 0 || port > 65535 || strlen(host) >= sizeof(c->host)) {
		snprintf(err, errlen, "%s: expected \"address\" and \"port\"", path);
		json_decref(info);
		return -1;
	}
	snprintf(c->host, sizeof(c->host), "%s", host);
	c->port = (unsigned)port;
	json_decref(info);

	snprintf(path, sizeof(path), "%s/%s", home, APICLIENT_TOKEN_FILE);
	FILE *f = fopen(path, "r");
	if (!f || !fgets(c->token, sizeof(c->token), f)) {
		snprintf(err, errlen, "%s: %s", path, f ? "empty" : strerror(errno));
		if (f)
			fclose(f);
		return -1;
	}
	fclose(f);
	c->token[strcspn(c->token, "\r\n")] = '\0';
	return 0;
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int fail(struct apiclient_reply *out, const char *fmt, const char *what)
{
	if (snprintf(out->error, sizeof(out->error), fmt, what) >= (int)sizeof(out->error))
		out->error[sizeof(out->error) - 1] = '\0'; /* cut */
	free(out->body);
	out->body = NULL;
	out->len = 0;
	out->status = 0;
	return -1;
}

/* Waits for `events` on fd until `deadline`. */
static int wait_fd(int fd, short events, uint64_t deadline)
{
	for (;;) {
		uint64_t now = now_ms();
		if (now >= deadline)
			return -ETIMEDOUT;
		struct pollfd p = { .fd = fd, .events = events };
		int n = poll(&p, 1, (int)(deadline - now));
		if (n > 0)
			return 0;
		if (n < 0 && errno != EINTR)
			return -errno;
	}
}

struct parse {
	struct apiclient_reply *out;
	struct strbuf body; /* at most APICLIENT_MAX_BODY */
	bool in_ctype, done;
};

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
	struct parse *ps = p->data;
	ps->in_ctype = len == 12 && strncasecmp(at, "content-type", 12) == 0;
	return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
	struct parse *ps = p->data;
	if (ps->in_ctype) {
		size_t n = strlen(ps->out->ctype);
		if (n + len < sizeof(ps->out->ctype)) {
			memcpy(ps->out->ctype + n, at, len);
			ps->out->ctype[n + len] = '\0';
		}
	}
	return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
	struct parse *ps = p->data;
	return strbuf_append(&ps->body, at, len) == 0 ? 0 : -1;
}

static int on_complete(llhttp_t *p)
{
	struct parse *ps = p->data;
	ps->done = true;
	ps->out->status = p->status_code;
	return HPE_PAUSED;
}

int apiclient_request(const struct apiclient *c, const char *method, const char *target,
		      const json_t *body, struct apiclient_reply *out)
{
	memset(out, 0, sizeof(*out));
	uint64_t deadline = now_ms() + c->timeout_ms;
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	socklen_t sl;
	struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, c->host, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons((uint16_t)c->port);
		sl = sizeof(*a4);
	} else if (inet_pton(AF_INET6, c->host, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((uint16_t)c->port);
		sl = sizeof(*a6);
	} else {
		return fail(out, "bad API address %s", c->host);
	}
	char *payload = body ? json_dumps(body, JSON_COMPACT) : NULL;
	size_t plen = payload ? strlen(payload) : 0;
	char head[8192 + 512];
	int hl = snprintf(head, sizeof(head),
			  "%s %s HTTP/1.1\r\nHost: %s%s%s:%u\r\nAuthorization: Bearer %s\r\n"
			  "Accept: application/json\r\nConnection: close\r\n%s"
			  "Content-Length: %zu\r\n\r\n",
			  method, target, ss.ss_family == AF_INET6 ? "[" : "", c->host,
			  ss.ss_family == AF_INET6 ? "]" : "", c->port, c->token,
			  payload ? "Content-Type: application/json\r\n" : "", plen);
	if (hl < 0 || (size_t)hl >= sizeof(head)) {
		free(payload);
		return fail(out, "request target too long%s", "");
	}
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		free(payload);
		return fail(out, "socket: %s", strerror(errno));
	}
	int rc = connect(fd, (struct sockaddr *)&ss, sl);
	if (rc < 0 && errno == EINPROGRESS) {
		int soerr = 0;
		socklen_t el = sizeof(soerr);
		rc = wait_fd(fd, POLLOUT, deadline);
		if (rc == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &el) == 0 && soerr)
			rc = -soerr;
		errno = -rc;
	}
	if (rc < 0) {
		close(fd);
		free(payload);
		return fail(out, "cannot connect to the API: %s (is `wgmitm run` running?)",
			    strerror(errno));
	}
	/* The head, then the body. */
	const char *parts[2] = { head, payload };
	size_t lens[2] = { (size_t)hl, plen };
	for (int i = 0; i < 2; i++) {
		size_t off = 0;
		while (off < lens[i]) {
			ssize_t n = send(fd, parts[i] + off, lens[i] - off, MSG_NOSIGNAL);
			if (n > 0) {
				off += (size_t)n;
				continue;
			}
			if (n < 0 && (errno == EAGAIN || errno == EINTR) &&
			    wait_fd(fd, POLLOUT, deadline) == 0)
				continue;
			close(fd);
			free(payload);
			return fail(out, "sending the request: %s",
				    n < 0 ? strerror(errno) : "closed");
		}
	}
	free(payload);

	llhttp_settings_t st;
	llhttp_settings_init(&st);
	st.on_header_field = on_header_field;
	st.on_header_value = on_header_value;
	st.on_body = on_body;
	st.on_message_complete = on_complete;
	llhttp_t parser;
	llhttp_init(&parser, HTTP_RESPONSE, &st);
	struct parse ps = { .out = out };
	strbuf_init(&ps.body, APICLIENT_MAX_BODY);
	parser.data = &ps;
	char buf[16384];
	while (!ps.done) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			if (wait_fd(fd, POLLIN, deadline) < 0) {
				close(fd);
				strbuf_free(&ps.body);
				return fail(out, "no answer from the API within %s", "the timeout");
			}
			continue;
		}
		if (n < 0) {
			close(fd);
			strbuf_free(&ps.body);
			return fail(out, "reading the answer: %s", strerror(errno));
		}
		llhttp_errno_t e =
			n == 0 ? llhttp_finish(&parser) : llhttp_execute(&parser, buf, (size_t)n);
		if (ps.done)
			break;
		if (e != HPE_OK || n == 0) {
			close(fd);
			bool too_big = ps.body.err == -E2BIG;
			strbuf_free(&ps.body);
			return fail(out, "a malformed answer from the API (%s)",
				    too_big ? "too large" : llhttp_errno_name(e));
		}
	}
	close(fd);
	out->body = (uint8_t *)strbuf_detach(&ps.body, &out->len);
	if (!out->body)
		return fail(out, "out of memory%s", "");
	return 0;
}

void apiclient_reply_free(struct apiclient_reply *r)
{
	free(r->body);
	r->body = NULL;
	r->len = 0;
}
