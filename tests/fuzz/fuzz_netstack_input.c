/* Arbitrary bytes as decrypted inner packets. lwIP asserts abort (see
 * arch/cc.h), so a reachable assert is a crash here. The first byte picks
 * how the rest is split into packets, so sequences (fragments, TCP
 * handshakes) are reachable too. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "netstack/netstack.h"

/* One netstack per input, freed at the end: state held across packets
 * (reassembly queues) is released by netstack_free, and leaks show. */
static uv_loop_t loop;
static bool loop_ready;
static struct netstack *ns;

static void sink(void *ctx, const uint8_t *pkt, size_t len)
{
    (void)ctx;
    /* Touch every byte so ASan checks the whole output buffer. */
    volatile uint8_t x = 0;
    for (size_t i = 0; i < len; i++)
        x ^= pkt[i];
    (void)x;
}

static void setup(void)
{
    if (!loop_ready) {
        uv_loop_init(&loop);
        loop_ready = true;
    }
    struct netstack_config cfg = { .mtu = 1420 };
    /* 10.77.0.1 and fd77::1 */
    cfg.addr4.s_addr = htonl(0x0a4d0001);
    cfg.addr6.s6_addr[0] = 0xfd;
    cfg.addr6.s6_addr[1] = 0x77;
    cfg.addr6.s6_addr[15] = 1;
    struct netstack_ops ops = { .output = sink };
    ns = netstack_new(&loop, &cfg, &ops, NULL);
    if (ns == NULL)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    setup();
    /* Mode byte: 0 = one packet; otherwise packets are prefixed by a
     * 2-byte length. */
    uint8_t mode = data[0];
    data++;
    size--;
    if (mode & 1) {
        netstack_input(ns, data, size);
    } else {
        while (size >= 2) {
            size_t n = (size_t)data[0] << 8 | data[1];
            data += 2;
            size -= 2;
            if (n > size)
                n = size;
            netstack_input(ns, data, n);
            data += n;
            size -= n;
        }
    }
    /* Run lwIP's timers (reassembly expiry, TCP) now and then. */
    if (mode & 2)
        uv_run(&loop, UV_RUN_NOWAIT);
    netstack_free(ns);
    ns = NULL;
    uv_run(&loop, UV_RUN_NOWAIT); /* closes the timer, frees the netstack */
    return 0;
}
