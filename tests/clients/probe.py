#!/usr/bin/env python3
"""One TCP connection that reports how the server ended it.

Usage: probe.py HOST PORT PAYLOAD_HEX [TIMEOUT_SECONDS]

Connects, sends the payload (given in hex, so any bytes fit on a command
line), then reads until the server closes, resets, or stays silent for
TIMEOUT_SECONDS (default 5). Prints one JSON line:

  {"connect": "ok" | "<error>", "sent": "ok" | "<error>",
   "end": "eof" | "reset" | "timeout" | "<error>",
   "received": N, "head": "<first bytes received, as text>", "seconds": S}

so a test can tell "closed at once without a byte" from "answered" and
from "left hanging". Exits 0 whenever it ran.
"""
import json
import socket
import sys
import time


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    payload = bytes.fromhex(sys.argv[3])
    timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 5.0
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    report = {"connect": "ok", "sent": None, "end": None, "received": 0, "head": ""}
    started = time.monotonic()
    received = b""
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((host, port))
        except OSError as error:
            report["connect"] = type(error).__name__
        if report["connect"] == "ok":
            try:
                sock.sendall(payload)
                report["sent"] = "ok"
            except OSError as error:
                report["sent"] = type(error).__name__
            try:
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        report["end"] = "eof"
                        break
                    received += chunk
            except socket.timeout:
                report["end"] = "timeout"
            except ConnectionResetError:
                report["end"] = "reset"
            except OSError as error:
                report["end"] = type(error).__name__
    report["received"] = len(received)
    report["head"] = received[:200].decode("latin-1")
    report["seconds"] = round(time.monotonic() - started, 3)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
