#!/usr/bin/env python3
"""Raw HTTP/2 (h2c, prior knowledge) client for hostile-client tests.

Usage: h2raw.py SUBCOMMAND HOST PORT [options]

Speaks cleartext HTTP/2 over one plain TCP connection (no Upgrade: the
connection preface comes first). The abusive subcommands write frames by
hand (struct packing, HPACK from python3-hpack) so they can break rules that
python3-h2 would refuse to; `request` is a well-behaved h2.connection client.
Every frame the server sends is parsed and counted; its SETTINGS and PINGs are
acknowledged as a normal client would (except where a subcommand says).

Prints ONE JSON object and exits 0 whenever it ran (a refused connection is
data too). Fields every subcommand reports:
  "connect":      "ok" or the connect error
  "goaway":       {"error_code": NAME, "last_stream_id": N, "debug": TEXT}
                  from the server's (last) GOAWAY, or null
  "closed":       true when the server closed (EOF) or reset the connection
  "end":          how reading stopped: "eof", "reset", "idle" (nothing for
                  --idle seconds), "limit" (--max-seconds), "done"
  "frames":       number of frames received; "frame_types": {NAME: count}
  "rst":          {error code NAME: number of RST_STREAMs received}
  "server_settings": the server's first SETTINGS, {NAME: value}
  "send_error":   null, or the error writing hit (the server had closed)
  "seconds":      run time
Error codes are names: NO_ERROR, PROTOCOL_ERROR, ..., ENHANCE_YOUR_CALM
(an unknown code is given as a number).

Common options: --idle S (default 2: silence that ends reading), --max-seconds
S (default 20), --timeout S (connect/send/recv socket timeout, default 5),
--path P (default /), --authority A (default HOST:PORT), --method M,
--scheme S (default http), --header NAME=VALUE (repeatable; extra request
headers in the order given, e.g. baggage; a name may repeat),
--grpc (POST with content-type application/grpc and te: trailers),
--verbose (each received frame on standard error).

Subcommands and their extra fields:
  rapid-reset HOST PORT --streams N [--then-request] [--batch 50]
              [--reset-after-ms M]
      N requests (HEADERS with END_STREAM), each followed at once by
      RST_STREAM(CANCEL), written --batch pairs at a time. With
      --reset-after-ms, each batch's HEADERS go first and its RST_STREAMs
      only after M ms of reading (the server has accepted the streams by
      then). "sent_streams". With --then-request, one more request
      afterwards: "final": {"status", "rst"} (status null if none).
  continuation-flood HOST PORT --frames N [--fragment-bytes 16] [--end]
      HEADERS without END_HEADERS, then N CONTINUATION frames each holding
      one small literal header; with --end the last one ends the block.
      "sent_frames" (CONTINUATIONs written before an error), "status".
  settings-flood HOST PORT --frames N [--then-request]
      N SETTINGS frames (MAX_CONCURRENT_STREAMS=100). "sent_frames", "acks"
      (SETTINGS ACKs received, including the one for the preface SETTINGS).
  ping-flood HOST PORT --frames N [--then-request]
      N PINGs. "sent_frames", "acks" (PING ACKs received).
      For both, --then-request sends one request on stream 1 once the flood
      was read: "final" as for rapid-reset (null without the option or when
      the connection had closed).
  big-headers HOST PORT --bytes N [--count K]
      One request whose header block (HPACK without Huffman) carries K
      (default 1) extra headers x-big-I totalling N value bytes, split into
      HEADERS + CONTINUATION frames of 16384 bytes. "header_block_bytes",
      "status", "headers" (response), "stream_rst" (code NAME for our
      stream, or null; read for 0.5 s more after a response that ended it).
  invalid-frame HOST PORT [--kind KIND]
      One bad frame after the preface. KIND: data-on-stream-0 (default),
      window-update-zero, settings-bad-length, ping-bad-length,
      headers-even-stream. "kind".
  streams-over-limit HOST PORT --streams N
      Waits for the server's SETTINGS, then opens N streams (HEADERS without
      END_STREAM, default method POST) and never finishes them.
      "max_concurrent_streams" (null if the server set none), "opened",
      "refused" (RST_STREAM REFUSED_STREAM count), "responses" (streams
      that got response HEADERS), "stream_rst" {stream id: code NAME}.
  request HOST PORT [--header NAME=VALUE]... [--path /] [--method GET]
          [--data TEXT | --data-hex HEX | --data-size N] [--grpc]
          [--trailer NAME=VALUE]... [--never-index NAME]... [--index-sensitive]
      One request through h2.connection. "status", "headers" {name: value}
      (repeated names joined with ", "), "body" (UTF-8, replacement chars),
      "body_bytes", "trailers" {name: value} or null, "trailers_only" (the
      response was a single HEADERS frame ending the stream), "stream_rst"
      (code NAME or null). The same heads field by field, in order:
      "header_list" and "trailer_list" (null if none), each
      [[name, value, never_indexed], ...] (never_indexed: the field came as
      an HPACK never-indexed literal), and "informational", the 1xx heads
      before the response, likewise. --data-size N sends N bytes "x". With
      --grpc the data is sent as one gRPC message and "grpc_messages" lists
      the response messages as text. --trailer sends request trailers (a
      HEADERS frame ending the stream) after the body. Never-indexed: h2
      sends authorization, proxy-authorization and cookies under 20 bytes
      never-indexed on its own; --index-sensitive turns that off (they go
      as ordinary indexed literals, and nothing else is normalised either);
      --never-index NAME sends every NAME field never-indexed.

Uses Debian's python3-h2; when `python3` is another interpreter (pyenv) that
lacks it, the script re-runs itself under /usr/bin/python3.
"""
import argparse
import json
import os
import select
import socket
import struct
import sys
import time

try:
    import h2.config
    import h2.connection
    import h2.events
    import hpack
except ImportError:
    SYSTEM_PYTHON = "/usr/bin/python3"
    if os.path.exists(SYSTEM_PYTHON) and os.path.realpath(sys.executable) != os.path.realpath(
        SYSTEM_PYTHON
    ):
        os.execv(SYSTEM_PYTHON, [SYSTEM_PYTHON, *sys.argv])
    raise

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS = 0, 1, 2, 3, 4
PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 5, 6, 7, 8, 9
FRAME_NAMES = [
    "DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS",
    "PUSH_PROMISE", "PING", "GOAWAY", "WINDOW_UPDATE", "CONTINUATION",
]
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

ERROR_NAMES = [
    "NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR",
    "SETTINGS_TIMEOUT", "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM",
    "CANCEL", "COMPRESSION_ERROR", "CONNECT_ERROR", "ENHANCE_YOUR_CALM",
    "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED",
]
CANCEL, REFUSED_STREAM = 8, 7

SETTING_NAMES = {
    1: "HEADER_TABLE_SIZE", 2: "ENABLE_PUSH", 3: "MAX_CONCURRENT_STREAMS",
    4: "INITIAL_WINDOW_SIZE", 5: "MAX_FRAME_SIZE", 6: "MAX_HEADER_LIST_SIZE",
    8: "ENABLE_CONNECT_PROTOCOL", 0xFE03: "GRPC_ALLOW_TRUE_BINARY_METADATA",
}
MAX_CONCURRENT_STREAMS = 3
MAX_FRAME = 16384


def error_name(code):
    return ERROR_NAMES[code] if code < len(ERROR_NAMES) else code


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", kind, flags, stream) + payload


def settings_payload(settings):
    return b"".join(struct.pack(">HI", k, v) for k, v in settings)


def literal(name, value):
    """One HPACK literal header field without indexing, no Huffman."""
    def string(data):
        if len(data) < 127:
            return bytes([len(data)]) + data
        rest, out = len(data) - 127, bytearray([127])
        while rest >= 128:
            out.append(rest % 128 + 128)
            rest //= 128
        out.append(rest)
        return bytes(out) + data
    return b"\x00" + string(name.encode()) + string(value.encode())


def field_list(headers):
    """[[name, value, never_indexed], ...] as text, in order."""
    if headers is None:
        return None
    def text(x):
        return x.decode("utf-8", "replace") if isinstance(x, bytes) else x
    return [[text(h[0]), text(h[1]), isinstance(h, hpack.NeverIndexedHeaderTuple)]
            for h in headers]


def text_dict(pairs):
    out = {}
    for name, value in pairs:
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


class Conn:
    """One TCP connection; parses and counts every frame the server sends."""

    def __init__(self, args):
        self.args = args
        self.started = time.monotonic()
        self.sock = None
        self.report = {
            "connect": "ok", "goaway": None, "closed": False, "end": None,
            "frames": 0, "frame_types": {}, "rst": {}, "server_settings": None,
            "send_error": None,
        }
        self.buffer = b""
        self.decoder = hpack.Decoder()
        self.decoder.max_header_list_size = 1 << 30
        self.encoder = hpack.Encoder()
        self.blocks = {}        # stream -> header block being assembled
        self.block_stream = None
        self.responses = {}     # stream -> list of decoded header lists
        self.header_frames = {}  # stream -> [(flags of HEADERS)]
        self.data = {}          # stream -> bytes
        self.ended = set()      # streams the server ended
        self.stream_rst = {}    # stream -> code
        self.settings_acks = 0
        self.ping_acks = 0
        self.auto_ack = True    # answer SETTINGS and PING as a client would
        self.h2 = None          # an h2 connection fed the same bytes
        self.events = []
        try:
            self.sock = socket.create_connection((args.host, args.port), timeout=args.timeout)
        except OSError as error:
            self.report["connect"] = type(error).__name__

    @property
    def ok(self):
        return self.sock is not None and not self.report["closed"]

    def send(self, data):
        if not self.ok or self.report["send_error"]:
            return False
        try:
            self.sock.sendall(data)
            return True
        except socket.timeout:
            self.report["send_error"] = "timeout"
        except OSError as error:
            self.report["send_error"] = type(error).__name__
        return False

    def preface(self, settings=((2, 0),)):
        return self.send(PREFACE + frame(SETTINGS, 0, 0, settings_payload(settings)))

    def request_headers(self, method=None, end_stream=True):
        args = self.args
        method = method or args.method or ("POST" if args.grpc else "GET")
        headers = [
            (":method", method),
            (":scheme", args.scheme),
            (":path", args.path),
            (":authority", args.authority or f"{args.host}:{args.port}"),
        ]
        if args.grpc:
            headers += [("content-type", "application/grpc"), ("te", "trailers")]
        for pair in args.header:
            name, _, value = pair.partition("=")
            headers.append((name.lower(), value))
        return headers

    def encode(self, headers):
        return self.encoder.encode(headers, huffman=False)

    # --- reading ---------------------------------------------------------------

    def pump(self, idle=None, until=None):
        """Reads frames until the server closes, `idle` seconds of silence
        (0: only what is already there), `until()` is true, or --max-seconds."""
        idle = self.args.idle if idle is None else idle
        if self.sock is None:
            return
        deadline = self.started + self.args.max_seconds
        while not self.report["closed"]:
            if until and until():
                self.report["end"] = "done"
                return
            left = deadline - time.monotonic()
            if left <= 0:
                self.report["end"] = "limit"
                return
            try:
                ready, _, _ = select.select([self.sock], [], [], min(idle, left))
            except (OSError, ValueError):
                ready = [self.sock]
            if not ready:
                self.report["end"] = "idle"
                return
            try:
                chunk = self.sock.recv(1 << 16)
            except socket.timeout:
                self.report["end"] = "idle"
                return
            except ConnectionResetError:
                self.report.update(closed=True, end="reset")
                return
            except OSError as error:
                self.report.update(closed=True, end=type(error).__name__)
                return
            if not chunk:
                self.report.update(closed=True, end="eof")
                return
            self.feed(chunk)

    def feed(self, chunk):
        if self.h2 is not None:
            try:
                self.events += self.h2.receive_data(chunk)
            except Exception as error:  # noqa: BLE001 - h2 objected: keep counting
                self.report["h2_error"] = f"{type(error).__name__}: {error}"
                self.h2 = None
            else:
                outgoing = self.h2.data_to_send()
                if outgoing:
                    self.send(outgoing)
        self.buffer += chunk
        while len(self.buffer) >= 9:
            length = int.from_bytes(self.buffer[:3], "big")
            if len(self.buffer) < 9 + length:
                break
            kind, flags, stream = struct.unpack(">BBI", self.buffer[3:9])
            payload = self.buffer[9:9 + length]
            self.buffer = self.buffer[9 + length:]
            self.on_frame(kind, flags, stream & 0x7FFFFFFF, payload)

    def on_frame(self, kind, flags, stream, payload):
        report = self.report
        report["frames"] += 1
        name = FRAME_NAMES[kind] if kind < len(FRAME_NAMES) else str(kind)
        report["frame_types"][name] = report["frame_types"].get(name, 0) + 1
        if self.args.verbose:
            print(f"< {name} flags={flags:#x} stream={stream} len={len(payload)} "
                  f"{payload[:40].hex()}", file=sys.stderr, flush=True)
        reply = self.auto_ack and self.h2 is None
        if kind == SETTINGS:
            if flags & ACK:
                self.settings_acks += 1
            else:
                values = {}
                for i in range(0, len(payload) - len(payload) % 6, 6):
                    key, value = struct.unpack(">HI", payload[i:i + 6])
                    values[SETTING_NAMES.get(key, str(key))] = value
                if report["server_settings"] is None:
                    report["server_settings"] = values
                if reply:
                    self.send(frame(SETTINGS, ACK, 0))
        elif kind == PING:
            if flags & ACK:
                self.ping_acks += 1
            elif reply:
                self.send(frame(PING, ACK, 0, payload))
        elif kind == GOAWAY and len(payload) >= 8:
            last, code = struct.unpack(">II", payload[:8])
            report["goaway"] = {
                "error_code": error_name(code),
                "last_stream_id": last & 0x7FFFFFFF,
                "debug": payload[8:].decode("utf-8", "replace"),
            }
        elif kind == RST_STREAM and len(payload) >= 4:
            code = error_name(struct.unpack(">I", payload[:4])[0])
            report["rst"][str(code)] = report["rst"].get(str(code), 0) + 1
            self.stream_rst[stream] = code
        elif kind in (HEADERS, PUSH_PROMISE):
            body = payload
            if flags & PADDED:
                pad = body[0]
                body = body[1:len(body) - pad]
            if kind == HEADERS and flags & PRIORITY_FLAG:
                body = body[5:]
            if kind == PUSH_PROMISE:
                body = body[4:]
            if kind == HEADERS:
                self.header_frames.setdefault(stream, []).append(flags)
                if flags & END_STREAM:
                    self.ended.add(stream)
            self.blocks[stream] = body
            self.block_stream = stream
            if flags & END_HEADERS:
                self.end_block(stream)
        elif kind == CONTINUATION and stream in self.blocks:
            self.blocks[stream] += payload
            if flags & END_HEADERS:
                self.end_block(stream)
        elif kind == DATA:
            body = payload
            if flags & PADDED and body:
                body = body[1:len(body) - body[0]]
            self.data[stream] = self.data.get(stream, b"") + body
            if flags & END_STREAM:
                self.ended.add(stream)
            if reply and payload:
                # Keep the server's windows open, as a client that reads would.
                increment = struct.pack(">I", len(payload))
                self.send(frame(WINDOW_UPDATE, 0, 0, increment)
                          + frame(WINDOW_UPDATE, 0, stream, increment))

    def end_block(self, stream):
        block = self.blocks.pop(stream)
        try:
            headers = self.decoder.decode(block, raw=True)
        except Exception as error:  # noqa: BLE001 - report, keep reading
            self.report["hpack_error"] = f"{type(error).__name__}: {error}"
            headers = []
        if self.args.verbose:
            print(f"< headers stream={stream} {text_dict(headers)}", file=sys.stderr, flush=True)
        self.responses.setdefault(stream, []).append(headers)

    def status(self, stream):
        for headers in self.responses.get(stream, []):
            for name, value in headers:
                if name == b":status":
                    return int(value)
        return None

    def stream_done(self, stream):
        return stream in self.ended or stream in self.stream_rst

    def finish(self, **fields):
        if self.sock is not None:
            self.sock.close()
        self.report["seconds"] = round(time.monotonic() - self.started, 3)
        self.report.update(fields)
        print(json.dumps(self.report), flush=True)


def batches(items, size):
    for i in range(0, len(items), size):
        yield items[i:i + size]


# --- subcommands ---------------------------------------------------------------


def cmd_rapid_reset(conn, args):
    conn.preface()
    conn.pump(idle=0.2, until=lambda: conn.report["server_settings"] is not None)
    sent = 0
    streams = [1 + 2 * i for i in range(args.streams)]
    for batch in batches(streams, args.batch):
        heads = [frame(HEADERS, END_HEADERS | END_STREAM, s,
                       conn.encode(conn.request_headers())) for s in batch]
        resets = [frame(RST_STREAM, 0, s, struct.pack(">I", CANCEL)) for s in batch]
        if args.reset_after_ms:
            # Let the server accept the streams before they are reset.
            if not conn.send(b"".join(heads)):
                break
            conn.pump(idle=args.reset_after_ms / 1000)
            data = b"".join(resets)
        else:
            data = b"".join(h + r for h, r in zip(heads, resets))
        if not conn.send(data):
            break
        sent += len(batch)
        conn.pump(idle=0)
    final = final_request(conn, 1 + 2 * args.streams) if args.then_request else None
    conn.pump()
    conn.finish(sent_streams=sent, final=final)


def final_request(conn, stream):
    """One more request on the same connection, if it is still open:
    {"status", "rst"} (status null if no response came), or None."""
    if not conn.ok or conn.report["send_error"]:
        return None
    conn.send(frame(HEADERS, END_HEADERS | END_STREAM, stream,
                    conn.encode(conn.request_headers())))
    conn.pump(until=lambda: conn.stream_done(stream))
    return {"status": conn.status(stream), "rst": conn.stream_rst.get(stream)}


def cmd_continuation_flood(conn, args):
    conn.preface()
    conn.pump(idle=0.2, until=lambda: conn.report["server_settings"] is not None)
    conn.send(frame(HEADERS, END_STREAM, 1, conn.encode(conn.request_headers())))
    sent = 0
    value = "a" * args.fragment_bytes
    numbers = list(range(args.frames))
    for batch in batches(numbers, 200):
        data = b"".join(
            frame(CONTINUATION, END_HEADERS if args.end and i == args.frames - 1 else 0, 1,
                  literal(f"x-c{i}", value))
            for i in batch
        )
        if not conn.send(data):
            break
        sent += len(batch)
        conn.pump(idle=0)
    conn.pump()
    conn.finish(sent_frames=sent, status=conn.status(1))


def cmd_settings_flood(conn, args):
    conn.preface()
    sent = 0
    one = frame(SETTINGS, 0, 0, settings_payload([(MAX_CONCURRENT_STREAMS, 100)]))
    for batch in batches(range(args.frames), 500):
        if not conn.send(one * len(batch)):
            break
        sent += len(batch)
    conn.pump()
    final = final_request(conn, 1) if args.then_request else None
    conn.finish(sent_frames=sent, acks=conn.settings_acks, final=final)


def cmd_ping_flood(conn, args):
    conn.preface()
    sent = 0
    for batch in batches(range(args.frames), 500):
        if not conn.send(b"".join(frame(PING, 0, 0, struct.pack(">Q", i)) for i in batch)):
            break
        sent += len(batch)
    conn.pump()
    final = final_request(conn, 1) if args.then_request else None
    conn.finish(sent_frames=sent, acks=conn.ping_acks, final=final)


def cmd_big_headers(conn, args):
    conn.preface()
    conn.pump(idle=0.2, until=lambda: conn.report["server_settings"] is not None)
    headers = conn.request_headers()
    count = max(args.count, 1)
    for i in range(count):
        size = args.bytes // count + (1 if i < args.bytes % count else 0)
        headers.append((f"x-big-{i}", "b" * size))
    block = conn.encode(headers)
    pieces = [block[i:i + MAX_FRAME] for i in range(0, len(block), MAX_FRAME)] or [b""]
    data = b""
    for n, piece in enumerate(pieces):
        last = END_HEADERS if n == len(pieces) - 1 else 0
        data += frame(HEADERS, last | END_STREAM, 1, piece) if n == 0 else \
            frame(CONTINUATION, last, 1, piece)
    conn.send(data)
    conn.pump(until=lambda: conn.stream_done(1))
    # A RST_STREAM may follow a response that ended the stream.
    conn.pump(idle=0.5)
    response = conn.responses.get(1, [])
    conn.finish(
        header_block_bytes=len(block),
        status=conn.status(1),
        headers=text_dict(response[0]) if response else None,
        stream_rst=conn.stream_rst.get(1),
    )


INVALID = {
    "data-on-stream-0": lambda: frame(DATA, 0, 0, b"hello"),
    "window-update-zero": lambda: frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0)),
    "settings-bad-length": lambda: frame(SETTINGS, 0, 0, b"\x00\x03\x00\x00\x00"),
    "ping-bad-length": lambda: frame(PING, 0, 0, b"\x00" * 7),
    "headers-even-stream": None,  # needs the encoder, built below
}


def cmd_invalid_frame(conn, args):
    conn.preface()
    conn.pump(idle=0.2, until=lambda: conn.report["server_settings"] is not None)
    if args.kind == "headers-even-stream":
        bad = frame(HEADERS, END_HEADERS | END_STREAM, 2, conn.encode(conn.request_headers()))
    else:
        bad = INVALID[args.kind]()
    conn.send(bad)
    conn.pump()
    conn.finish(kind=args.kind)


def cmd_streams_over_limit(conn, args):
    conn.preface()
    conn.pump(until=lambda: conn.report["server_settings"] is not None)
    # Let the server see our ACK of its SETTINGS before the streams come.
    conn.pump(idle=0.2)
    limit = (conn.report["server_settings"] or {}).get("MAX_CONCURRENT_STREAMS")
    method = args.method or "POST"
    streams = [1 + 2 * i for i in range(args.streams)]
    opened = 0
    for batch in batches(streams, 50):
        data = b"".join(
            frame(HEADERS, END_HEADERS, s, conn.encode(conn.request_headers(method)))
            for s in batch
        )
        if not conn.send(data):
            break
        opened += len(batch)
        conn.pump(idle=0)
    conn.pump()
    conn.finish(
        max_concurrent_streams=limit,
        opened=opened,
        refused=sum(1 for c in conn.stream_rst.values() if c == "REFUSED_STREAM"),
        responses=sum(1 for s in streams if conn.responses.get(s)),
        stream_rst={str(s): c for s, c in sorted(conn.stream_rst.items())},
    )


def cmd_request(conn, args):
    if conn.sock is None:
        conn.finish(status=None)
        return
    h2conn = h2.connection.H2Connection(
        h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            # Cookie fields as sent, not joined into one never-indexed field.
            normalize_inbound_headers=False,
            # No never-indexed fields but those --never-index names.
            normalize_outbound_headers=not args.index_sensitive,
        )
    )
    conn.h2 = h2conn
    h2conn.initiate_connection()
    conn.send(h2conn.data_to_send())
    if args.data_hex is not None:
        body = bytes.fromhex(args.data_hex)
    elif args.data is not None:
        body = args.data.encode()
    elif args.data_size is not None:
        body = b"x" * args.data_size
    else:
        body = None
    if body is not None and args.grpc:
        body = b"\x00" + struct.pack(">I", len(body)) + body
    def marked(headers):
        return [hpack.NeverIndexedHeaderTuple(n, v) if n in args.never_index
                else hpack.HeaderTuple(n, v) for n, v in headers]

    trailers = marked([(n.lower(), v) for n, _, v in (t.partition("=") for t in args.trailer)])
    stream = h2conn.get_next_available_stream_id()
    h2conn.send_headers(stream, marked(conn.request_headers()),
                        end_stream=body is None and not trailers)
    conn.send(h2conn.data_to_send())
    result = {"status": None, "headers": None, "body": b"", "trailers": None,
              "trailers_only": False, "stream_rst": None, "header_list": None,
              "trailer_list": None, "informational": []}
    done = []

    def handle():
        events, conn.events = conn.events, []
        for event in events:
            if getattr(event, "stream_id", stream) != stream:
                continue
            if isinstance(event, h2.events.InformationalResponseReceived):
                result["informational"].append(field_list(event.headers))
            elif isinstance(event, h2.events.ResponseReceived):
                result["header_list"] = field_list(event.headers)
                headers = text_dict(event.headers)
                result["status"] = int(headers.get(":status", 0)) or None
                result["headers"] = headers
                result["trailers_only"] = event.stream_ended is not None
            elif isinstance(event, h2.events.DataReceived):
                result["body"] += event.data
                h2conn.acknowledge_received_data(event.flow_controlled_length, stream)
            elif isinstance(event, h2.events.TrailersReceived):
                result["trailers"] = text_dict(event.headers)
                result["trailer_list"] = field_list(event.headers)
            elif isinstance(event, h2.events.StreamReset):
                result["stream_rst"] = error_name(int(event.error_code))
                done.append(True)
            elif isinstance(event, h2.events.StreamEnded):
                done.append(True)
        outgoing = h2conn.data_to_send() if conn.h2 is not None else b""
        if outgoing:
            conn.send(outgoing)
        return bool(done)

    # Send the body within the flow-control window, reading as needed.
    offset = 0
    while body is not None and offset < len(body) and conn.ok and not done:
        window = min(h2conn.local_flow_control_window(stream), h2conn.max_outbound_frame_size)
        if window <= 0:
            before = conn.report["frames"]
            conn.pump(until=lambda: handle() or h2conn.local_flow_control_window(stream) > 0)
            if conn.report["frames"] == before and conn.report["end"] == "idle":
                break
            continue
        chunk = body[offset:offset + window]
        offset += len(chunk)
        h2conn.send_data(stream, chunk, end_stream=offset >= len(body) and not trailers)
        conn.send(h2conn.data_to_send())
    if trailers and conn.ok and not done:
        h2conn.send_headers(stream, trailers, end_stream=True)
        conn.send(h2conn.data_to_send())
    conn.pump(until=handle)
    handle()
    data = result.pop("body")
    fields = dict(result, body=data.decode("utf-8", "replace"), body_bytes=len(data))
    if args.grpc:
        messages, rest = [], data
        while len(rest) >= 5:
            size = struct.unpack(">I", rest[1:5])[0]
            messages.append(rest[5:5 + size].decode("utf-8", "replace"))
            rest = rest[5 + size:]
        fields["grpc_messages"] = messages
    conn.finish(**fields)


COMMANDS = {
    "rapid-reset": cmd_rapid_reset,
    "continuation-flood": cmd_continuation_flood,
    "settings-flood": cmd_settings_flood,
    "ping-flood": cmd_ping_flood,
    "big-headers": cmd_big_headers,
    "invalid-frame": cmd_invalid_frame,
    "streams-over-limit": cmd_streams_over_limit,
    "request": cmd_request,
}


def parse_args():
    parser = argparse.ArgumentParser(description="Raw HTTP/2 client; see the module docstring.")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name):
        p = sub.add_parser(name)
        p.add_argument("host")
        p.add_argument("port", type=int)
        p.add_argument("--idle", type=float, default=2.0)
        p.add_argument("--max-seconds", type=float, default=20.0)
        p.add_argument("--timeout", type=float, default=5.0)
        p.add_argument("--path", default="/")
        p.add_argument("--authority", default=None)
        p.add_argument("--method", default=None)
        p.add_argument("--scheme", default="http")
        p.add_argument("--header", action="append", default=[], metavar="NAME=VALUE")
        p.add_argument("--grpc", action="store_true")
        p.add_argument("--verbose", action="store_true")
        return p

    p = add("rapid-reset")
    p.add_argument("--streams", type=int, default=1000)
    p.add_argument("--then-request", action="store_true")
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--reset-after-ms", type=float, default=0)
    p = add("continuation-flood")
    p.add_argument("--frames", type=int, default=10000)
    p.add_argument("--fragment-bytes", type=int, default=16)
    p.add_argument("--end", action="store_true")
    for name in ("settings-flood", "ping-flood"):
        p = add(name)
        p.add_argument("--frames", type=int, default=10000)
        p.add_argument("--then-request", action="store_true")
    p = add("big-headers")
    p.add_argument("--bytes", type=int, default=65536)
    p.add_argument("--count", type=int, default=1)
    add("invalid-frame").add_argument(
        "--kind", default="data-on-stream-0", choices=sorted(INVALID)
    )
    add("streams-over-limit").add_argument("--streams", type=int, default=200)
    p = add("request")
    p.add_argument("--data", default=None)
    p.add_argument("--data-hex", default=None)
    p.add_argument("--data-size", type=int, default=None)
    p.add_argument("--trailer", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--never-index", action="append", default=[], metavar="NAME")
    p.add_argument("--index-sensitive", action="store_true")
    return parser.parse_args()


def main():
    args = parse_args()
    conn = Conn(args)
    try:
        COMMANDS[args.command](conn, args)
    except Exception as error:  # noqa: BLE001 - reported as data, exit 0
        conn.finish(error=f"{type(error).__name__}: {error}")


if __name__ == "__main__":
    main()
