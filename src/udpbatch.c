#include "udpbatch.h"

#include <errno.h>
#include <string.h>
#include <sys/uio.h>

void udpbatch_init(struct udpbatch *b, int fd)
{
	b->fd = fd;
	b->n = 0;
	b->sent = b->errors = b->syscalls = 0;
}

void udpbatch_flush(struct udpbatch *b)
{
	struct mmsghdr msgs[UDPBATCH_LEN];
	struct iovec iov[UDPBATCH_LEN];
	unsigned done = 0;

	for (unsigned i = 0; i < b->n; i++) {
		iov[i].iov_base = b->buf[i];
		iov[i].iov_len = b->len[i];
		memset(&msgs[i], 0, sizeof(msgs[i]));
		msgs[i].msg_hdr.msg_name = &b->to[i];
		msgs[i].msg_hdr.msg_namelen = b->tolen[i];
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	while (done < b->n) {
		int rc = sendmmsg(b->fd, msgs + done, b->n - done, MSG_DONTWAIT);
		b->syscalls++;
		if (rc < 0) {
			if (errno == EINTR)
				continue;
			/* This datagram cannot go (full buffer, unreachable
			 * address): drop it and carry on with the rest. */
			b->errors++;
			done++;
			continue;
		}
		done += (unsigned)rc;
		b->sent += (unsigned)rc;
	}
	b->n = 0;
}

void udpbatch_add(struct udpbatch *b, const struct sockaddr *to, socklen_t tolen,
		  const uint8_t *data, size_t len)
{
	if (len > UDPBATCH_SLOT || tolen > sizeof(b->to[0])) {
		udpbatch_flush(b); /* keep the order */
		b->syscalls++;
		if (sendto(b->fd, data, len, MSG_DONTWAIT, to, tolen) < 0)
			b->errors++;
		else
			b->sent++;
		return;
	}
	if (b->n == UDPBATCH_LEN)
		udpbatch_flush(b);
	memcpy(b->buf[b->n], data, len);
	memcpy(&b->to[b->n], to, tolen);
	b->tolen[b->n] = tolen;
	b->len[b->n] = len;
	b->n++;
}
