/* Outgoing UDP datagrams collected during one loop iteration and sent with
 * one sendmmsg(2) per socket when the loop is about to sleep or the batch
 * is full: one system call for a burst instead of one per packet. */
#ifndef WGMITM_UDPBATCH_H
#define WGMITM_UDPBATCH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define UDPBATCH_LEN 64
#define UDPBATCH_SLOT 2048 /* larger datagrams flush the batch and go out alone */

struct udpbatch {
	int fd;
	unsigned n;
	uint64_t sent, errors, syscalls;
	struct sockaddr_storage to[UDPBATCH_LEN];
	socklen_t tolen[UDPBATCH_LEN];
	size_t len[UDPBATCH_LEN];
	uint8_t buf[UDPBATCH_LEN][UDPBATCH_SLOT];
};

void udpbatch_init(struct udpbatch *b, int fd);
/* Copies the datagram into the batch (flushing first when full). */
void udpbatch_add(struct udpbatch *b, const struct sockaddr *to, socklen_t tolen,
		  const uint8_t *data, size_t len);
/* Sends what is queued. Datagrams the socket refuses (EAGAIN: its buffer is
 * full) are dropped and counted, as a full NIC queue would drop them. */
void udpbatch_flush(struct udpbatch *b);

#endif
