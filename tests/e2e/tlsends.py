#!/usr/bin/env python3
"""Clients that end TLS connections early, and a gRPC server and client.

  tlsends.py close HOST PORT SNI MODE   a TLS client that sends its ClientHello
      and then: fin (reads the server's flight, closes: FIN, no alert),
      rst (the same, with a reset), early-fin (shuts down writing at once,
      before any answer, and waits for the end). Exit 0 once the connection
      is over.
  tlsends.py grpc-server PORT CERT KEY  a gRPC server (grpc-core: ALPN grpc-exp, h2)
      with one method, /echo.Echo/Say, answering b"pong:" + request
  tlsends.py grpc-call HOST PORT NAME CA   one call with NAME as the TLS name,
      trusting only CA; exit 0 and "pong:ping" on success, 1 on failure

The gRPC commands need grpcio (Debian: python3-grpcio)."""
import socket
import ssl
import struct
import sys
import time


def close_early(host, port, sni, mode):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(inc, out, server_hostname=sni)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    s = socket.create_connection((host, port), 10)
    s.sendall(out.read())
    if mode == "early-fin":
        s.shutdown(socket.SHUT_WR)
        s.settimeout(15)
        try:
            while s.recv(65536):
                pass
        except ConnectionResetError:
            pass
        s.close()
        return 0
    # Read the server's whole flight (until it has been quiet for a moment):
    # a close with unread bytes would be a reset.
    got = 0
    s.settimeout(10)
    first = s.recv(65536)
    got += len(first)
    s.settimeout(0.5)
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            got += len(b)
    except socket.timeout:
        pass
    if got == 0:
        print("no answer to the ClientHello", file=sys.stderr)
        return 1
    if mode == "rst":
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    return 0


def grpc_server(port, cert, key):
    from concurrent import futures

    import grpc

    def say(request, context):
        return b"pong:" + request

    handler = grpc.method_handlers_generic_handler(
        "echo.Echo", {"Say": grpc.unary_unary_rpc_method_handler(say)})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    with open(key, "rb") as k, open(cert, "rb") as c:
        creds = grpc.ssl_server_credentials([(k.read(), c.read())])
    server.add_secure_port("[::]:%d" % port, creds)
    server.start()
    server.wait_for_termination()


def grpc_call(host, port, name, ca):
    import grpc

    with open(ca, "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    target = "%s:%d" % (host, port)
    with grpc.secure_channel(target, creds,
                             options=[("grpc.ssl_target_name_override", name)]) as ch:
        say = ch.unary_unary("/echo.Echo/Say")
        try:
            print(say(b"ping", timeout=10).decode())
        except grpc.RpcError as e:
            print("rpc failed: %s" % e.code(), file=sys.stderr)
            return 1
    time.sleep(0.2)
    return 0


def main():
    cmd = sys.argv[1]
    if cmd == "close":
        sys.exit(close_early(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]))
    if cmd == "grpc-server":
        grpc_server(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    elif cmd == "grpc-call":
        sys.exit(grpc_call(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]))
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main()
