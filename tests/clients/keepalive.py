#!/usr/bin/env python3
"""A keep-alive HTTP client that retries on a fresh connection, as ordinary
pooled clients (urllib3, Go's net/http, OkHttp) do.

Usage: keepalive.py HOST PORT SECONDS PATH [HEADER_NAME HEADER_VALUE]

Sends GET PATH on one keep-alive connection for SECONDS, one request after
the other (10 ms apart). When a request on a reused connection fails before
any response byte (the server or a middlebox closed the idle connection),
it is sent once more on a new connection, as those clients do for a request
they may repeat. Prints one line per request:
    "<unix time> <status> <served-by> <connection number>"
and "<unix time> ERROR <reason> <connection number>" for a request that
failed even after that retry (or failed on a fresh connection).
"""
import http.client
import sys
import time


def main():
    host, port, seconds, path = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    headers = {sys.argv[5]: sys.argv[6]} if len(sys.argv) > 6 else {}
    start = time.monotonic()
    conn, number, reused = None, 0, False
    while time.monotonic() - start < seconds:
        sent_at = time.time()
        for attempt in (1, 2):
            if conn is None:
                conn = http.client.HTTPConnection(host, port, timeout=5)
                number, reused = number + 1, False
            try:
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                response.read()
            except (ConnectionError, http.client.RemoteDisconnected, BrokenPipeError) as error:
                conn.close()
                conn = None
                if reused and attempt == 1:
                    continue
                print(f"{sent_at:.6f} ERROR {type(error).__name__} {number}", flush=True)
                break
            except Exception as error:  # noqa: BLE001 - every failure is reported
                conn.close()
                conn = None
                print(f"{sent_at:.6f} ERROR {type(error).__name__} {number}", flush=True)
                break
            print(
                f"{sent_at:.6f} {response.status} {response.getheader('X-Served-By')} {number}",
                flush=True,
            )
            reused = True
            if response.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = None
            break
        time.sleep(0.01)


if __name__ == "__main__":
    main()
