#!/usr/bin/env python3
"""gRPC scenarios against tests/servers/grpc_server.py (service detour.test.Echo).

Usage: grpc_client.py SCENARIO TARGET [options]

TARGET is HOST:PORT ([v6]:PORT for IPv6). Each run uses ONE insecure (h2c)
channel, so every call of a scenario shares one HTTP/2 connection. Prints one
JSON object per line on standard output and exits 0 once the scenario ran:
a failed call is data ("code" other than "OK"), not a crash. Every call has a
deadline (--timeout, default 30 s) unless the scenario sets its own.

Options every scenario takes:
  --key K        send metadata `baggage: detour-routing-key=K`
  --timeout S    per-call deadline in seconds (default 30)

"served_by" is the server's `x-served-by` initial metadata (null if none came).
"code" is a grpc.StatusCode name: "OK", "UNAVAILABLE", ...; "details" is the
status message or null. If the client itself fails (e.g. metadata grpcio
refuses), the last line is {"code": "CLIENT_ERROR", "error": TEXT}.

Scenarios:
  unary TARGET [--key K] [--count N] [--alternate] [--interval-ms M]
      N (default 1) sequential Unary calls, M ms apart; with --alternate the
      even calls carry the key and the odd ones none. One line per call:
      {"i", "keyed", "served_by", "code", "details", "baggage", "at"} where
      "baggage" is the baggage metadata the server saw (null if none) and
      "at" the unix time the call ended.
  concurrent TARGET --key K [--count 200] [--seed 1] [--hold-ms 0]
      N Unary calls in flight at once (futures), exactly half keyed, in an
      order shuffled with the seed; --hold-ms makes the server hold each call
      that long (metadata x-sleep-ms). One line per call, as for unary.
  server-stream TARGET [--key K] [--count 3] [--interval-ms 0] [--size 0]
                [--cancel-after M]
      One ServerStream call. A line per message {"seq", "served_by" (from the
      message), "bytes"}, then {"done": true, "code", "details", "messages",
      "served_by", "seconds"}. --cancel-after M cancels the call after M
      messages (code CANCELLED; the server logs `cancelled ServerStream`).
  client-stream TARGET [--key K] [--count 3] [--size 16] [--interval-ms 0]
      One ClientStream call sending N messages of S bytes. One line:
      {"done": true, "code", "details", "served_by", "sent_count",
      "sent_bytes", "count", "bytes"} (count/bytes: what the server got).
  bidi TARGET [--key K] [--count 3] [--size 16]
      One Bidi call, ping-pong: each message is sent only after the echo of
      the previous one came back. A line per message {"seq", "equal", "ms"},
      then {"done": true, "code", "details", "messages", "all_equal",
      "served_by", "seconds"}.
  big TARGET [--key K] [--size 4194304]
      One Unary call of SIZE bytes (>= 1 MiB: echoed back). One line:
      {"code", "details", "served_by", "sent", "received", "equal", "seconds"}.
  fail TARGET [--key K] [--code NOT_FOUND] [--details TEXT] [--trailers-only]
      One Fail call. One line: {"code", "details", "served_by", "initial",
      "trailing"}: initial and trailing metadata as objects, a -bin value
      in hex.
  cancel TARGET [--key K] [--after-ms 200]
      Slow (ms=10000), cancelled by the client after the given time. One
      line: {"code", "details", "seconds"} (code CANCELLED; the server logs
      `cancelled Slow`).
  deadline TARGET [--key K] [--timeout-ms 200]
      Slow (ms=10000) with that deadline. One line: {"code", "details",
      "seconds"} (code DEADLINE_EXCEEDED).
  raw-metadata TARGET [-m NAME=VALUE]... [--key K]
      One Unary call with exactly these metadata pairs (repeatable, in order;
      for tracestate, uberctx-*, ot-baggage-*, custom headers; a NAME ending
      in -bin takes a hex VALUE). One line: {"code", "details", "served_by",
      "metadata"} where "metadata" is what the server saw (non-binary).

Uses Debian's python3-grpcio; when `python3` is another interpreter (pyenv)
that lacks grpc, the script re-runs itself under /usr/bin/python3.
"""
import argparse
import json
import os
import random
import sys
import threading
import time

try:
    import grpc
except ImportError:
    SYSTEM_PYTHON = "/usr/bin/python3"
    if os.path.exists(SYSTEM_PYTHON) and os.path.realpath(sys.executable) != os.path.realpath(
        SYSTEM_PYTHON
    ):
        os.execv(SYSTEM_PYTHON, [SYSTEM_PYTHON, *sys.argv])
    raise

SERVICE = "/detour.test.Echo/"
MAX_MESSAGE = 16 * 1024 * 1024
SLOW_MS = 10000


def emit(**fields):
    print(json.dumps(fields), flush=True)


def metadata_dict(pairs):
    out = {}
    for key, value in pairs or ():
        if isinstance(value, bytes):
            value = value.hex()
        out[key] = f"{out[key]},{value}" if key in out else value
    return out


def served_by(pairs):
    return metadata_dict(pairs).get("x-served-by")


def code_name(code):
    return code.name if code is not None else None


def decode_json(data):
    try:
        value = json.loads(data)
    except (ValueError, TypeError):
        return {}
    return value if isinstance(value, dict) else {}


class Client:
    def __init__(self, args):
        self.args = args
        self.channel = grpc.insecure_channel(
            args.target,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE),
                ("grpc.max_send_message_length", MAX_MESSAGE),
                # Never through an http_proxy from the environment.
                ("grpc.enable_http_proxy", 0),
            ],
        )

    def method(self, kind, name):
        factory = getattr(self.channel, kind)
        return factory(SERVICE + name, request_serializer=None, response_deserializer=None)

    def keyed(self, key=None):
        key = key if key is not None else self.args.key
        return [("baggage", f"detour-routing-key={key}")] if key else []


def error_fields(error):
    """code/details/initial/trailing of a grpc.RpcError (also a grpc.Call)."""
    fields = {"code": code_name(error.code()), "details": error.details() or None}
    try:
        fields["initial"] = error.initial_metadata()
        fields["trailing"] = error.trailing_metadata()
    except Exception:  # noqa: BLE001 - not every RpcError is a Call
        fields["initial"] = fields["trailing"] = None
    return fields


def unary_line(i, keyed, call_result):
    """One line for a Unary call: call_result is (response, call) or an RpcError."""
    if isinstance(call_result, grpc.RpcError):
        fields = error_fields(call_result)
        return {
            "i": i,
            "keyed": keyed,
            "served_by": served_by(fields["initial"]),
            "code": fields["code"],
            "details": fields["details"],
            "baggage": None,
        }
    response, call = call_result
    seen = decode_json(response).get("metadata", {})
    return {
        "i": i,
        "keyed": keyed,
        "served_by": served_by(call.initial_metadata()),
        "code": code_name(call.code()),
        "details": None,
        "baggage": seen.get("baggage"),
    }


def scenario_unary(client, args):
    unary = client.method("unary_unary", "Unary")
    for i in range(args.count):
        keyed = bool(args.key) and (not args.alternate or i % 2 == 0)
        try:
            result = unary.with_call(
                b"{}", metadata=client.keyed() if keyed else [], timeout=args.timeout
            )
        except grpc.RpcError as error:
            result = error
        emit(**unary_line(i, keyed, result), at=time.time())
        if args.interval_ms:
            time.sleep(args.interval_ms / 1000)


def scenario_concurrent(client, args):
    unary = client.method("unary_unary", "Unary")
    half = args.count // 2
    plan = [True] * half + [False] * (args.count - half)
    random.Random(args.seed).shuffle(plan)
    calls = []
    for i, keyed in enumerate(plan):
        keyed = keyed and bool(args.key)
        metadata = client.keyed() if keyed else []
        if args.hold_ms:
            metadata = metadata + [("x-sleep-ms", str(args.hold_ms))]
        calls.append((i, keyed, unary.future(b"{}", metadata=metadata, timeout=args.timeout)))
    for i, keyed, future in calls:
        try:
            result = (future.result(), future)
        except grpc.RpcError as error:
            result = error
        emit(**unary_line(i, keyed, result))


def scenario_server_stream(client, args):
    stream = client.method("unary_stream", "ServerStream")
    request = json.dumps(
        {"count": args.count, "interval_ms": args.interval_ms, "size": args.size}
    ).encode()
    started = time.monotonic()
    call = stream(request, metadata=client.keyed(), timeout=args.timeout)
    messages = 0
    code = details = None
    try:
        for message in call:
            emit(
                seq=decode_json(message).get("seq"),
                served_by=decode_json(message).get("served_by"),
                bytes=len(message),
            )
            messages += 1
            if args.cancel_after is not None and messages >= args.cancel_after:
                call.cancel()
        code, details = code_name(call.code()), call.details() or None
    except grpc.RpcError as error:
        code, details = code_name(error.code()), error.details() or None
    try:
        initial = call.initial_metadata()
    except Exception:  # noqa: BLE001
        initial = None
    emit(
        done=True,
        code=code,
        details=details,
        messages=messages,
        served_by=served_by(initial),
        seconds=round(time.monotonic() - started, 3),
    )


def scenario_client_stream(client, args):
    stream = client.method("stream_unary", "ClientStream")

    def requests():
        for i in range(args.count):
            if i and args.interval_ms:
                time.sleep(args.interval_ms / 1000)
            yield bytes([i % 256]) * args.size

    fields = {"sent_count": args.count, "sent_bytes": args.count * args.size}
    try:
        response, call = stream.with_call(
            requests(), metadata=client.keyed(), timeout=args.timeout
        )
        reply = decode_json(response)
        emit(
            done=True,
            code=code_name(call.code()),
            details=None,
            served_by=served_by(call.initial_metadata()),
            count=reply.get("count"),
            bytes=reply.get("bytes"),
            **fields,
        )
    except grpc.RpcError as error:
        failed = error_fields(error)
        emit(
            done=True,
            code=failed["code"],
            details=failed["details"],
            served_by=served_by(failed["initial"]),
            count=None,
            bytes=None,
            **fields,
        )


class PingPong:
    """A request iterator that yields the next message only when told to."""

    def __init__(self, messages):
        self.messages = messages
        self.turn = threading.Semaphore(1)
        self.stopped = False

    def __iter__(self):
        for message in self.messages:
            self.turn.acquire()
            if self.stopped:
                return
            yield message

    def next(self):
        self.turn.release()

    def stop(self):
        self.stopped = True
        self.turn.release()


def scenario_bidi(client, args):
    bidi = client.method("stream_stream", "Bidi")
    messages = [f"{i:08d}".encode().ljust(max(args.size, 8), b"m") for i in range(args.count)]
    pingpong = PingPong(messages)
    started = time.monotonic()
    call = bidi(iter(pingpong), metadata=client.keyed(), timeout=args.timeout)
    received = 0
    all_equal = True
    code = details = None
    sent_at = time.monotonic()
    try:
        for echo in call:
            equal = received < len(messages) and echo == messages[received]
            all_equal = all_equal and equal
            emit(seq=received, equal=equal, ms=round((time.monotonic() - sent_at) * 1000, 2))
            received += 1
            sent_at = time.monotonic()
            pingpong.next()
        code, details = code_name(call.code()), call.details() or None
    except grpc.RpcError as error:
        code, details = code_name(error.code()), error.details() or None
    finally:
        pingpong.stop()
    try:
        initial = call.initial_metadata()
    except Exception:  # noqa: BLE001
        initial = None
    emit(
        done=True,
        code=code,
        details=details,
        messages=received,
        all_equal=all_equal and received == len(messages),
        served_by=served_by(initial),
        seconds=round(time.monotonic() - started, 3),
    )


def scenario_big(client, args):
    unary = client.method("unary_unary", "Unary")
    payload = random.Random(args.size).randbytes(args.size)
    started = time.monotonic()
    try:
        response, call = unary.with_call(payload, metadata=client.keyed(), timeout=args.timeout)
        emit(
            code=code_name(call.code()),
            details=None,
            served_by=served_by(call.initial_metadata()),
            sent=len(payload),
            received=len(response),
            equal=response == payload,
            seconds=round(time.monotonic() - started, 3),
        )
    except grpc.RpcError as error:
        failed = error_fields(error)
        emit(
            code=failed["code"],
            details=failed["details"],
            served_by=served_by(failed["initial"]),
            sent=len(payload),
            received=None,
            equal=False,
            seconds=round(time.monotonic() - started, 3),
        )


def scenario_fail(client, args):
    fail = client.method("unary_unary", "Fail")
    request = json.dumps(
        {"code": args.code, "details": args.details, "trailers_only": args.trailers_only}
    ).encode()
    try:
        _, call = fail.with_call(request, metadata=client.keyed(), timeout=args.timeout)
        fields = {
            "code": code_name(call.code()),
            "details": call.details() or None,
            "initial": call.initial_metadata(),
            "trailing": call.trailing_metadata(),
        }
    except grpc.RpcError as error:
        fields = error_fields(error)
    initial, trailing = fields["initial"], fields["trailing"]
    emit(
        code=fields["code"],
        details=fields["details"],
        served_by=served_by(initial) or served_by(trailing),
        initial=metadata_dict(initial),
        trailing=metadata_dict(trailing),
    )


def scenario_cancel(client, args):
    slow = client.method("unary_unary", "Slow")
    started = time.monotonic()
    future = slow.future(
        json.dumps({"ms": SLOW_MS}).encode(), metadata=client.keyed(), timeout=args.timeout
    )
    time.sleep(args.after_ms / 1000)
    future.cancel()
    try:
        future.result()
        code, details = "OK", None
    except grpc.FutureCancelledError:
        code, details = "CANCELLED", None
    except grpc.RpcError as error:
        code, details = code_name(error.code()), error.details() or None
    emit(code=code, details=details, seconds=round(time.monotonic() - started, 3))


def scenario_deadline(client, args):
    slow = client.method("unary_unary", "Slow")
    started = time.monotonic()
    try:
        slow.with_call(
            json.dumps({"ms": SLOW_MS}).encode(),
            metadata=client.keyed(),
            timeout=args.timeout_ms / 1000,
        )
        code, details = "OK", None
    except grpc.RpcError as error:
        code, details = code_name(error.code()), error.details() or None
    emit(code=code, details=details, seconds=round(time.monotonic() - started, 3))


def scenario_raw_metadata(client, args):
    unary = client.method("unary_unary", "Unary")
    metadata = client.keyed()
    for pair in args.metadata:
        name, _, value = pair.partition("=")
        metadata.append((name, bytes.fromhex(value) if name.endswith("-bin") else value))
    try:
        response, call = unary.with_call(b"{}", metadata=metadata, timeout=args.timeout)
        emit(
            code=code_name(call.code()),
            details=None,
            served_by=served_by(call.initial_metadata()),
            metadata=decode_json(response).get("metadata"),
        )
    except grpc.RpcError as error:
        failed = error_fields(error)
        emit(
            code=failed["code"],
            details=failed["details"],
            served_by=served_by(failed["initial"]),
            metadata=None,
        )


SCENARIOS = {
    "unary": scenario_unary,
    "concurrent": scenario_concurrent,
    "server-stream": scenario_server_stream,
    "client-stream": scenario_client_stream,
    "bidi": scenario_bidi,
    "big": scenario_big,
    "fail": scenario_fail,
    "cancel": scenario_cancel,
    "deadline": scenario_deadline,
    "raw-metadata": scenario_raw_metadata,
}


def parse_args():
    parser = argparse.ArgumentParser(
        description="gRPC scenarios; see the module docstring.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="scenario", required=True)

    def add(name, count=None, size=None, interval=False):
        p = sub.add_parser(name)
        p.add_argument("target")
        p.add_argument("--key", default=None)
        p.add_argument("--timeout", type=float, default=30.0)
        if count is not None:
            p.add_argument("--count", type=int, default=count)
        if size is not None:
            p.add_argument("--size", type=int, default=size)
        if interval:
            p.add_argument("--interval-ms", type=float, default=0)
        return p

    add("unary", count=1, interval=True).add_argument("--alternate", action="store_true")
    p = add("concurrent", count=200)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--hold-ms", type=int, default=0)
    add("server-stream", count=3, size=0, interval=True).add_argument(
        "--cancel-after", type=int, default=None
    )
    add("client-stream", count=3, size=16, interval=True)
    add("bidi", count=3, size=16)
    add("big", size=4 * 1024 * 1024)
    p = add("fail")
    p.add_argument("--code", default="NOT_FOUND")
    p.add_argument("--details", default="not here")
    p.add_argument("--trailers-only", action="store_true")
    add("cancel").add_argument("--after-ms", type=float, default=200)
    add("deadline").add_argument("--timeout-ms", type=float, default=200)
    add("raw-metadata").add_argument(
        "-m", "--metadata", action="append", default=[], metavar="NAME=VALUE"
    )
    return parser.parse_args()


def main():
    args = parse_args()
    client = Client(args)
    try:
        SCENARIOS[args.scenario](client, args)
    except Exception as error:  # noqa: BLE001 - reported as data, exit 0
        emit(code="CLIENT_ERROR", error=f"{type(error).__name__}: {error}")
    finally:
        client.channel.close()


if __name__ == "__main__":
    main()
