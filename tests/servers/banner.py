#!/usr/bin/env python3
"""A server-speaks-first test upstream (like SMTP or MySQL).

Usage: banner.py PORT
On every connection it sends "220 banner from NAME\\r\\n" at once, then
echoes whatever it receives. Prints "listening" once bound.
"""
import socket
import socketserver
import sys


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.sendall(f"220 banner from {self.server.name}\r\n".encode())
        while True:
            data = self.request.recv(65536)
            if not data:
                return
            self.request.sendall(data)


class Server(socketserver.ThreadingTCPServer):
    address_family = socket.AF_INET6
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def main():
    server = Server(("::", int(sys.argv[1])), Handler)
    server.name = sys.argv[2] if len(sys.argv) > 2 else socket.gethostname()
    print("listening", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
