#!/usr/bin/env python3
"""Hand-made TCP segments through the tunnel, for peers that misbehave.

    rawtcp.py fin-2pow31 SRC DST PORT

Speaks TCP from raw sockets (the caller drops the client kernel's own
resets): a handshake, "hello", "Pause", "more", then a bare FIN whose
sequence number is 2^31 before the next one. The endpoint must answer that
FIN with a duplicate ACK and stay up. Every packet carries IP id 4242 so
the caller's firewall rule can tell them from the kernel's. Exit 0 when the
duplicate ACK came, 1 otherwise; every wait is bounded.
"""
import socket
import struct
import sys
import time

IP_ID = 4242


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def segment(src, dst, sport, dport, seq, ack, flags, payload=b""):
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                      5 << 4, flags, 0xFFFF, 0, 0) + payload
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", csum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), IP_ID, 0, 64, 6, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return ip + tcp


class Peer:
    def __init__(self, src, dst, dport):
        self.src, self.dst, self.dport = src, dst, dport
        self.sport = 40000 + int(time.time() * 1000) % 20000
        self.tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
        self.rx.settimeout(0.2)

    def send(self, seq, ack, flags, payload=b""):
        self.tx.sendto(segment(self.src, self.dst, self.sport, self.dport, seq, ack, flags, payload),
                       (self.dst, 0))

    def wait(self, pred, secs=5.0):
        """The first segment of this connection for which pred(seq, ack, flags) holds."""
        end = time.monotonic() + secs
        while time.monotonic() < end:
            try:
                pkt = self.rx.recv(65535)
            except socket.timeout:
                continue
            ihl = (pkt[0] & 15) * 4
            sport, dport, seq, ack, _, flags = struct.unpack("!HHIIBB", pkt[ihl:ihl + 14])
            if socket.inet_ntoa(pkt[12:16]) != self.dst or sport != self.dport or dport != self.sport:
                continue
            if pred(seq, ack, flags):
                return seq, ack, flags
        return None


SYN, ACK, PSH, FIN, RST = 0x02, 0x10, 0x08, 0x01, 0x04


def fin_2pow31(src, dst, port):
    p = Peer(src, dst, port)
    seq = 1000
    p.send(seq, 0, SYN)
    got = p.wait(lambda s, a, f: f & (SYN | ACK) == SYN | ACK and a == seq + 1)
    if got is None:
        print("rawtcp: no SYN-ACK", file=sys.stderr)
        return 1
    seq += 1
    rcv = got[0] + 1
    p.send(seq, rcv, ACK)
    for data in (b"hello", b"Pause", b"more"):
        p.send(seq, rcv, PSH | ACK, data)
        seq += len(data)
    if p.wait(lambda s, a, f: f & ACK and a == seq) is None:
        print("rawtcp: data not acknowledged", file=sys.stderr)
        return 1
    p.send(seq - 0x80000000, rcv, FIN | ACK)
    # The answer to an unacceptable segment: an ACK of what was received.
    if p.wait(lambda s, a, f: f & ACK and not f & (RST | FIN) and a == seq) is None:
        print("rawtcp: no duplicate ACK for the FIN 2^31 behind", file=sys.stderr)
        return 1
    p.send(seq, rcv, RST | ACK)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[1] != "fin-2pow31":
        sys.exit(__doc__)
    sys.exit(fin_2pow31(sys.argv[2], sys.argv[3], int(sys.argv[4])))
