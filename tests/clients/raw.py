#!/usr/bin/env python3
"""Raw TCP client for tests that must control every byte.

Usage: raw.py HOST PORT [IDLE_SECONDS]
Sends standard input as is, then prints to standard output every byte
received until the server closes or nothing arrives for IDLE_SECONDS
(default 3). The connection is only half-closed by the server, never by us,
so keep-alive behaviour is observable.
"""
import socket
import sys


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    idle = float(sys.argv[3]) if len(sys.argv) > 3 else 3.0
    data = sys.stdin.buffer.read()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(idle)
        sock.connect((host, port))
        sock.sendall(data)
        received = b""
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except socket.timeout:
            pass
    sys.stdout.buffer.write(received)


if __name__ == "__main__":
    main()
