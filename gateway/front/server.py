"""The hot-path HTTP/1.1 server: invocations and KServe v2 infer; everything else to aiohttp.

aiohttp's server machinery (request objects, routing, middleware, stream writer) costs
several times what a bare reverse proxy spends per request, and on a small host every
microsecond the gateway burns is taken from Triton. So the port clients use is served by
this protocol on httptools: it parses a request, calls the same transport-free handlers
the aiohttp routes would, and writes the reply in one call. Requests for any other route
are passed to the aiohttp application on an internal loopback port.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from contextlib import suppress
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import unquote

import httptools

from gateway.auth import Authorizer, kserve_targets, sagemaker_targets
from gateway.errors import GatewayError, PayloadTooLarge, UnknownOperation, ValidationError
from gateway.front import kserve_v2
from gateway.front.access import CLIENT_HOST
from gateway.front.replies import Reply, error_reply, internal_failure, new_request_id
from gateway.front.sagemaker import Invoker
from gateway.inference import InferenceService
from gateway.log import CACHE_HIT, MODEL, REQUEST_ID, AccessLog
from gateway.metrics import Metrics
from gateway.triton.upstream import UpstreamPool

log = logging.getLogger(__name__)
MAX_PIPELINED = 16
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "expect"}
_STATUS = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n" for s in HTTPStatus}


@dataclass(frozen=True, slots=True)
class Hot:
    """What the hot path needs, built once the application has started."""

    invoker: Invoker
    service: InferenceService
    internal: UpstreamPool
    max_body_size: int
    ready_timeout: float
    metrics: Metrics
    access_log: AccessLog | None
    hidden: tuple[str, ...] = ()
    """Path prefixes not served on this port (admin routes on a port of their own)."""
    auth: Authorizer | None = None
    """The access check (--auth-file), or None."""


@dataclass(slots=True)
class _Request:
    method: bytes
    url: bytes
    headers: dict[str, str]
    body: bytes
    keep_alive: bool
    too_large: bool
    deadline: float


class FrontServer:
    def __init__(self, hot: Hot) -> None:
        self.hot = hot
        self.connections: set[Connection] = set()
        self.closing = False
        self._drained = asyncio.Event()

    def discard(self, connection: Connection) -> None:
        self.connections.discard(connection)
        if self.closing and not self.connections:
            self._drained.set()

    def protocol(self) -> Connection:
        return Connection(self)

    async def close(self, grace_s: float) -> None:
        """Let requests in flight finish (up to ``grace_s``), then drop every connection."""
        self.closing = True
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
        self._hot = front.hot
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._pending: deque[_Request] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        self._front.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._front.discard(self)
        self._pending.clear()
        if self._worker is not None:
            self._worker.cancel()  # the client is gone; a model load it started goes on

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(f"Malformed HTTP request: {exc}")
        except httptools.HttpParserUpgrade:
            self._fail("Protocol upgrades are not supported.")

    # httptools callbacks

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        if self._headers.get("expect", "").lower() == "100-continue" and self._transport:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size <= self._hot.max_body_size:
            self._body.append(body)

    def on_message_complete(self) -> None:
        request = _Request(
            method=self._parser.get_method(),
            url=self._url,
            headers=self._headers,
            body=b"".join(self._body),
            keep_alive=self._parser.should_keep_alive(),
            too_large=self._size > self._hot.max_body_size,
            deadline=self._loop.time() + self._hot.ready_timeout,
        )
        self._reset()
        self._pending.append(request)
        if len(self._pending) >= MAX_PIPELINED and self._transport is not None:
            self._transport.pause_reading()
        if self._worker is None:
            self._worker = self._loop.create_task(self._work())

    # serving

    async def _work(self) -> None:
        """Answer queued requests in order (HTTP/1.1 pipelining keeps replies ordered)."""
        while self._pending and self._transport is not None:
            request = self._pending.popleft()
            reply = await self._handle(request)
            keep_alive = request.keep_alive and not self._front.closing
            self._write(reply, keep_alive, request.method == b"HEAD")
            if not keep_alive:
                self._transport.close()
                break
            if len(self._pending) < MAX_PIPELINED:
                self._transport.resume_reading()
        self._worker = None

    async def _handle(self, request: _Request) -> Reply:
        started = time.perf_counter()
        rid = new_request_id()
        REQUEST_ID.set(rid)
        CACHE_HIT.set(None)
        path = request.url.partition(b"?")[0].decode("latin-1")
        reply = await self._reply(request, path, rid)
        seconds = time.perf_counter() - started
        if request.method == b"POST" and _is_invocation(path):
            self._hot.metrics.invoked(reply.status, seconds)
        if self._hot.access_log is not None:
            method = request.method.decode("latin-1")
            self._hot.access_log.record(method, path, reply.status, seconds)
        return reply

    async def _reply(self, request: _Request, path: str, rid: str) -> Reply:
        try:
            if request.too_large:
                raise PayloadTooLarge(
                    f"Request body is too large: the limit is {self._hot.max_body_size} bytes."
                )
            if request.method == b"POST":
                reply = await self._hot_route(path, request, rid)
                if reply is not None:
                    return reply
            return await self._forward(request, rid)
        except GatewayError as exc:
            return error_reply(path, exc, rid)
        except Exception:
            log.exception("request %s failed", rid)
            return error_reply(path, internal_failure(rid), rid)

    async def _hot_route(self, path: str, request: _Request, rid: str) -> Reply | None:
        hot = self._hot
        if path == "/invocations" or (
            path.startswith("/endpoints/") and path.endswith("/invocations")
        ):
            endpoint = None if path == "/invocations" else unquote(path[11:-12])
            if endpoint is None or "/" not in endpoint:
                target = request.headers.get("x-amzn-sagemaker-target-model")
                MODEL.set(target or "-")
                if hot.auth is not None:
                    hot.auth.authorize(*_signed(request), sagemaker_targets(target))
                return await hot.invoker.invoke(
                    endpoint, request.headers, request.body, rid, request.deadline
                )
        if path.startswith("/v2/models/") and path.endswith("/infer"):
            name, version = _kserve_target(path[11:-6])
            MODEL.set(name)
            if hot.auth is not None:
                hot.auth.authorize(*_signed(request), kserve_targets(name))
            return await kserve_v2.infer(
                hot.service, name, version, request.headers, request.body, request.deadline
            )
        return None

    async def _forward(self, request: _Request, rid: str) -> Reply:
        path = request.url.partition(b"?")[0].decode("latin-1")
        if self._hot.hidden and path.startswith(self._hot.hidden):
            return error_reply(path, UnknownOperation(f"No route for {path} on this port."), rid)
        headers = {k: v for k, v in request.headers.items() if k not in _HOP_BY_HOP}
        headers["x-amzn-RequestId"] = rid
        headers[CLIENT_HOST] = request.headers.get("host", "")  # SigV4 signs the Host
        method = "GET" if request.method == b"HEAD" else request.method.decode("latin-1")
        url = request.url.decode("latin-1")
        response = await self._hot.internal.request(method, url, request.body, headers)
        kept = {k: v for k, v in response.headers.items() if k not in _HOP_BY_HOP}
        kept.pop("date", None)
        kept.pop("server", None)
        return Reply(response.status, response.body, kept)

    def _write(self, reply: Reply, keep_alive: bool, head: bool) -> None:
        assert self._transport is not None
        lines = [_STATUS.get(reply.status) or f"HTTP/1.1 {reply.status} Unknown\r\n"]
        lines.extend(f"{name}: {value}\r\n" for name, value in reply.headers.items())
        lines.append(f"Content-Length: {len(reply.body)}\r\n")
        if not keep_alive:
            lines.append("Connection: close\r\n")
        lines.append("\r\n")
        head_bytes = "".join(lines).encode("latin-1")
        if head or not reply.body:
            self._transport.write(head_bytes)
        elif len(reply.body) <= 16384:
            self._transport.write(head_bytes + reply.body)
        else:
            self._transport.writelines((head_bytes, reply.body))

    def _fail(self, message: str) -> None:
        """A request that cannot even be parsed: answer 400 and close the connection."""
        if self._transport is None or self._transport.is_closing():
            return
        self._write(error_reply("/", ValidationError(message), new_request_id()), False, False)
        self._transport.close()

    def close_when_idle(self) -> None:
        if self._worker is None and self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


def _signed(request: _Request) -> tuple[bytes, bytes, dict[str, str], bytes]:
    return request.method, request.url, request.headers, request.body


def _is_invocation(path: str) -> bool:
    return path.endswith(("/invocations", "/infer"))


def _kserve_target(rest: str) -> tuple[str, str]:
    """``name`` or ``name/versions/N`` -> (name, version)."""
    name, sep, version = rest.rpartition("/versions/")
    if sep and version.isdigit() and name:
        return unquote(name), version
    return unquote(rest), ""
