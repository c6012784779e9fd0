"""FaultProxy: an HTTP/1.1 proxy on 127.0.0.1 that injects store faults on real sockets.

Put in front of the moto S3 server (point ``AWS_ENDPOINT_URL_S3`` at ``proxy.url``), it
forwards each request on a fresh upstream connection and, on demand, answers the next
requests with a 5xx (S3's XML error body), cuts the next response bodies after some bytes
(closing the client's connection mid-body), or throttles responses whose path matches.
One thread per client connection; ``stop`` closes every socket it opened.

Relay: a plain byte relay for any TCP service, which can be cut off and mended.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
from collections.abc import Callable
from dataclasses import dataclass

_HEAD_LIMIT = 64 * 1024
_CHUNK = 64 * 1024
_REASONS = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
_S3_CODES = {500: "InternalError", 503: "SlowDown"}


@dataclass
class _Message:
    head: bytes
    """Start line and headers, without the blank line."""
    start: str
    headers: dict[str, str]
    """Lower-cased names."""


def _read_head(sock: socket.socket, buffered: bytearray) -> _Message | None:
    """The next message head from ``sock`` (None at a clean end of the connection)."""
    while b"\r\n\r\n" not in buffered:
        if len(buffered) > _HEAD_LIMIT:
            raise ConnectionError("message head too large")
        data = sock.recv(_CHUNK)
        if not data:
            if buffered:
                raise ConnectionError("connection closed inside a message head")
            return None
        buffered += data
    head, _, rest = bytes(buffered).partition(b"\r\n\r\n")
    buffered[:] = rest
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return _Message(head, lines[0], headers)


def _read_exactly(sock: socket.socket, buffered: bytearray, size: int) -> bytes:
    while len(buffered) < size:
        data = sock.recv(_CHUNK)
        if not data:
            raise ConnectionError("connection closed inside a body")
        buffered += data
    body = bytes(buffered[:size])
    del buffered[:size]
    return body


class FaultProxy:
    """A fault-injecting HTTP proxy in front of ``upstream_host:upstream_port``."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._lock = threading.Lock()
        self._fail: list[int] = []  # statuses for the next requests
        self._cuts: list[int] = []  # byte counts after which the next bodies are cut
        self._slow: dict[str, int] = {}  # path substring -> bytes per second
        self._stopping = threading.Event()
        self._sockets: set[socket.socket] = set()
        self.requests = 0
        """Requests received, faults included."""
        self._server = _server(self._serve_connection)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            _close(sock)
        self._thread.join(10)

    def fail_next(self, n: int, status: int = 503) -> None:
        """Answer the next ``n`` requests with ``status`` and an S3 XML error body."""
        with self._lock:
            self._fail.extend([status] * n)

    def cut_next(self, n: int, after_bytes: int) -> None:
        """Forward, but close the connection after ``after_bytes`` bytes of each of the next
        ``n`` response bodies that are longer than that."""
        with self._lock:
            self._cuts.extend([after_bytes] * n)

    def slow(self, path_substring: str, bytes_per_s: int) -> None:
        """Send the bodies of responses to requests whose path contains it at this rate."""
        with self._lock:
            self._slow[path_substring] = bytes_per_s

    def clear(self) -> None:
        with self._lock:
            self._fail.clear()
            self._cuts.clear()
            self._slow.clear()

    # --- one client connection ------------------------------------------------------------

    def _serve_connection(self, client: socket.socket) -> None:
        self._track(client)
        buffered = bytearray()
        try:
            while not self._stopping.is_set():
                request = _read_head(client, buffered)
                if request is None:
                    return
                body = self._request_body(client, buffered, request)
                if not self._answer(client, request, body):
                    return
        except OSError:
            return  # the client went away, or stop() closed the socket
        finally:
            self._untrack(client)
            _close(client)

    def _request_body(self, client: socket.socket, buffered: bytearray, req: _Message) -> bytes:
        if req.headers.get("expect", "").lower() == "100-continue":
            client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        return _read_exactly(client, buffered, int(req.headers.get("content-length", "0")))

    def _answer(self, client: socket.socket, request: _Message, body: bytes) -> bool:
        """Answer one request; False when the client connection must be closed."""
        method, path = [*request.start.split(" "), "", ""][:2]
        with self._lock:
            self.requests += 1
            status = self._fail.pop(0) if self._fail else 0
            rate = next((r for s, r in self._slow.items() if s in path), 0)
        if status:
            client.sendall(_s3_error(status, path))
            return True
        return self._forward(client, request, body, method, rate)

    def _forward(
        self, client: socket.socket, request: _Message, body: bytes, method: str, rate: int
    ) -> bool:
        upstream = socket.create_connection(self.upstream, timeout=30)
        self._track(upstream)
        try:
            upstream.sendall(_with_close(request.head) + b"\r\n\r\n" + body)
            buffered = bytearray()
            response = _read_head(upstream, buffered)
            if response is None:
                return False
            length = _body_length(method, response)
            client.sendall(response.head + b"\r\n\r\n")
            return self._relay_body(client, upstream, buffered, length, rate)
        finally:
            self._untrack(upstream)
            _close(upstream)

    def _relay_body(
        self,
        client: socket.socket,
        upstream: socket.socket,
        buffered: bytearray,
        length: int | None,
        rate: int,
    ) -> bool:
        cut = self._take_cut(length)
        sent = 0
        step = max(1, rate // 10) if rate else _CHUNK
        while length is None or sent < length:
            if not buffered:
                data = upstream.recv(_CHUNK)
                if not data:
                    return False  # upstream ended the body by closing
                buffered += data
            piece = bytes(buffered[: min(step, (length - sent) if length is not None else step)])
            if cut is not None and sent + len(piece) >= cut:
                client.sendall(piece[: cut - sent])
                client.shutdown(socket.SHUT_RDWR)
                return False
            del buffered[: len(piece)]
            client.sendall(piece)
            sent += len(piece)
            if rate and self._stopping.wait(len(piece) / rate):
                return False
        return length is not None

    def _take_cut(self, length: int | None) -> int | None:
        with self._lock:
            if self._cuts and length is not None and length > self._cuts[0]:
                return self._cuts.pop(0)
        return None

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)


def _with_close(head: bytes) -> bytes:
    """The request head with ``Connection: close``: one upstream connection per request."""
    lines = [
        line
        for line in head.split(b"\r\n")
        if not line.lower().startswith((b"connection:", b"expect:"))
    ]
    return b"\r\n".join([*lines, b"Connection: close"])


def _body_length(method: str, response: _Message) -> int | None:
    """Bytes of body that follow the head; None: until the upstream closes."""
    status = int(response.start.split(" ")[1])
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return 0
    if "content-length" in response.headers:
        return int(response.headers["content-length"])
    return None


def _s3_error(status: int, path: str) -> bytes:
    code = _S3_CODES.get(status, "InternalError")
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>injected fault</Message>"
        f"<Resource>{path}</Resource><RequestId>faultproxy</RequestId></Error>"
    ).encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        "Content-Type: application/xml\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


def _server(serve: Callable[[socket.socket], None]) -> socketserver.ThreadingTCPServer:
    """A listener on a free loopback port, one daemon thread per connection."""

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            serve(self.request)

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

    return Server(("127.0.0.1", 0), Handler)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()


class Relay:
    """A byte relay on 127.0.0.1 in front of any TCP service (a gRPC port). ``cut()`` closes
    every connection through it and closes each new one at once, as a peer that is
    unreachable does; ``mend()`` lets them through again."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._cut = False
        self._server = _server(self._serve_connection)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> Relay:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.cut()
        self._thread.join(10)

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            _close(sock)

    def mend(self) -> None:
        with self._lock:
            self._cut = False

    def _serve_connection(self, client: socket.socket) -> None:
        with self._lock:
            if self._cut:
                _close(client)
                return
        try:
            upstream = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            _close(client)
            return
        upstream.settimeout(None)
        with self._lock:
            self._sockets.update((client, upstream))
        back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
        back.start()
        _pump(client, upstream)
        back.join()
        with self._lock:
            self._sockets.difference_update((client, upstream))
        _close(client)
        _close(upstream)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy until either side closes; then shut the other down so its pump ends too."""
    with contextlib.suppress(OSError):
        while data := source.recv(_CHUNK):
            sink.sendall(data)
    for sock in (source, sink):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
