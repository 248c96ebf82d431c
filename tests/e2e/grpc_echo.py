#!/usr/bin/env python3
"""A gRPC echo over TLS with no generated code (generic handlers, bytes).

  grpc_echo.py server PORT CERT KEY   /echo.Echo/Say answers the request's
                                      bytes, then "|" and the value of its
                                      x-grpc-rule metadata; /echo.Echo/Count
                                      streams N answers for the digit N
  grpc_echo.py client ADDR CA NAME    calls both (NAME: the certificate's
                                      name) and prints what came back
"""
import sys
from concurrent import futures

import grpc


def ident(b):
    return b


def server(port, cert, key):
    def say(req, ctx):
        md = dict(ctx.invocation_metadata())
        return req + b"|" + md.get("x-grpc-rule", "none").encode()

    def count(req, ctx):
        for i in range(int(req.decode() or "0")):
            yield str(i).encode()

    handlers = {
        "Say": grpc.unary_unary_rpc_method_handler(say, ident, ident),
        "Count": grpc.unary_stream_rpc_method_handler(count, ident, ident),
    }
    s = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    s.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("echo.Echo", handlers),))
    creds = grpc.ssl_server_credentials([(open(key, "rb").read(), open(cert, "rb").read())])
    s.add_secure_port("[::]:%s" % port, creds)
    s.start()
    s.wait_for_termination()


def client(addr, ca, name):
    creds = grpc.ssl_channel_credentials(root_certificates=open(ca, "rb").read())
    with grpc.secure_channel(addr, creds, options=(("grpc.ssl_target_name_override", name),)) as ch:
        say = ch.unary_unary("/echo.Echo/Say", request_serializer=ident, response_deserializer=ident)
        print(say(b"hello", timeout=20).decode())
        count = ch.unary_stream("/echo.Echo/Count", request_serializer=ident, response_deserializer=ident)
        print(",".join(m.decode() for m in count(b"3", timeout=20)))


if __name__ == "__main__":
    a = sys.argv[1:]
    if a and a[0] == "server":
        server(a[1], a[2], a[3])
    elif a and a[0] == "client":
        client(a[1], a[2], a[3])
    else:
        sys.exit(__doc__)
