#!/usr/bin/env python3
"""A test upstream that writes as fast as its client lets it.

Usage: blast.py PORT NAME LOG
On every connection: sends for 2 seconds, as much as the connection takes
(non-blocking writes, waiting for room), then appends the number of bytes
it managed to LOG (one line) and closes. Prints "listening" once bound.
"""
import select
import socketserver
import sys
import time

import dualstack

SECONDS = 2.0


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        sock.setblocking(False)
        block = b"x" * (1 << 20)
        sent, deadline = 0, time.monotonic() + SECONDS
        while (left := deadline - time.monotonic()) > 0:
            _, writable, _ = select.select([], [sock], [], left)
            if writable:
                try:
                    sent += sock.send(block)
                except BlockingIOError:
                    pass
                except OSError:
                    break
        with open(self.server.log, "a") as log:
            log.write(f"{sent}\n")


def main():
    dualstack.serve(int(sys.argv[1]), Handler, log=sys.argv[3])


if __name__ == "__main__":
    main()
