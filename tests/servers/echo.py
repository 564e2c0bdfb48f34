#!/usr/bin/env python3
"""Test upstream for detour's integration tests and demo.

Usage: echo.py PORT NAME [LOG]

Listens on every address (IPv4 and IPv6) of its network namespace. Every
response carries `X-Served-By: NAME` and `X-Peer: <address it saw>`. When LOG
is given, each request's method and path are appended to it, so a test can
tell exactly which requests reached this server.

  GET  /          "hello from NAME; you are PEER"
  POST /          echoes the body (Content-Length or chunked request)
  HEAD /          the GET headers, no body
  GET  /chunked   a chunked response with a trailer (x-trailer: done)
  GET  /close     a response delimited by closing the connection
  GET  /204       204 No Content
  GET  /upgrade   101 Switching Protocols, then echoes bytes upper-cased
  GET  /slow?ms=N the GET / answer, after N milliseconds (a request in flight)
  GET  /headers   the request head exactly as this server received it (request
                  line and field lines, CRLFs included), as the body
Prints "listening" once bound.
"""
import socket
import sys
import time
from urllib.parse import parse_qs, urlsplit
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Recorder:
    """Wraps rfile while a head is parsed, keeping every line read."""

    def __init__(self, inner):
        self.inner = inner
        self.data = b""

    def readline(self, *args):
        line = self.inner.readline(*args)
        self.data += line
        return line


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "detour-echo"

    def peer(self):
        host, port = self.client_address[:2]
        if host.startswith("::ffff:"):
            host = host[len("::ffff:"):]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def parse_request(self):
        # The raw head, for GET /headers: http.client reads the field lines
        # one readline() at a time.
        recorder = Recorder(self.rfile)
        self.rfile = recorder
        try:
            return super().parse_request()
        finally:
            self.rfile = recorder.inner
            self.raw_head = self.raw_requestline + recorder.data

    def log_request_line(self):
        if self.server.log:
            with open(self.server.log, "a") as log:
                log.write(f"{self.command} {self.path}\n")

    def common_headers(self):
        self.send_header("X-Served-By", self.server.name)
        self.send_header("X-Peer", self.peer())

    def hello(self):
        return f"hello from {self.server.name}; you are {self.peer()}\n".encode()

    def do_HEAD(self):
        self.log_request_line()
        self.send_response(200)
        self.common_headers()
        self.send_header("Content-Length", str(len(self.hello())))
        self.end_headers()

    def do_GET(self):
        self.log_request_line()
        if self.path == "/chunked":
            self.send_response(200)
            self.common_headers()
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Trailer", "x-trailer")
            self.end_headers()
            for part in (b"hello ", b"chunked ", b"world\n"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\nx-trailer: done\r\n\r\n")
        elif self.path == "/close":
            self.send_response(200)
            self.common_headers()
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"until the connection closes\n")
            self.close_connection = True
        elif self.path == "/headers":
            body = self.raw_head
            self.send_response(200)
            self.common_headers()
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/204":
            self.send_response(204)
            self.common_headers()
            self.end_headers()
        elif urlsplit(self.path).path == "/slow":
            query = parse_qs(urlsplit(self.path).query)
            time.sleep(int(query.get("ms", ["1000"])[0]) / 1000)
            body = self.hello()
            self.send_response(200)
            self.common_headers()
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/upgrade":
            self.send_response(101)
            self.common_headers()
            self.send_header("Upgrade", "echo")
            self.send_header("Connection", "Upgrade")
            self.end_headers()
            self.wfile.flush()
            while True:
                # read1: bytes the client sent right after the head may already
                # sit in rfile's buffer.
                data = self.rfile.read1(65536)
                if not data:
                    break
                self.wfile.write(data.upper())
                self.wfile.flush()
            self.close_connection = True
        else:
            body = self.hello()
            self.send_response(200)
            self.common_headers()
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def read_chunked(self):
        body = b""
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return body
            body += self.rfile.read(size)
            self.rfile.readline()

    def do_POST(self):
        self.log_request_line()
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            body = self.read_chunked()
        else:
            body = None
            length = int(self.headers.get("Content-Length", "0"))
        self.send_response(200)
        self.common_headers()
        self.send_header("Content-Length", str(len(body) if body is not None else length))
        self.end_headers()
        if body is not None:
            self.wfile.write(body)
            return
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
    server = DualStackServer(("::", port), Handler)
    server.name = sys.argv[2] if len(sys.argv) > 2 else socket.gethostname()
    server.log = sys.argv[3] if len(sys.argv) > 3 else None
    print("listening", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
