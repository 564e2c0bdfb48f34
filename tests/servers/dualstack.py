"""The listening side the plain TCP test servers share (banner, blast, stream).

serve(port, handler, **attrs): a threading TCP server on [::] that takes IPv4
and IPv6 alike (IPV6_V6ONLY off), with `attrs` set on it for its handlers to
read; prints "listening" once bound, then serves until killed.
"""
import socket
import socketserver


class Server(socketserver.ThreadingTCPServer):
    address_family = socket.AF_INET6
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def serve(port, handler, **attrs):
    server = Server(("::", port), handler)
    for name, value in attrs.items():
        setattr(server, name, value)
    print("listening", flush=True)
    server.serve_forever()
