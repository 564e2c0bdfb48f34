#!/usr/bin/env python3
"""gRPC test upstream (h2c, no TLS) for detour's HTTP/2 and gRPC tests.

Usage: grpc_server.py PORT NAME [LOG]

Listens on [::]:PORT, so on every address (IPv4 and IPv6) of its network
namespace. Serves the generic service `detour.test.Echo`; messages are raw
bytes (no protobuf), JSON where a method reads or writes structure. Every RPC
sends initial metadata `x-served-by: NAME` (except a trailers-only `Fail`,
which carries it in its trailers), so a client can always tell who served it.
When LOG is given, every RPC appends `METHOD served_by=NAME key=BAGGAGE peer=PEER` to it
as it starts (BAGGAGE: the `baggage` metadata as received, `-` without one),
and a cancelled streaming or slow RPC appends `cancelled METHOD`.

  Unary         request: any bytes. Reply: JSON {"served_by": NAME,
                "metadata": {the non-binary invocation metadata},
                "size": request length}; for a request of 1 MiB or more the
                reply is the request echoed back instead. Metadata
                `x-sleep-ms: N` makes it wait N ms first (calls held open).
  ServerStream  request: JSON {"count": N, "interval_ms": M, "size": S}
                (defaults 3, 0, 0). Sends N messages {"served_by": NAME,
                "seq": i} (padded with a "pad" field to about S bytes),
                M ms apart. Logs `cancelled ServerStream` if the client
                cancels before the end.
  ClientStream  consumes every message; replies {"served_by": NAME,
                "count": messages, "bytes": total bytes}.
  Bidi          echoes each message back, unchanged, as it arrives.
  Fail          request: JSON {"code": "NOT_FOUND", "details": "...",
                "trailers_only": false}. Ends with that status and details,
                trailing metadata `x-detail: NAME` and
                `x-detail-bin: b"\\x00\\x01fork-detail"`. With "trailers_only"
                it aborts before sending anything, so the response is one
                HEADERS frame with the status (a trailers-only response).
  Slow          request: JSON {"ms": N}. Waits N ms, checking every 10 ms
                whether the call is still alive; replies {"served_by": NAME},
                or, if the client cancelled or its deadline passed, logs
                `cancelled Slow` and stops.

Messages up to 16 MiB each way. Up to 256 calls run at once. The environment
variable GRPC_MAX_STREAMS, when set, becomes the server's HTTP/2
SETTINGS_MAX_CONCURRENT_STREAMS (grpc.max_concurrent_streams).
Prints "listening" once bound.

Uses Debian's python3-grpcio; when `python3` is another interpreter (pyenv)
that lacks grpc, the script re-runs itself under /usr/bin/python3.
"""
import json
import os
import signal
import sys
import threading
import time
from concurrent import futures

try:
    import grpc
except ImportError:
    SYSTEM_PYTHON = "/usr/bin/python3"
    if os.path.exists(SYSTEM_PYTHON) and os.path.realpath(sys.executable) != os.path.realpath(
        SYSTEM_PYTHON
    ):
        os.execv(SYSTEM_PYTHON, [SYSTEM_PYTHON, *sys.argv])
    raise

SERVICE = "detour.test.Echo"
MAX_MESSAGE = 16 * 1024 * 1024
BIG = 1024 * 1024
DETAIL_BIN = b"\x00\x01fork-detail"


class Log:
    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()

    def write(self, line):
        if not self.path:
            return
        with self.lock, open(self.path, "a") as log:
            log.write(line + "\n")
            log.flush()


class Echo:
    def __init__(self, name, log):
        self.name = name
        self.log = log

    # --- helpers -------------------------------------------------------------

    def start(self, method, context, initial=True):
        baggage = [v for k, v in context.invocation_metadata() if k == "baggage"]
        key = ",".join(baggage) if baggage else "-"
        self.log.write(f"{method} served_by={self.name} key={key} peer={context.peer()}")
        if initial:
            context.send_initial_metadata((("x-served-by", self.name),))

    def json_reply(self, **fields):
        return json.dumps({"served_by": self.name, **fields}).encode()

    def wait(self, context, seconds):
        """Sleeps up to `seconds`; False if the call ended meanwhile."""
        end = time.monotonic() + seconds
        while True:
            if not context.is_active():
                return False
            left = end - time.monotonic()
            if left <= 0:
                return True
            time.sleep(min(0.01, left))

    @staticmethod
    def request_json(request):
        try:
            value = json.loads(request or b"{}")
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    # --- methods -------------------------------------------------------------

    def unary(self, request, context):
        self.start("Unary", context)
        metadata = {}
        sleep_ms = 0
        for key, value in context.invocation_metadata():
            if key.endswith("-bin"):
                continue
            metadata[key] = f"{metadata[key]},{value}" if key in metadata else value
            if key == "x-sleep-ms":
                sleep_ms = int(value)
        if sleep_ms and not self.wait(context, sleep_ms / 1000):
            self.log.write("cancelled Unary")
            return b""
        if len(request) >= BIG:
            return request
        return self.json_reply(metadata=metadata, size=len(request))

    def server_stream(self, request, context):
        self.start("ServerStream", context)
        params = self.request_json(request)
        count = int(params.get("count", 3))
        interval = float(params.get("interval_ms", 0)) / 1000
        size = int(params.get("size", 0))
        done = False
        try:
            for seq in range(count):
                if seq and interval and not self.wait(context, interval):
                    break
                if not context.is_active():
                    break
                message = {"served_by": self.name, "seq": seq}
                pad = size - len(json.dumps(message)) - len(', "pad": ""')
                if pad > 0:
                    message["pad"] = "x" * pad
                yield json.dumps(message).encode()
            else:
                done = True
        finally:
            # A cancelled call either breaks the loop above or is abandoned at
            # a yield (GeneratorExit); both end here.
            if not done and not context.is_active():
                self.log.write("cancelled ServerStream")

    def client_stream(self, request_iterator, context):
        self.start("ClientStream", context)
        count = total = 0
        for message in request_iterator:
            count += 1
            total += len(message)
        return self.json_reply(count=count, bytes=total)

    def bidi(self, request_iterator, context):
        self.start("Bidi", context)
        completed = False
        try:
            for message in request_iterator:
                yield message
            completed = True
        finally:
            if not completed and not context.is_active():
                self.log.write("cancelled Bidi")

    def fail(self, request, context):
        params = self.request_json(request)
        trailers_only = bool(params.get("trailers_only"))
        self.start("Fail", context, initial=not trailers_only)
        trailing = [("x-detail", self.name), ("x-detail-bin", DETAIL_BIN)]
        if trailers_only:
            trailing.append(("x-served-by", self.name))
        context.set_trailing_metadata(tuple(trailing))
        code_name = str(params.get("code", "NOT_FOUND")).upper()
        code = getattr(grpc.StatusCode, code_name, grpc.StatusCode.UNKNOWN)
        if code is grpc.StatusCode.OK:
            code = grpc.StatusCode.UNKNOWN
        context.abort(code, str(params.get("details", f"failed by {self.name}")))

    def slow(self, request, context):
        self.start("Slow", context)
        ms = float(self.request_json(request).get("ms", 1000))
        if not self.wait(context, ms / 1000):
            self.log.write("cancelled Slow")
            return b""
        return self.json_reply()


def handler(echo):
    raw = {"request_deserializer": None, "response_serializer": None}
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(echo.unary, **raw),
            "ServerStream": grpc.unary_stream_rpc_method_handler(echo.server_stream, **raw),
            "ClientStream": grpc.stream_unary_rpc_method_handler(echo.client_stream, **raw),
            "Bidi": grpc.stream_stream_rpc_method_handler(echo.bidi, **raw),
            "Fail": grpc.unary_unary_rpc_method_handler(echo.fail, **raw),
            "Slow": grpc.unary_unary_rpc_method_handler(echo.slow, **raw),
        },
    )


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    port = int(sys.argv[1])
    name = sys.argv[2]
    log = Log(sys.argv[3] if len(sys.argv) > 3 else None)
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.max_send_message_length", MAX_MESSAGE),
        # Fail loudly on a port already taken, instead of sharing it.
        ("grpc.so_reuseport", 0),
    ]
    if os.environ.get("GRPC_MAX_STREAMS"):
        options.append(("grpc.max_concurrent_streams", int(os.environ["GRPC_MAX_STREAMS"])))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=256), options=options)
    server.add_generic_rpc_handlers((handler(Echo(name, log)),))
    try:
        bound = server.add_insecure_port(f"[::]:{port}")
    except RuntimeError as error:
        sys.exit(f"cannot listen on port {port}: {error}")
    if not bound:
        sys.exit(f"cannot listen on port {port}")
    server.start()
    # SIGTERM stops gracefully: GOAWAY to every client, calls in flight may
    # finish for 5 s (a test of upstream GOAWAY relies on it).
    signal.signal(signal.SIGTERM, lambda *_: server.stop(grace=5))
    print("listening", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
