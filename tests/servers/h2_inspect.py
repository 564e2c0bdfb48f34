#!/usr/bin/env python3
"""h2c (prior knowledge) upstream that reports each request exactly as it
arrived, for detour's HTTP/2 faithfulness tests.

Usage: h2_inspect.py PORT NAME

Listens on [::]:PORT, so on every address (IPv4 and IPv6) of its network
namespace; prints "listening" once bound. Every request is answered 200 with
a JSON body:

  {"served_by": NAME,
   "headers": [[name, value, never_indexed], ...]  the request's header block
              in the order received, pseudo-headers included; never_indexed
              is true when the field came as an HPACK never-indexed literal,
   "body_bytes": N, "body": the request body as text (replacement chars),
   "trailers": [[name, value, never_indexed], ...] or null,
   "response_headers": the response header fields this server sends, as
              [name, value, never_indexed] (":status" first),
   "response_trailers": the response trailers it sends, likewise,
   "informational": the 1xx header blocks it sent first (see below)}

The response carries, besides `content-type` and `x-served-by: NAME`, two
`x-multi` fields ("first", "second") with `x-served-by` between them,
`set-cookie` sent never-indexed, `x-resp-secret` sent never-indexed, and an
empty `x-empty`; after the body come trailers `x-trailer: done` and two
`x-trailer-multi` fields ("1", "2"). A request for `/early-hints` first gets
a 103 Early Hints with `link: </style.css>; rel=preload`.

Header blocks are neither normalised nor secured by h2 (inbound cookie crumbs
stay separate, no field is made never-indexed that was not sent so).

Uses Debian's python3-h2; when `python3` is another interpreter (pyenv) that
lacks it, the script re-runs itself under /usr/bin/python3.
"""
import json
import os
import socket
import sys
import threading

try:
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions
    import hpack
except ImportError:
    SYSTEM_PYTHON = "/usr/bin/python3"
    if os.path.exists(SYSTEM_PYTHON) and os.path.realpath(sys.executable) != os.path.realpath(
        SYSTEM_PYTHON
    ):
        os.execv(SYSTEM_PYTHON, [SYSTEM_PYTHON, *sys.argv])
    raise

NEVER = hpack.NeverIndexedHeaderTuple
PLAIN = hpack.HeaderTuple
EARLY_HINTS = [PLAIN(b":status", b"103"), PLAIN(b"link", b"</style.css>; rel=preload")]
TRAILERS = [
    PLAIN(b"x-trailer", b"done"),
    PLAIN(b"x-trailer-multi", b"1"),
    PLAIN(b"x-trailer-multi", b"2"),
]


def described(headers):
    """[[name, value, never_indexed], ...] as text."""
    if headers is None:
        return None
    return [
        [h[0].decode("utf-8", "replace"), h[1].decode("utf-8", "replace"), isinstance(h, NEVER)]
        for h in headers
    ]


def response_headers(name):
    return [
        PLAIN(b":status", b"200"),
        PLAIN(b"content-type", b"application/json"),
        PLAIN(b"x-multi", b"first"),
        PLAIN(b"x-served-by", name.encode()),
        PLAIN(b"x-multi", b"second"),
        NEVER(b"set-cookie", b"session=s3cr3t; Path=/; HttpOnly"),
        NEVER(b"x-resp-secret", b"resp-token"),
        PLAIN(b"x-empty", b""),
    ]


class Stream:
    def __init__(self):
        self.headers = None
        self.body = b""
        self.trailers = None


def serve(sock, name):
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            normalize_inbound_headers=False,
            normalize_outbound_headers=False,
        )
    )
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    streams = {}
    pending = {}  # stream id -> response body bytes still to send
    while True:
        try:
            data = sock.recv(65536)
        except OSError:
            return
        if not data:
            return
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            sock.sendall(conn.data_to_send())
            return
        for event in events:
            stream_id = getattr(event, "stream_id", None)
            if isinstance(event, h2.events.RequestReceived):
                streams.setdefault(stream_id, Stream()).headers = list(event.headers)
            elif isinstance(event, h2.events.DataReceived):
                streams[stream_id].body += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
            elif isinstance(event, h2.events.TrailersReceived):
                streams[stream_id].trailers = list(event.headers)
            elif isinstance(event, h2.events.StreamEnded):
                stream = streams.pop(stream_id)
                pending[stream_id] = respond(conn, stream_id, stream, name)
            elif isinstance(event, h2.events.StreamReset):
                streams.pop(stream_id, None)
                pending.pop(stream_id, None)
        flush(conn, pending)
        sock.sendall(conn.data_to_send())


def respond(conn, stream_id, stream, name):
    """Sends the head (and early hints); returns the body still to send."""
    path = dict(stream.headers).get(b":path", b"/")
    informational = [EARLY_HINTS] if path.startswith(b"/early-hints") else []
    head = response_headers(name)
    for block in informational:
        conn.send_headers(stream_id, block)
    conn.send_headers(stream_id, head)
    return json.dumps({
        "served_by": name,
        "headers": described(stream.headers),
        "body_bytes": len(stream.body),
        "body": stream.body.decode("utf-8", "replace"),
        "trailers": described(stream.trailers),
        "response_headers": described(head),
        "response_trailers": described(TRAILERS),
        "informational": [described(block) for block in informational],
    }).encode()


def flush(conn, pending):
    """Sends what the flow-control windows allow; trailers after a body."""
    for stream_id, body in list(pending.items()):
        while body:
            size = min(conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size)
            if size <= 0:
                break
            conn.send_data(stream_id, body[:size])
            body = body[size:]
        pending[stream_id] = body
        if not body:
            conn.send_headers(stream_id, TRAILERS, end_stream=True)
            del pending[stream_id]


def main():
    port, name = int(sys.argv[1]), sys.argv[2]
    listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("::", port))
    listener.listen(128)
    print("listening", flush=True)
    while True:
        sock, _ = listener.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=serve, args=(sock, name), daemon=True).start()


if __name__ == "__main__":
    main()
