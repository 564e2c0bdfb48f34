#!/usr/bin/env python3
"""A bulk-transfer test upstream, and its client, for spliced connections.

Server: stream.py PORT [NAME]
  On every connection: reads until the client's end of stream (a half-close),
  answers "<bytes> <sha256>\\n" for what it read, then SIZE pseudo-random
  bytes (seeded by SEED; SIZE and SEED are the first line the client sent:
  "<size> <seed>\\n"), then closes. Prints "listening" once bound.

Client: stream.py --client HOST PORT SIZE SEED [PAUSE]
  Sends "<size> <seed>\\n" (and waits PAUSE seconds, so that the proxy has
  decided how to serve the connection) and SIZE pseudo-random bytes,
  half-closes, reads
  the answer to the end, and prints "ok <bytes>" when both directions
  arrived intact and in order, or what differed.
"""
import hashlib
import random
import socket
import socketserver
import sys
import time

import dualstack

CHUNK = 1 << 16


def chunks(size, seed):
    rng = random.Random(seed)
    while size > 0:
        n = min(size, CHUNK)
        yield rng.randbytes(n)
        size -= n


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        digest, total, head = hashlib.sha256(), 0, b""
        while True:
            data = self.request.recv(1 << 20)
            if not data:
                break
            total += len(data)
            digest.update(data)
            if b"\n" not in head:
                head += data[:64]
        size, seed = (int(x) for x in head.split(b"\n", 1)[0].split())
        self.request.sendall(f"{total} {digest.hexdigest()}\n".encode())
        for chunk in chunks(size, seed + 1):
            self.request.sendall(chunk)


def client(host, port, size, seed, pause):
    sock = socket.create_connection((host, port), timeout=30)
    sent = hashlib.sha256()
    first = f"{size} {seed}\n".encode()
    sock.sendall(first)
    sent.update(first)
    time.sleep(pause)
    for chunk in chunks(size, seed):
        sock.sendall(chunk)
        sent.update(chunk)
    sock.shutdown(socket.SHUT_WR)
    got = bytearray()
    while True:
        data = sock.recv(1 << 20)
        if not data:
            break
        got += data
    line, _, rest = bytes(got).partition(b"\n")
    expected_line = f"{len(first) + size} {sent.hexdigest()}"
    expected_rest = hashlib.sha256(b"".join(chunks(size, seed + 1))).hexdigest()
    if line.decode() != expected_line:
        print(f"upstream got {line.decode()!r}, sent {expected_line!r}")
    elif len(rest) != size or hashlib.sha256(rest).hexdigest() != expected_rest:
        print(f"client got {len(rest)} bytes (sha256 {hashlib.sha256(rest).hexdigest()}), expected {size}")
    else:
        print(f"ok {size}")


def main():
    if sys.argv[1] == "--client":
        host, port, size, seed = sys.argv[2:6]
        pause = float(sys.argv[6]) if len(sys.argv) > 6 else 0
        client(host, int(port), int(size), int(seed), pause)
        return
    dualstack.serve(int(sys.argv[1]), Handler)


if __name__ == "__main__":
    main()
