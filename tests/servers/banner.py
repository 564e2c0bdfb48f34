#!/usr/bin/env python3
"""A server-speaks-first test upstream (like SMTP or MySQL).

Usage: banner.py PORT
On every connection it sends "220 banner from NAME\\r\\n" at once, then
echoes whatever it receives. Prints "listening" once bound.
"""
import socket
import socketserver
import sys

import dualstack


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.sendall(f"220 banner from {self.server.name}\r\n".encode())
        while True:
            data = self.request.recv(65536)
            if not data:
                return
            self.request.sendall(data)


def main():
    name = sys.argv[2] if len(sys.argv) > 2 else socket.gethostname()
    dualstack.serve(int(sys.argv[1]), Handler, name=name)


if __name__ == "__main__":
    main()
