#!/usr/bin/env python3
"""Request loop for reload tests.

Usage: loop.py HOST PORT SECONDS HEADER_NAME HEADER_VALUE
Sends GET / on one keep-alive connection (reopened if the server closes it)
for SECONDS, printing one line per request: "<unix time> <status> <served-by>",
or "<unix time> ERROR <reason>" for a failed one.
"""
import http.client
import sys
import time


def main():
    host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    headers = {sys.argv[4]: sys.argv[5]}
    start = time.monotonic()
    conn = None
    while time.monotonic() - start < seconds:
        elapsed = time.time()
        try:
            if conn is None:
                conn = http.client.HTTPConnection(host, port, timeout=5)
            conn.request("GET", "/", headers=headers)
            response = conn.getresponse()
            response.read()
            print(f"{elapsed:.6f} {response.status} {response.getheader('X-Served-By')}", flush=True)
            if response.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = None
        except Exception as error:  # noqa: BLE001 - every failure is reported
            print(f"{elapsed:.6f} ERROR {type(error).__name__}", flush=True)
            conn = None
        time.sleep(0.01)


if __name__ == "__main__":
    main()
