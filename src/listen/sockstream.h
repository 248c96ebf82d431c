/* A stream (common/stream.h) over an accepted TCP socket.
 *
 * Matches the netstack's streams where the relay can tell: write takes up
 * to SOCKSTREAM_SNDBUF queued bytes (what the kernel does not take at once
 * is copied and queued), sent reports bytes leaving that queue, pause stops
 * reading the socket (the kernel's window then closes), shutdown sends a
 * FIN after the queue, closed(0) follows an orderly close both ways.
 *
 * Bytes read before the stream was handed on (a proxy's request head is
 * read by the listener) can be given back with sockstream_unread: the next
 * owner gets them first. Loop thread only. */
#ifndef WGMITM_LISTEN_SOCKSTREAM_H
#define WGMITM_LISTEN_SOCKSTREAM_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "common/stream.h"

#define SOCKSTREAM_SNDBUF (1u << 20)

struct sockstream;

/* A stream for a connection waiting on `server`: uv_accept into it. The
 * stream starts paused (resume starts reading). NULL with a libuv error in
 * *err. */
struct sockstream *sockstream_accept(uv_loop_t *loop, uv_stream_t *server, int *err)
	__attribute__((warn_unused_result));

struct stream *sockstream_stream(struct sockstream *ss);

/* Bytes to deliver before anything read from the socket (copied; at most
 * one call's worth is kept: a later call appends). 0 or -ENOMEM. */
int sockstream_unread(struct sockstream *ss, const uint8_t *data, size_t len);

/* fn(ctx) runs when the stream's memory is released (its socket closed),
 * whoever owned it last: a listener counts its connections with it. */
void sockstream_on_free(struct sockstream *ss, void (*fn)(void *ctx), void *ctx);

/* The addresses of the connection: 0 or a libuv error. */
int sockstream_peer(const struct sockstream *ss, struct sockaddr_storage *out);
int sockstream_local(const struct sockstream *ss, struct sockaddr_storage *out);

#endif
