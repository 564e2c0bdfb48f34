#!/usr/bin/env python3
"""Test server for detour's integration tests and demo.

Listens on every address (IPv4 and IPv6) of its network namespace, on the
port given as the first argument. GET answers with the peer address the
server saw; POST echoes the request body, with the peer in `X-Peer`. Prints
"listening" once bound, so that the harness knows it is ready.
"""
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "detour-echo"

    def peer(self):
        host, port = self.client_address[:2]
        if host.startswith("::ffff:"):
            host = host[len("::ffff:"):]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def do_GET(self):
        body = f"hello from {self.server.name}; you are {self.peer()}\n".encode()
        self.send_response(200)
        self.send_header("X-Peer", self.peer())
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        self.send_response(200)
        self.send_header("X-Peer", self.peer())
        self.send_header("Content-Length", str(length))
        self.end_headers()
        remaining = length
        while remaining:
            chunk = self.rfile.read(min(remaining, 1 << 16))
            if not chunk:
                break
            self.wfile.write(chunk)
            remaining -= len(chunk)

    def log_message(self, *args):
        pass


class DualStackServer(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def main():
    port = int(sys.argv[1])
    name = sys.argv[2] if len(sys.argv) > 2 else socket.gethostname()
    server = DualStackServer(("::", port), Handler)
    server.name = name
    print("listening", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
