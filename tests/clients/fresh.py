#!/usr/bin/env python3
"""An HTTP client that opens a new connection for every request, as a client
without a pool (or a short-lived process) does.

Usage: fresh.py HOST PORT SECONDS PATH [HEADER_NAME HEADER_VALUE]

Sends GET PATH on a new connection, one request after the other (10 ms
apart), for SECONDS. Nothing is retried: each request is its connection's
first. Prints one line per request, in keepalive.py's format:
    "<unix time> <status> <served-by> <request number>"
and "<unix time> ERROR <reason> <request number>" for a failed one.
"""
import http.client
import sys
import time


def main():
    host, port, seconds, path = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    headers = {sys.argv[5]: sys.argv[6]} if len(sys.argv) > 6 else {}
    headers["Connection"] = "close"
    start = time.monotonic()
    number = 0
    while time.monotonic() - start < seconds:
        number += 1
        sent_at = time.time()
        conn = http.client.HTTPConnection(host, port, timeout=5)
        try:
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            response.read()
            print(
                f"{sent_at:.6f} {response.status} {response.getheader('X-Served-By')} {number}",
                flush=True,
            )
        except Exception as error:  # noqa: BLE001 - every failure is reported
            print(f"{sent_at:.6f} ERROR {type(error).__name__} {number}", flush=True)
        finally:
            conn.close()
        time.sleep(0.01)


if __name__ == "__main__":
    main()
