#include "wg/keypair.h"

#include <string.h>

#include "wg/crypto.h"

size_t wg_transport_padded_len(size_t len, size_t mtu)
{
	if (len >= mtu)
		return len;
	size_t padded = (len + WG_PADDING_MULTIPLE - 1) & ~(size_t)(WG_PADDING_MULTIPLE - 1);
	return padded > mtu ? mtu : padded;
}

size_t wg_transport_seal(uint8_t *out, uint32_t receiver_index, uint64_t counter,
			 const uint8_t key[WG_KEY_LEN], const uint8_t *plain, size_t len,
			 size_t padded_len)
{
	struct wg_msg_transport *m = (struct wg_msg_transport *)out;
	m->header.type = WG_MSG_TRANSPORT;
	memset(m->header.reserved, 0, sizeof(m->header.reserved));
	wg_store_le32(m->receiver_index, receiver_index);
	wg_store_le64(m->counter, counter);
	uint8_t *body = out + WG_MSG_TRANSPORT_HEADER_LEN;
	if (len)
		memcpy(body, plain, len);
	memset(body + len, 0, padded_len - len);
	wg_aead_encrypt(body, body, padded_len, NULL, 0, counter, key);
	return WG_MSG_TRANSPORT_MIN_LEN + padded_len;
}

bool wg_transport_open(uint8_t *msg, size_t len, const uint8_t key[WG_KEY_LEN])
{
	if (len < WG_MSG_TRANSPORT_MIN_LEN)
		return false;
	const struct wg_msg_transport *m = (const struct wg_msg_transport *)msg;
	uint64_t counter = wg_load_le64(m->counter);
	uint8_t *body = msg + WG_MSG_TRANSPORT_HEADER_LEN;
	return wg_aead_decrypt(body, body, len - WG_MSG_TRANSPORT_HEADER_LEN, NULL, 0, counter,
			       key);
}

size_t wg_transport_inner_len(const uint8_t *p, size_t len)
{
	if (len < 1)
		return 0;
	switch (p[0] >> 4) {
	case 4: {
		if (len < 20)
			return 0;
		size_t total = (size_t)p[2] << 8 | p[3];
		size_t ihl = (size_t)(p[0] & 0x0f) * 4;
		if (ihl < 20 || total < ihl || total > len)
			return 0;
		return total;
	}
	case 6: {
		if (len < 40)
			return 0;
		size_t total = 40 + ((size_t)p[4] << 8 | p[5]);
		if (total > len)
			return 0;
		return total;
	}
	default:
		return 0;
	}
}

void wg_transport_inner_src(const uint8_t *p, int *family, uint8_t out[16])
{
	if (p[0] >> 4 == 4) {
		*family = 4;
		memcpy(out, p + 12, 4);
	} else {
		*family = 6;
		memcpy(out, p + 8, 16);
	}
}
