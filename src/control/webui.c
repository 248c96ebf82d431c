/* The web UI's static files and login page (webui.h). */
#include "control/webui.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/webui_assets.h"

#define WEBUI_PREFIX "/ui/"
#define WEBUI_LOGIN_MARK "<!--message-->"

const struct webui_asset *webui_find(const char *name)
{
	size_t lo = 0, hi = webui_nassets;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(name, webui_assets[mid].name);
		if (c == 0)
			return &webui_assets[mid];
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

const char *webui_content_type(const char *name)
{
	static const struct {
		const char *ext, *type;
	} types[] = {
		{ ".html", "text/html; charset=utf-8" },
		{ ".js", "text/javascript; charset=utf-8" },
		{ ".css", "text/css; charset=utf-8" },
		{ ".svg", "image/svg+xml" },
		{ ".png", "image/png" },
		{ ".ico", "image/x-icon" },
		{ ".json", "application/json" },
		{ ".txt", "text/plain; charset=utf-8" },
	};
	const char *dot = strrchr(name, '.');
	for (size_t i = 0; dot && i < sizeof(types) / sizeof(types[0]); i++)
		if (strcmp(dot, types[i].ext) == 0)
			return types[i].type;
	return "application/octet-stream";
}

static bool is_get(const char *method)
{
	return strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
}

bool webui_is_page(const char *method, const char *path)
{
	if (!is_get(method))
		return false;
	return strcmp(path, "/") == 0 || strncmp(path, WEBUI_PREFIX, strlen(WEBUI_PREFIX)) == 0;
}

bool webui_is_public(const char *method, const char *path)
{
	return is_get(method) && strcmp(path, WEBUI_PREFIX "login.css") == 0;
}

void webui_csp(const char *host, char *out, size_t len)
{
	/* The WebSocket by name: older browsers do not count ws: as 'self'. */
	snprintf(out, len,
		 "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' "
		 "blob: data:; connect-src 'self'%s%s; object-src 'none'; base-uri 'none'; "
		 "form-action 'self'; frame-ancestors 'none'",
		 host ? " ws://" : "", host ? host : "");
}

static void ui_headers(struct httpd_req *req, struct httpd_resp *resp)
{
	char csp[512];
	webui_csp(httpd_req_header(req, "Host"), csp, sizeof(csp));
	httpd_resp_header(resp, "Content-Security-Policy", csp);
	httpd_resp_header(resp, "Cross-Origin-Opener-Policy", "same-origin");
	httpd_resp_header(resp, "Cross-Origin-Resource-Policy", "same-origin");
}

static void serve(struct httpd_req *req, struct httpd_resp *resp, const char *name)
{
	const struct webui_asset *f = webui_find(name);
	if (!f || strcmp(name, "login.html") == 0) {
		httpd_reply_error(resp, 404, "the web UI has no file %s", name);
		return;
	}
	ui_headers(req, resp);
	httpd_reply(resp, 200, webui_content_type(name), f->data, f->len);
}

static void h_root(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	(void)arg;
	serve(req, resp, "index.html");
}

static void h_file(struct httpd_req *req, struct httpd_resp *resp, void *arg)
{
	(void)arg;
	serve(req, resp, httpd_req_param(req, "*"));
}

void webui_reply_login(struct httpd_req *req, struct httpd_resp *resp, int status, bool wrong)
{
	const struct webui_asset *f = webui_find("login.html");
	if (!f) {
		httpd_reply_error(resp, status, "open the link wgmitm run prints");
		return;
	}
	static const char note[] = "<p class=\"wrong\" role=\"alert\">That token is not the "
				   "right one.</p>";
	const char *text = (const char *)f->data;
	const char *mark = strstr(text, WEBUI_LOGIN_MARK);
	ui_headers(req, resp);
	if (!wrong || !mark) {
		httpd_reply(resp, status, "text/html; charset=utf-8", f->data, f->len);
		return;
	}
	size_t head = (size_t)(mark - text), tail = f->len - head - strlen(WEBUI_LOGIN_MARK);
	size_t n = head + strlen(note) + tail;
	char *page = malloc(n);
	if (!page) {
		httpd_reply_error(resp, 500, "out of memory");
		return;
	}
	memcpy(page, text, head);
	memcpy(page + head, note, strlen(note));
	memcpy(page + head + strlen(note), mark + strlen(WEBUI_LOGIN_MARK), tail);
	httpd_reply(resp, status, "text/html; charset=utf-8", page, n);
	free(page);
}

int webui_attach(struct httpd *s)
{
	int rc = httpd_route(s, "GET", "/", h_root, NULL);
	if (rc == 0)
		rc = httpd_route(s, "GET", WEBUI_PREFIX "*", h_file, NULL);
	return rc;
}
