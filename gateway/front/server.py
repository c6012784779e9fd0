"""The HTTP/1.1 server of both listeners: parse, route once, call the handler, write.

aiohttp's server machinery (request objects, routing, middleware, stream writer) costs
several times what a bare reverse proxy spends per request, and on a small host every
microsecond the gateway burns is taken from Triton. So each listener is served by this
protocol on httptools: it reads a request into a ``Call`` (bounded in size and time),
routes it through the one table (``routes``), awaits the route's transport-free handler
and writes its ``Reply`` in one call. Errors take the shape of the route's protocol
(``replies``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from contextlib import suppress
from dataclasses import dataclass
from http import HTTPStatus

import httptools

from gateway.codecs import parse_count
from gateway.errors import (
    GatewayError,
    HeadersTooLarge,
    PayloadTooLarge,
    TargetTooLong,
    UnknownOperation,
    ValidationError,
)
from gateway.front.call import Call
from gateway.front.context import Context
from gateway.front.replies import Reply, error_reply, internal_failure, new_request_id
from gateway.front.routes import PUBLIC, ROUTER, Router
from gateway.log import CACHE_HIT, MODEL, REQUEST_ID
from gateway.settings import Settings

log = logging.getLogger(__name__)
MAX_PIPELINED = 16
LINGER_S = 2.0
LINGER_BYTES = 64 << 20
"""After refusing a request, its unread bytes are drained for up to LINGER_S seconds and
LINGER_BYTES bytes before the close (so the client reads the answer, not a reset): a client
that sends a whole oversized body before reading, as boto3 does, still gets its 413.
Draining only counts bytes; the time bound is what holds a connection."""
_NEVER = float("inf")
_STATUS = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n" for s in HTTPStatus}


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client may hold of the front: sizes, time and connections (the defaults, and
    their documentation, are the Settings fields of the same names)."""

    max_request_line: int
    max_header_size: int
    max_header_count: int
    header_timeout: float
    body_timeout: float
    keepalive_timeout: float
    max_connections: int

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(
            settings.max_request_line,
            settings.max_header_size,
            settings.max_header_count,
            settings.header_timeout,
            settings.body_timeout,
            settings.keepalive_timeout,
            settings.max_connections,
        )

    @property
    def sweep_interval(self) -> float:
        """Deadlines are checked this often (one pass over the connections, no timers)."""
        shortest = min(self.header_timeout, self.body_timeout, self.keepalive_timeout)
        return max(0.05, min(1.0, shortest / 4))


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing; the reason is on the connection."""


class FrontServer:
    """One listener's connections. ``scope``: which of the route table's routes it serves."""

    def __init__(
        self,
        context: Context,
        scope: str = PUBLIC,
        limits: Limits | None = None,
        router: Router = ROUTER,
    ) -> None:
        self.context = context
        self.scope = scope
        self.limits = limits or Limits.of(context.settings)
        self.router = router
        self.max_body_size = context.settings.max_body_size
        self.ready_timeout = context.settings.model_ready_timeout
        self.connections: set[Connection] = set()
        self.closing = False
        self._drained = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._sweeper = self._loop.call_later(self.limits.sweep_interval, self._sweep)

    def _sweep(self) -> None:
        """Close the connections whose deadline passed: one pass a tick, no per-request timer."""
        self._sweeper = self._loop.call_later(self.limits.sweep_interval, self._sweep)
        now = self._loop.time()
        for connection in [c for c in self.connections if c.expired(now)]:
            connection.timed_out()

    def discard(self, connection: Connection) -> None:
        self.connections.discard(connection)
        if self.closing and not self.connections:
            self._drained.set()

    async def answer(self, call: Call) -> Reply:
        """Route ``call`` once and run its handler; errors in the route's protocol's shape."""
        rid = call.rid = call.rid or new_request_id()
        REQUEST_ID.set(rid)
        MODEL.set("-")
        CACHE_HIT.set(None)
        try:
            if call.refusal is not None:
                raise call.refusal
            route, call.path, call.query, call.params = self.router.resolve(
                call.method, call.target
            )
            if route is None or self.scope not in route.scopes:
                method = call.method.decode("latin-1")
                raise UnknownOperation(f"No route for {method} {call.path[:200]} on this port.")
            return await route.handler(self.context, call)
        except GatewayError as exc:
            return _error(call, exc)
        except Exception:
            log.exception("request %s failed", rid)
            return _error(call, internal_failure(rid))

    def protocol(self) -> Connection:
        return Connection(self)

    async def close(self, grace_s: float) -> None:
        """Let requests in flight finish (up to ``grace_s``), then drop every connection."""
        self.closing = True
        self._sweeper.cancel()
        if not self.connections:
            return
        for connection in list(self.connections):
            connection.close_when_idle()
        with suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), grace_s)
        for connection in list(self.connections):
            connection.abort()


class Connection(asyncio.Protocol):
    def __init__(self, front: FrontServer) -> None:
        self._front = front
        self._context = front.context
        self._limits = front.limits
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._pending: deque[Call] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._deadline = _NEVER
        """When the client's turn (head, body, idle) is up; the front's sweep enforces it."""
        self._stalled = _NEVER
        """When a reply the client does not read is given up on."""
        self._in_message = False
        self._in_head = False
        self._head_bytes = 0
        self._head_limit = self._limits.max_request_line + self._limits.max_header_size
        self._length_digits = len(str(front.max_body_size))
        self._refusal: GatewayError | None = None
        self._lingering = False
        self._drained = 0
        self._write_paused = False
        self._writable: asyncio.Future[None] | None = None
        self._eof = False
        self._reset()

    def _reset(self) -> None:
        self._url: list[bytes] = []
        self._url_size = 0
        self._headers: dict[str, str] = {}
        self._header_size = 0
        self._header_count = 0
        self._body: list[bytes] = []
        self._size = 0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        if len(self._front.connections) >= self._limits.max_connections:
            transport.close()  # over the cap: refused at once, the loop carries on
            return
        self._front.connections.add(self)
        self._deadline = self._loop.time() + self._limits.header_timeout

    def connection_lost(self, exc: Exception | None) -> None:
        self._front.discard(self)
        self._pending.clear()
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        if self._worker is not None:
            self._worker.cancel()  # the client is gone; a model load it started goes on

    def data_received(self, data: bytes) -> None:
        if self._lingering:  # drained: the connection closes once the refusal is written
            self._drained += len(data)
            if self._drained > LINGER_BYTES and self._transport is not None:
                self._transport.abort()
            return
        body_before = self._size
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(ValidationError("Protocol upgrades are not supported."))
        except httptools.HttpParserError as exc:
            self._refuse(self._refusal or ValidationError(f"Malformed HTTP request: {exc}"))
        else:
            if self._in_message:  # httptools buffers header and trailer lines itself: cap them
                self._count_head(len(data) - (self._size - body_before))

    def _count_head(self, size: int) -> None:
        """Bytes of a request other than its body (head, chunk framing, trailers), counted
        over reads the request spans whole (one begun in this read counts from the next)."""
        if self._head_bytes < 0:
            self._head_bytes = 0
            return
        self._head_bytes += size
        limit = self._head_limit if self._in_head else self._head_limit + self._front.max_body_size
        if self._head_bytes > limit:
            self._refuse(HeadersTooLarge("The request head or trailers are too large."))

    def eof_received(self) -> bool:
        """A client that half-closed after its request still gets the answer."""
        self._eof = True
        return not self._lingering and (self._worker is not None or bool(self._pending))

    def pause_writing(self) -> None:
        """The client does not read its answers: stop reading its requests until it does."""
        self._write_paused = True
        self._stalled = self._loop.time() + self._limits.body_timeout
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._stalled = _NEVER
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        if self._transport is not None and len(self._pending) < MAX_PIPELINED:
            self._transport.resume_reading()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._in_message = self._in_head = True
        self._head_bytes = -1  # begun in the read being parsed
        self._deadline = self._loop.time() + self._limits.header_timeout

    def on_url(self, url: bytes) -> None:
        self._url.append(url)
        self._url_size += len(url)
        if self._url_size > self._limits.max_request_line:
            self._stop(TargetTooLong("The request line is too long."))

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            return  # a chunked trailer: never a request header
        self._header_size += len(name) + len(value) + 4
        self._header_count += 1
        if (
            self._header_size > self._limits.max_header_size
            or self._header_count > self._limits.max_header_count
        ):
            self._stop(HeadersTooLarge("The request has too many or too large headers."))
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._deadline = self._loop.time() + self._limits.body_timeout
        length = self._headers.get("content-length")
        if (
            length is not None
            and len(length) >= self._length_digits  # shorter cannot be over the limit
            and (parse_count(length) or 0) > self._front.max_body_size
        ):
            self._stop(self._too_large())  # before any 100 Continue: the body is not wanted
        if (
            self._headers.get("expect", "").lower() == "100-continue"
            and self._transport
            and self._worker is None  # not amid the answers to earlier pipelined requests
        ):
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self._front.max_body_size:
            self._stop(self._too_large())
        self._body.append(body)
        self._deadline = self._loop.time() + self._limits.body_timeout

    def on_message_complete(self) -> None:
        self._in_message = False
        self._deadline = _NEVER
        request = Call(
            method=self._parser.get_method(),
            target=b"".join(self._url),
            headers=self._headers,
            body=b"".join(self._body),
            keep_alive=self._parser.should_keep_alive(),
            deadline=self._loop.time() + self._front.ready_timeout,
        )
        self._reset()
        self._queue(request)

    def _too_large(self) -> PayloadTooLarge:
        limit = self._front.max_body_size
        return PayloadTooLarge(f"Request body is too large: the limit is {limit} bytes.")

    def _stop(self, refusal: GatewayError) -> None:
        self._refusal = refusal
        raise _Refused

    def _refuse(self, refusal: GatewayError) -> None:
        """Answer ``refusal`` after the requests before it, then close; read nothing more."""
        if self._lingering or self._transport is None or self._transport.is_closing():
            return
        self._lingering = True
        # What is known of the request: its method for the metrics, its target for the shape
        # of the answer (KServe's or SageMaker's).
        method = self._parser.get_method() if self._in_message else b""
        url = b"".join(self._url) if self._in_message else b""
        self._queue(Call(method, url, {}, b"", False, 0.0, refusal))

    def _queue(self, request: Call) -> None:
        self._pending.append(request)
        if len(self._pending) >= MAX_PIPELINED and self._transport is not None:
            self._transport.pause_reading()
        if self._worker is None:
            self._worker = self._loop.create_task(self._work())

    # deadlines

    def expired(self, now: float) -> bool:
        return self._deadline < now or self._stalled < now

    def timed_out(self) -> None:
        """Head, body or idle time is up, or the client stopped reading: drop it."""
        if self._transport is None:
            return
        if self._stalled < _NEVER or self._lingering or self._transport.is_closing():
            self._transport.abort()  # a close would wait for a client that does not read
        else:
            self._transport.close()

    # serving

    async def _work(self) -> None:
        """Answer queued requests in order (HTTP/1.1 pipelining keeps replies ordered)."""
        assert self._transport is not None
        while self._pending:
            request = self._pending.popleft()
            reply = await self._handle(request)
            if self._write_paused:
                self._writable = self._loop.create_future()
                await self._writable
            keep_alive = request.keep_alive and not self._front.closing
            self._write(reply, keep_alive, request.method == b"HEAD")
            if request.refusal is not None:
                self._linger()
                break
            if not keep_alive:
                self._transport.close()
                break
            if len(self._pending) < MAX_PIPELINED and not self._write_paused:
                self._transport.resume_reading()
        self._worker = None
        if self._eof and not self._lingering:
            self._transport.close()
        elif not self._in_message and not self._lingering:
            self._deadline = self._loop.time() + self._limits.keepalive_timeout

    def _linger(self) -> None:
        """Half-close after a refusal and drain what the client still sends, for a while."""
        assert self._transport is not None
        self._deadline = self._loop.time() + LINGER_S
        if self._eof or not self._transport.can_write_eof():
            self._transport.close()
            return
        self._transport.write_eof()
        self._transport.resume_reading()

    async def _handle(self, call: Call) -> Reply:
        started = time.perf_counter()
        reply = await self._front.answer(call)
        seconds = time.perf_counter() - started
        if call.method == b"POST" and (call.path == "-" or _is_invocation(call.path)):
            self._context.metrics.invoked(reply.status, seconds)  # refused ones count too
        if self._context.access_log is not None:
            method = call.method.decode("latin-1") or "-"
            self._context.access_log.record(method, call.path, reply.status, seconds)
        return reply

    def _write(self, reply: Reply, keep_alive: bool, head: bool) -> None:
        assert self._transport is not None
        status = _STATUS.get(reply.status) or f"HTTP/1.1 {reply.status} Unknown\r\n"
        fields = "".join([f"{name}: {value}\r\n" for name, value in reply.headers.items()])
        close = "" if keep_alive else "Connection: close\r\n"
        text = f"{status}{fields}Content-Length: {len(reply.body)}\r\n{close}\r\n"
        head_bytes = text.encode("latin-1")
        if head or not reply.body:
            self._transport.write(head_bytes)
        elif len(reply.body) <= 16384:
            self._transport.write(head_bytes + reply.body)
        else:
            self._transport.writelines((head_bytes, reply.body))

    def close_when_idle(self) -> None:
        if self._worker is None and self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


def _error(call: Call, exc: GatewayError) -> Reply:
    """In KServe's shape under /v2, SageMaker's elsewhere (on the target as sent when the
    path could not be read)."""
    shape = call.path if call.path != "-" else "/v2" if call.target.startswith(b"/v2/") else "/"
    return error_reply(shape, exc, call.rid)


def _is_invocation(path: str) -> bool:
    return path.endswith(("/invocations", "/infer"))
