#!/usr/bin/env python3
"""A service that calls another: the middle of a call chain in the sandbox tests.

Usage: relay.py PORT NAME DOWNSTREAM PROPAGATE

Listens on every address of its network namespace. Each request `GET PATH`
makes a new connection to DOWNSTREAM (`http://HOST:PORT`) and sends it
`GET PATH`, carrying the request's `baggage` fields when PROPAGATE is
`propagate` (a service instrumented to pass baggage on) and nothing of them
when it is `drop` (one that is not). It answers with the downstream's status
and body, `X-Served-By: NAME` and `X-Downstream: <the downstream's
X-Served-By>`. Prints "listening" once bound.
"""
import http.client
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "detour-relay"

    def do_GET(self):
        target = urlsplit(self.server.downstream)
        headers = {}
        if self.server.propagate:
            baggage = self.headers.get_all("baggage") or []
            if baggage:
                headers["baggage"] = ",".join(baggage)
        try:
            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=5)
            conn.request("GET", self.path, headers=headers)
            response = conn.getresponse()
            status, body = response.status, response.read()
            served_by = response.getheader("X-Served-By", "unknown")
            conn.close()
        except OSError as error:
            status, body, served_by = 502, f"downstream failed: {error}\n".encode(), "none"
        self.send_response(status)
        self.send_header("X-Served-By", self.server.name)
        self.send_header("X-Downstream", served_by)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def main():
    port, name, downstream, propagate = sys.argv[1:5]
    server = Server(("::", int(port)), Handler)
    server.name = name
    server.downstream = downstream
    server.propagate = propagate == "propagate"
    print("listening", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
