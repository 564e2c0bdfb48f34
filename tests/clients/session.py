#!/usr/bin/env python3
"""One keep-alive HTTP/1.1 connection, driven line by line from stdin.

Usage: session.py HOST PORT
Commands, one per line; each prints one line when done:
  get KEY     GET / with `baggage: detour-routing-key=KEY` (KEY `-`: no
              baggage); prints "<status> <served-by>", or "closed" if the
              connection closed before a response
  split KEY   the same request, its head sent in two writes 300 ms apart
  eof         waits (at most 30 s) for the server to close; prints
              "eof <seconds waited>", or "open" if it did not
"""
import socket
import sys
import time


def request(key):
    baggage = "" if key == "-" else "baggage: detour-routing-key=%s\r\n" % key
    return ("GET / HTTP/1.1\r\nHost: session\r\n%s\r\n" % baggage).encode()


def response(conn):
    data = b""
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            return "closed"
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if not sep:
            continue
        lines = head.decode("latin-1").split("\r\n")
        fields = dict(l.split(":", 1) for l in lines[1:])
        fields = {k.strip().lower(): v.strip() for k, v in fields.items()}
        if len(body) >= int(fields.get("content-length", "0")):
            return "%s %s" % (lines[0].split(" ")[1], fields.get("x-served-by", "-"))


def main():
    conn = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
    for line in sys.stdin:
        try:
            run(conn, line)
        except OSError:
            print("closed", flush=True)


def run(conn, line):
    """One command; OSError (reset, broken pipe): the connection is gone."""
    command, _, arg = line.strip().partition(" ")
    if command == "get":
        conn.sendall(request(arg))
        print(response(conn), flush=True)
    elif command == "split":
        raw = request(arg)
        conn.sendall(raw[:10])
        time.sleep(0.3)
        conn.sendall(raw[10:])
        print(response(conn), flush=True)
    elif command == "eof":
        started = time.monotonic()
        try:
            while conn.recv(65536):
                pass
            print("eof %.1f" % (time.monotonic() - started), flush=True)
        except socket.timeout:
            print("open", flush=True)


if __name__ == "__main__":
    main()
