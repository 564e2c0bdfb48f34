#!/usr/bin/env python3
"""A service that keeps its items in PostgreSQL: the forked HTTP service of
the stateful sandbox tests.

Usage: items.py PORT NAME DB_HOST

Listens on every address of its network namespace. `GET /` answers the
items of table `items` in database `postgres` at DB_HOST:5432, comma
separated in name order; `POST /?item=NAME` inserts one and answers `added`.
Every answer carries `X-Served-By: NAME`. It asks with `psql` (Debian's
client), a new connection per request, as user `postgres`; a database error
is a 502 with psql's message.
"""
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "detour-items"

    def sql(self, query, *variables):
        args = ["psql", "-h", self.server.db_host, "-p", "5432", "-U", "postgres"]
        args += ["-d", "postgres", "-tAX", "-v", "ON_ERROR_STOP=1"]
        for name, value in variables:
            args += ["-v", f"{name}={value}"]
        done = subprocess.run(
            args, input=query, capture_output=True, text=True, timeout=10
        )
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip())
        return done.stdout.strip()

    def answer(self, status, body):
        data = (body + "\n").encode()
        self.send_response(status)
        self.send_header("X-Served-By", self.server.name)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        try:
            items = self.sql("SELECT string_agg(name, ',' ORDER BY name) FROM items")
        except Exception as error:
            return self.answer(502, str(error))
        self.answer(200, items)

    def do_POST(self):
        item = parse_qs(urlsplit(self.path).query).get("item", [""])[0]
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        try:
            self.sql("INSERT INTO items VALUES (:'item')", ("item", item))
        except Exception as error:
            return self.answer(502, str(error))
        self.answer(200, "added")

    def log_message(self, *args):
        pass


def main():
    port, name, db_host = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    server.name, server.db_host = name, db_host
    print("listening", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
