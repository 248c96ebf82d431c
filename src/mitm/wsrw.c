/* The active WebSocket layer (wsrw.h).
 *
 * A direction's way, frame by frame (RFC 6455 5.2):
 *
 *    0                   1                   2                   3
 *   +-+-+-+-+-------+-+-------------+-------------------------------+
 *   |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
 *   |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
 *   |N|V|V|V|       |S|             |   (if payload len==126/127)   |
 *   +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
 *   |     Masking-key, if MASK set to 1                             |
 *   +---------------------------------------------------------------+
 *
 * header → a control frame: kept whole (at most 125 bytes), then on at
 *          once;
 *        → a data frame of a message within the cap: its bytes kept as
 *          they came (raw) and unmasked (pl); at FIN the rules see pl;
 *        → a data frame of a message over the cap: on as it comes. */
#include "mitm/wsrw.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "mitm/httpflow.h"

enum {
	OP_CONT = 0x0,
	OP_TEXT = 0x1,
	OP_BINARY = 0x2,
	OP_CLOSE = 0x8,
	OP_PING = 0x9,
	OP_PONG = 0xA,
};

#define WS_MAX_HEADER 14 /* 2 + 8 (64-bit length) + 4 (mask) */
#define WS_MAX_CONTROL 125

struct wsdir {
	enum held_phase phase; /* HELD_REQUEST: from the client */
	bool active;           /* a rule acts on it: parsed */
	bool bypass;           /* not parsed (inactive, or after a protocol error) */
	/* the frame being read */
	uint8_t hdr[WS_MAX_HEADER];
	size_t hlen, hneed;
	bool in_payload;
	uint64_t left; /* payload bytes still to come */
	uint8_t op;
	bool fin, masked;
	uint8_t key[4];
	uint64_t koff;
	bool ctrl;   /* a control frame: in cbuf */
	bool stream; /* on as it comes */
	uint8_t cbuf[WS_MAX_HEADER + WS_MAX_CONTROL];
	size_t clen;
	/* the data message being kept */
	bool msg;
	bool over; /* past the cap: streamed */
	uint8_t mop;
	uint8_t *raw; /* its frames as they came */
	size_t rawlen;
	uint8_t *pl; /* its payload, unmasked */
	size_t pllen;
	/* a held message (pl, edited by the rules; raw as it came) */
	bool held;
	bool edited; /* pl differs from what came */
	const struct rule *held_rule;
	uint8_t *back; /* this side's bytes behind it */
	size_t backlen;
};

struct wsrw {
	struct wsrw_config cfg;
	struct rules_ws ws;
	char *url, *peer;
	struct wsdir d[2]; /* [0] from the client, [1] from the server */
	bool dead;
	json_t *note;
	size_t nnotes;
	uint64_t more;
};

/* ---- small helpers ---------------------------------------------------------- */

static void out(struct wsrw *w, struct wsdir *d, const uint8_t *p, size_t n)
{
	if (!n || w->dead)
		return;
	if (d->phase == HELD_REQUEST)
		w->cfg.ops.to_upstream(w->cfg.ctx, p, n);
	else
		w->cfg.ops.to_client(w->cfg.ctx, p, n);
}

static int append(uint8_t **buf, size_t *len, const uint8_t *p, size_t n)
{
	if (!n)
		return 0;
	uint8_t *nb = realloc(*buf, *len + n);
	if (!nb)
		return -ENOMEM;
	memcpy(nb + *len, p, n);
	*buf = nb;
	*len += n;
	return 0;
}

static const char *dir_name(const struct wsdir *d)
{
	return d->phase == HELD_REQUEST ? "request" : "response";
}

/* Whether s is UTF-8 (RFC 3629: no overlongs, no surrogates, <= U+10FFFF),
 * as a text message must be (RFC 6455 8.1). */
static bool utf8_ok(const uint8_t *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		uint8_t c = s[i];
		size_t k;
		uint32_t cp;
		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xE0) == 0xC0) {
			k = 1;
			cp = c & 0x1F;
		} else if ((c & 0xF0) == 0xE0) {
			k = 2;
			cp = c & 0x0F;
		} else if ((c & 0xF8) == 0xF0) {
			k = 3;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (n - i <= k)
			return false;
		for (size_t j = 1; j <= k; j++) {
			if ((s[i + j] & 0xC0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + j] & 0x3F);
		}
		if ((k == 1 && cp < 0x80) || (k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) ||
		    cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
			return false;
		i += k + 1;
	}
	return true;
}

/* ---- the note ---------------------------------------------------------------- */

static void note_matched(struct wsrw *w, const struct rule *r)
{
	json_t *m = json_object_get(w->note, "matched");
	if (!m) {
		m = json_array();
		json_object_set_new(w->note, "matched", m);
	}
	size_t i;
	json_t *v;
	json_array_foreach(m, i, v) if (strcmp(json_string_value(v), r->id) == 0) return;
	json_array_append_new(m, json_string(r->id));
}

/* One entry: what happened to a message of `d` (`sent`: the text that went
 * on instead, NULL: none). */
static void note_msg(struct wsrw *w, const struct wsdir *d, const struct rule *r,
		     const char *action, size_t size, const uint8_t *sent, size_t sentlen,
		     const char *why)
{
	if (w->nnotes >= WSRW_MAX_NOTES) {
		w->more++;
		return;
	}
	json_t *e = json_pack("{s:s,s:s,s:I}", "dir", dir_name(d), "action", action, "size",
			      (json_int_t)size);
	if (!e)
		return;
	if (r)
		json_object_set_new(e, "rule", json_string(r->id));
	if (sent) {
		size_t pv = sentlen < WSRW_NOTE_PREVIEW ? sentlen : WSRW_NOTE_PREVIEW;
		json_object_set_new(e, "sent", http_body_json(sent, pv, sentlen, pv < sentlen));
	}
	if (why)
		json_object_set_new(e, "why", json_string(why));
	json_t *a = json_object_get(w->note, "messages");
	if (!a) {
		a = json_array();
		json_object_set_new(w->note, "messages", a);
	}
	json_array_append_new(a, e);
	w->nnotes++;
}

json_t *wsrw_take_note(struct wsrw *w)
{
	if (w->more)
		json_object_set_new(w->note, "more", json_integer((json_int_t)w->more));
	if (json_object_size(w->note) == 0)
		return NULL;
	json_t *n = w->note;
	w->note = json_object();
	w->nnotes = 0;
	w->more = 0;
	return n;
}

/* ---- frames out ---------------------------------------------------------------- */

/* One final frame of `op` carrying p: masked with a fresh key from the
 * client (RFC 6455 5.3), unmasked from the server. */
static void send_frame(struct wsrw *w, struct wsdir *d, uint8_t op, const uint8_t *p, size_t n)
{
	bool mask = d->phase == HELD_REQUEST;
	uint8_t *f = malloc(n + WS_MAX_HEADER);
	if (!f)
		return;
	size_t o = 0;
	f[o++] = (uint8_t)(0x80 | op);
	uint8_t mb = mask ? 0x80 : 0;
	if (n < 126) {
		f[o++] = (uint8_t)(mb | n);
	} else if (n <= 0xFFFF) {
		f[o++] = mb | 126;
		f[o++] = (uint8_t)(n >> 8);
		f[o++] = (uint8_t)n;
	} else {
		f[o++] = mb | 127;
		for (int i = 7; i >= 0; i--)
			f[o++] = (uint8_t)((uint64_t)n >> (8 * i));
	}
	uint8_t key[4] = { 0 };
	if (mask) {
		if (w->cfg.ops.random)
			w->cfg.ops.random(w->cfg.ctx, key);
		else if (RAND_bytes(key, sizeof(key)) != 1)
			memset(key, 0x5a, sizeof(key)); /* never: the pool is seeded */
		memcpy(f + o, key, 4);
		o += 4;
	}
	for (size_t i = 0; i < n; i++)
		f[o + i] = mask ? (uint8_t)(p[i] ^ key[i & 3]) : p[i];
	out(w, d, f, o + n);
	free(f);
}

static void msg_reset(struct wsdir *d)
{
	free(d->raw);
	free(d->pl);
	d->raw = d->pl = NULL;
	d->rawlen = d->pllen = 0;
	d->msg = d->over = d->edited = false;
	d->held_rule = NULL;
}

/* The kept message goes on: as it came, or edited (pl) as one frame. */
static void msg_send(struct wsrw *w, struct wsdir *d)
{
	if (d->edited)
		send_frame(w, d, d->mop, d->pl, d->pllen);
	else
		out(w, d, d->raw, d->rawlen);
	msg_reset(d);
}

/* ---- breaking off --------------------------------------------------------------- */

/* What this direction kept goes on as it came, and from now on every byte
 * as it is. */
static void go_bypass(struct wsrw *w, struct wsdir *d, const char *why)
{
	if (d->bypass)
		return;
	if (why)
		note_msg(w, d, NULL, "stopped", 0, NULL, 0, why);
	out(w, d, d->raw, d->rawlen);
	if (d->ctrl && d->in_payload)
		out(w, d, d->cbuf, d->clen);
	else if (!d->in_payload)
		out(w, d, d->hdr, d->hlen);
	msg_reset(d);
	d->hlen = d->clen = 0;
	d->bypass = true;
}

/* ---- messages ---------------------------------------------------------------- */

static json_t *hold_info(struct wsrw *w, struct wsdir *d, const struct rule *r)
{
	size_t pv = d->pllen < HELD_PREVIEW ? d->pllen : HELD_PREVIEW;
	json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:s,s:o}", "phase", dir_name(d), "proto",
			      "websocket", "url", w->url ? w->url : "", "rule", r->id, "opcode",
			      d->mop == OP_TEXT ? "text" : "binary", "body",
			      http_body_json(d->pl, pv, d->pllen, pv < d->pllen));
	if (o && w->peer)
		json_object_set_new(o, "peer", json_string(w->peer));
	return o;
}

/* A whole message: the rules, then on, dropped or held. */
static void msg_done(struct wsrw *w, struct wsdir *d)
{
	bool text = d->mop == OP_TEXT;
	struct rules_ws_plan plan;
	enum rule_dir rd = d->phase == HELD_REQUEST ? RULE_REQUEST : RULE_RESPONSE;
	if (!rules_ws_plan_for(&w->ws, rd, text, d->pl, d->pllen, &plan)) {
		msg_send(w, d);
		return;
	}
	size_t size = d->pllen;
	for (size_t i = 0; i < plan.nmatched; i++)
		note_matched(w, plan.matched[i]);
	for (size_t i = 0; i < plan.nedits; i++) {
		uint8_t *nb = NULL;
		size_t nl = 0;
		int rc = rules_body_replace(plan.edits[i], d->pl, d->pllen, w->cfg.msg_cap, &nb,
					    &nl);
		const char *why = rc == -E2BIG ? "ws_replace skipped: the result is over the cap"
				  : rc < 0     ? "ws_replace skipped: the regex failed"
				  : !utf8_ok(nb, nl) ? "ws_replace skipped: the result is not UTF-8"
						     : NULL;
		if (why) {
			note_msg(w, d, NULL, "skipped", size, NULL, 0, why);
			free(nb);
			continue;
		}
		if (nl == d->pllen && (nl == 0 || memcmp(nb, d->pl, nl) == 0)) {
			free(nb);
			continue;
		}
		free(d->pl);
		d->pl = nb;
		d->pllen = nl;
		d->edited = true;
	}
	const struct rule_action *t = plan.terminal;
	const struct rule *edit_rule = plan.nedits ? plan.matched[0] : NULL;
	for (size_t i = 0; i < plan.nmatched && plan.nedits; i++)
		for (size_t k = 0; k < plan.matched[i]->nactions; k++)
			if (&plan.matched[i]->actions[k] == plan.edits[0])
				edit_rule = plan.matched[i];
	if (t && t->kind == RA_WS_DROP) {
		note_msg(w, d, plan.terminal_rule, "ws_drop", size, NULL, 0, NULL);
		msg_reset(d);
		return;
	}
	if (t && t->kind == RA_WS_BREAKPOINT && w->cfg.ops.hold) {
		json_t *info = hold_info(w, d, plan.terminal_rule);
		if (info && w->cfg.ops.hold(w->cfg.ctx, d->phase, info) == 0) {
			d->held = true;
			d->held_rule = plan.terminal_rule;
			return;
		}
		note_msg(w, d, plan.terminal_rule, "ws_breakpoint", size, NULL, 0,
			 "skipped: not held (too many held)");
	}
	if (d->edited)
		note_msg(w, d, edit_rule, "ws_replace", size, d->pl, d->pllen, NULL);
	msg_send(w, d);
}

/* ---- frames in ------------------------------------------------------------------ */

/* The header is whole: check it and choose the frame's way. -1: the
 * direction broke off. */
static int frame_begin(struct wsrw *w, struct wsdir *d)
{
	const uint8_t *h = d->hdr;
	d->fin = (h[0] & 0x80) != 0;
	d->op = h[0] & 0x0F;
	d->masked = (h[1] & 0x80) != 0;
	uint64_t len = h[1] & 0x7F;
	size_t o = 2;
	if (len == 126) {
		len = ((uint64_t)h[2] << 8) | h[3];
		o = 4;
	} else if (len == 127) {
		len = 0;
		for (int i = 0; i < 8; i++)
			len = (len << 8) | h[2 + i];
		o = 10;
	}
	if (d->masked)
		memcpy(d->key, h + o, 4);
	d->left = len;
	d->koff = 0;
	d->ctrl = (d->op & 0x8) != 0;
	d->stream = false;
	const char *why = NULL;
	if (h[0] & 0x70)
		why = "RSV bits set (no extension is negotiated)";
	else if (d->op != OP_CONT && d->op != OP_TEXT && d->op != OP_BINARY && d->op != OP_CLOSE &&
		 d->op != OP_PING && d->op != OP_PONG)
		why = "a reserved opcode";
	else if (len >> 63)
		why = "a 64-bit length with its most significant bit set";
	else if (d->ctrl && (!d->fin || len > WS_MAX_CONTROL))
		why = "a fragmented or long control frame";
	else if (d->masked != (d->phase == HELD_REQUEST))
		why = d->masked ? "a masked server frame" : "an unmasked client frame";
	else if (d->op == OP_CONT && !d->msg)
		why = "a continuation without a message";
	else if ((d->op == OP_TEXT || d->op == OP_BINARY) && d->msg)
		why = "a new message inside a fragmented one";
	if (why) {
		go_bypass(w, d, why);
		return -1;
	}
	if (d->ctrl) {
		memcpy(d->cbuf, d->hdr, d->hlen);
		d->clen = d->hlen;
		return 0;
	}
	if (d->op != OP_CONT) {
		d->msg = true;
		d->mop = d->op;
	}
	/* The cap bounds the payload kept and, against a flood of tiny
	 * fragments, the frames kept with it (twice the cap). */
	size_t cap = w->cfg.msg_cap;
	if (!d->over && (len > cap - d->pllen || d->rawlen + d->hlen > 2 * cap - len)) {
		/* Past the cap: on as it came from here. */
		char why2[96];
		snprintf(why2, sizeof(why2), "passed unchanged: larger than %zu bytes",
			 w->cfg.msg_cap);
		note_msg(w, d, NULL, "over_cap", (size_t)(d->pllen + len), NULL, 0, why2);
		out(w, d, d->raw, d->rawlen);
		free(d->raw);
		free(d->pl);
		d->raw = d->pl = NULL;
		d->rawlen = d->pllen = 0;
		d->over = true;
	}
	if (d->over) {
		d->stream = true;
		out(w, d, d->hdr, d->hlen);
		return 0;
	}
	if (append(&d->raw, &d->rawlen, d->hdr, d->hlen) < 0) {
		go_bypass(w, d, "out of memory");
		return -1;
	}
	return 0;
}

/* The frame's payload is all in. */
static void frame_end(struct wsrw *w, struct wsdir *d)
{
	d->in_payload = false;
	d->hlen = 0;
	if (d->ctrl) {
		if (d->op == OP_CLOSE && d->msg && !d->over) {
			/* The message can no longer end: what came of it goes first. */
			out(w, d, d->raw, d->rawlen);
			msg_reset(d);
		}
		out(w, d, d->cbuf, d->clen);
		d->clen = 0;
		return;
	}
	if (!d->fin)
		return;
	if (d->over) {
		msg_reset(d);
		return;
	}
	msg_done(w, d);
}

static size_t header_need(const uint8_t *h, size_t hlen)
{
	if (hlen < 2)
		return 2;
	size_t n = 2 + ((h[1] & 0x80) ? 4 : 0);
	uint8_t l = h[1] & 0x7F;
	return n + (l == 126 ? 2 : l == 127 ? 8 : 0);
}

static void release_dir(struct wsrw *w, struct wsdir *d, const struct held_edits *e,
			const char *why);

static void feed(struct wsrw *w, struct wsdir *d, const uint8_t *p, size_t n)
{
	while (n > 0 && !w->dead) {
		if (d->bypass) {
			out(w, d, p, n);
			return;
		}
		if (d->held) {
			if (d->backlen + n <= WSRW_MAX_HELD &&
			    append(&d->back, &d->backlen, p, n) == 0)
				return;
			if (w->cfg.ops.unhold)
				w->cfg.ops.unhold(w->cfg.ctx, d->phase, "bytes over the bound");
			release_dir(w, d, NULL, "released: bytes over the bound");
			continue;
		}
		if (!d->in_payload) {
			size_t need;
			while (n > 0 && d->hlen < (need = header_need(d->hdr, d->hlen))) {
				d->hdr[d->hlen++] = *p++;
				n--;
			}
			if (d->hlen < header_need(d->hdr, d->hlen))
				return;
			if (frame_begin(w, d) < 0)
				continue; /* bypass: the rest as it is */
			d->in_payload = true;
			if (d->left == 0)
				frame_end(w, d);
			continue;
		}
		size_t k = d->left < n ? (size_t)d->left : n;
		if (d->ctrl) {
			memcpy(d->cbuf + d->clen, p, k);
			d->clen += k;
		} else if (d->stream) {
			out(w, d, p, k);
		} else {
			size_t at = d->pllen;
			if (append(&d->raw, &d->rawlen, p, k) < 0 ||
			    append(&d->pl, &d->pllen, p, k) < 0) {
				go_bypass(w, d, "out of memory");
				continue;
			}
			if (d->masked)
				for (size_t i = 0; i < k; i++)
					d->pl[at + i] ^= d->key[(d->koff + i) & 3];
		}
		d->koff += k;
		d->left -= k;
		p += k;
		n -= k;
		if (d->left == 0)
			frame_end(w, d);
	}
}

void wsrw_client(struct wsrw *w, const uint8_t *p, size_t n)
{
	if (!w->dead)
		feed(w, &w->d[0], p, n);
}

void wsrw_server(struct wsrw *w, const uint8_t *p, size_t n)
{
	if (!w->dead)
		feed(w, &w->d[1], p, n);
}

/* ---- held messages -------------------------------------------------------------- */

static void release_dir(struct wsrw *w, struct wsdir *d, const struct held_edits *e,
			const char *why)
{
	if (!d->held)
		return;
	d->held = false;
	size_t size = d->pllen;
	if (e && e->has_body && d->mop == OP_TEXT && !utf8_ok(e->body, e->body_len)) {
		why = "edit skipped: a text message's new body is not UTF-8";
		e = NULL;
	}
	if (e && e->has_body) {
		free(d->pl);
		d->pl = NULL;
		d->pllen = 0;
		if (e->body_len && append(&d->pl, &d->pllen, e->body, e->body_len) < 0) {
			d->edited = false; /* no memory: as it came */
		} else {
			d->edited = true;
		}
	}
	note_msg(w, d, d->held_rule, "ws_breakpoint", size, d->edited ? d->pl : NULL,
		 d->edited ? d->pllen : 0,
		 why                ? why
		 : e && e->has_body ? "edited"
				    : "released");
	msg_send(w, d);
	uint8_t *b = d->back;
	size_t bn = d->backlen;
	d->back = NULL;
	d->backlen = 0;
	feed(w, d, b, bn);
	free(b);
}

void wsrw_release(struct wsrw *w, enum held_phase phase, const struct held_edits *e)
{
	if (w->dead)
		return;
	release_dir(w, &w->d[phase == HELD_REQUEST ? 0 : 1], e, NULL);
}

void wsrw_kill(struct wsrw *w, enum held_phase phase)
{
	struct wsdir *d = &w->d[phase == HELD_REQUEST ? 0 : 1];
	if (d->held)
		note_msg(w, d, d->held_rule, "ws_breakpoint", d->pllen, NULL, 0, "killed");
	d->held = false;
	w->dead = true;
}

bool wsrw_holding(const struct wsrw *w, enum held_phase phase)
{
	return w->d[phase == HELD_REQUEST ? 0 : 1].held;
}

size_t wsrw_backlog(const struct wsrw *w)
{
	return w->d[0].backlen;
}

void wsrw_eof(struct wsrw *w, enum held_phase side)
{
	struct wsdir *d = &w->d[side == HELD_REQUEST ? 0 : 1];
	if (w->dead)
		return;
	/* The bytes behind a held message may hold the next one: each goes. */
	while (d->held && !w->dead) {
		if (w->cfg.ops.unhold)
			w->cfg.ops.unhold(w->cfg.ctx, d->phase, "the side closed");
		release_dir(w, d, NULL, "released: the side closed");
	}
	go_bypass(w, d, NULL);
}

/* ---- life ------------------------------------------------------------------------ */

struct wsrw *wsrw_new(const struct wsrw_config *cfg)
{
	struct wsrw *w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	w->cfg = *cfg;
	if (!w->cfg.msg_cap)
		w->cfg.msg_cap = WSRW_DEFAULT_MSG_CAP;
	w->ws = *cfg->ws;
	w->cfg.ws = &w->ws;
	w->cfg.rules = ruleset_ref(cfg->rules);
	w->url = cfg->url ? strdup(cfg->url) : NULL;
	w->peer = cfg->peer ? strdup(cfg->peer) : NULL;
	w->note = json_object();
	w->d[0].phase = HELD_REQUEST;
	w->d[1].phase = HELD_RESPONSE;
	for (int i = 0; i < 2; i++) {
		enum rule_dir rd = i == 0 ? RULE_REQUEST : RULE_RESPONSE;
		for (size_t k = 0; k < w->ws.n; k++)
			w->d[i].active |= (w->ws.v[k]->ws_dir & rd) != 0;
		w->d[i].bypass = !w->d[i].active;
	}
	if (!w->note || (cfg->url && !w->url) || (cfg->peer && !w->peer)) {
		wsrw_free(w);
		return NULL;
	}
	return w;
}

void wsrw_free(struct wsrw *w)
{
	if (!w)
		return;
	for (int i = 0; i < 2; i++) {
		msg_reset(&w->d[i]);
		free(w->d[i].back);
	}
	json_decref(w->note);
	free(w->url);
	free(w->peer);
	ruleset_unref(w->cfg.rules);
	free(w);
}
