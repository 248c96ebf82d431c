/* Send batches: every datagram arrives once, in order, with its bytes;
 * oversized ones bypass the batch; refused ones are counted. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "udpbatch.h"

static int bound_socket(struct sockaddr_in *addr)
{
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	assert_true(fd >= 0);
	int size = 4 << 20;
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
	memset(addr, 0, sizeof(*addr));
	addr->sin_family = AF_INET;
	addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)addr, sizeof(*addr)), 0);
	socklen_t len = sizeof(*addr);
	assert_int_equal(getsockname(fd, (struct sockaddr *)addr, &len), 0);
	return fd;
}

static void test_batch_in_order(void **ctx)
{
	(void)ctx;
	struct sockaddr_in rx_addr, tx_addr;
	int rx = bound_socket(&rx_addr), tx = bound_socket(&tx_addr);
	struct udpbatch *b = malloc(sizeof(*b));
	udpbatch_init(b, tx);
	uint8_t data[3000];
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 31);
	/* 150 datagrams: two full batches flush on their own, the rest on flush. */
	for (unsigned i = 0; i < 150; i++) {
		data[0] = (uint8_t)i;
		udpbatch_add(b, (struct sockaddr *)&rx_addr, sizeof(rx_addr), data, 100 + i);
	}
	assert_int_equal(b->sent, 128);
	assert_int_equal(b->n, 22);
	/* A datagram larger than a slot flushes the queue, then goes out alone. */
	data[0] = 150;
	udpbatch_add(b, (struct sockaddr *)&rx_addr, sizeof(rx_addr), data, sizeof(data));
	assert_int_equal(b->sent, 151);
	assert_int_equal(b->errors, 0);
	assert_true(b->syscalls <= 5);
	uint8_t got[4000];
	for (unsigned i = 0; i <= 150; i++) {
		ssize_t n = recv(rx, got, sizeof(got), MSG_DONTWAIT);
		assert_int_equal(n, i == 150 ? (ssize_t)sizeof(data) : (ssize_t)(100 + i));
		assert_int_equal(got[0], (uint8_t)i);
		assert_memory_equal(got + 1, data + 1, (size_t)n - 1);
	}
	free(b);
	close(rx);
	close(tx);
}

static void test_refused_counted(void **ctx)
{
	(void)ctx;
	struct sockaddr_in a;
	int tx = bound_socket(&a);
	struct udpbatch *b = malloc(sizeof(*b));
	udpbatch_init(b, tx);
	/* An IPv6 destination on an IPv4 socket: the kernel refuses each one. */
	struct sockaddr_in6 bad = { .sin6_family = AF_INET6,
				    .sin6_port = htons(9),
				    .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	uint8_t x[10] = { 0 };
	for (int i = 0; i < 3; i++)
		udpbatch_add(b, (struct sockaddr *)&bad, sizeof(bad), x, sizeof(x));
	udpbatch_add(b, (struct sockaddr *)&a, sizeof(a), x, sizeof(x));
	udpbatch_flush(b);
	assert_int_equal(b->errors, 3);
	assert_int_equal(b->sent, 1);
	assert_int_equal(b->n, 0);
	free(b);
	close(tx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_batch_in_order),
		cmocka_unit_test(test_refused_counted),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
