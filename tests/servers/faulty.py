#!/usr/bin/env python3
"""A misbehaving upstream for fault tests.

Usage: faulty.py PORT NAME
  GET /slow?ms=N  answers after N milliseconds
  GET /hang       never answers
  GET /reset      sends part of a response, then resets the connection
  anything else   "hello from NAME" (with X-Served-By: NAME)
Prints "listening" once bound.
"""
import socket
import struct
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, body):
        self.send_response(200)
        self.send_header("X-Served-By", self.server.name)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/slow":
            time.sleep(int(parse_qs(url.query).get("ms", ["1000"])[0]) / 1000)
            self.reply(b"slow hello from " + self.server.name.encode() + b"\n")
        elif url.path == "/hang":
            time.sleep(3600)
        elif url.path == "/reset":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
        else:
            self.reply(b"hello from " + self.server.name.encode() + b"\n")

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True

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
