"""UpstreamPool against real HTTP servers on 127.0.0.1: aiohttp for well-behaved HTTP, raw
asyncio servers for the misbehaving cases (stale keep-alive, hangs, HTTP/1.0, EOF bodies)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.errors import ServiceUnavailable
from gateway.triton.upstream import UpstreamPool

MiB = 1024 * 1024
pytestmark = pytest.mark.timeout(30)


# -- an aiohttp server


class AppState:
    def __init__(self) -> None:
        self.peers: set[tuple[str, int]] = set()
        self.in_flight = 0
        self.max_in_flight = 0


def make_app(state: AppState) -> web.Application:
    async def track(request: web.Request) -> None:
        assert request.transport is not None
        state.peers.add(request.transport.get_extra_info("peername"))

    async def echo(request: web.Request) -> web.Response:
        await track(request)
        body = await request.read()
        seen = {k.lower(): v for k, v in request.headers.items()}
        return web.Response(body=body, headers={"X-Seen-Headers": json.dumps(seen)})

    async def chunked(request: web.Request) -> web.StreamResponse:
        await track(request)
        resp = web.StreamResponse(headers={"X-Kind": "Chunked"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(50):
            await resp.write(bytes([65 + i % 26]) * (i * 100 + 1))
        await resp.write_eof()
        return resp

    async def close(request: web.Request) -> web.Response:
        await track(request)
        resp = web.Response(text="bye", headers={"Connection": "close"})
        resp.force_close()
        return resp

    async def slow(request: web.Request) -> web.Response:
        await track(request)
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            await asyncio.sleep(float(request.query.get("s", "0.05")))
        finally:
            state.in_flight -= 1
        return web.Response(text=request.query.get("tag", "slow"))

    app = web.Application(client_max_size=16 * MiB)
    app.router.add_post("/echo", echo)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/close", close)
    app.router.add_get("/slow", slow)
    return app


@pytest.fixture
async def app_state() -> AsyncIterator[tuple[AppState, int]]:
    state = AppState()
    server = TestServer(make_app(state), host="127.0.0.1")
    await server.start_server()
    assert server.port is not None
    yield state, server.port
    await server.close()


# -- raw asyncio servers

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "RawServer"], Awaitable[None]]


class RawServer:
    """asyncio.start_server that counts connections and notes when a peer hangs up."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests = 0
        self.got_request = asyncio.Event()
        self.peer_closed = asyncio.Event()
        self.writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            await self.handler(reader, writer, self)
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes | None:
        """Read one request; None when the client closed the connection."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            self.peer_closed.set()
            return None
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        self.requests += 1
        self.got_request.set()
        return head

    async def stop(self) -> None:
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()
        await asyncio.sleep(0.01)  # let the handlers' transports finish closing


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def answer_first_then_close(
    r: asyncio.StreamReader, w: asyncio.StreamWriter, s: RawServer
) -> None:
    # Answers the first request of a connection; closes it unanswered on the second, as a
    # server does when its keep-alive timeout races with the client's next request.
    if await s.read_request(r) is None:
        return
    w.write(OK)
    await s.read_request(r)


async def close_unanswered(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: RawServer) -> None:
    await s.read_request(r)


async def hang(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: RawServer) -> None:
    await s.read_request(r)
    if await r.read() == b"":
        s.peer_closed.set()


async def http10(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: RawServer) -> None:
    while await s.read_request(r) is not None:
        w.write(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")  # and keep the socket open


async def body_until_eof(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: RawServer) -> None:
    await s.read_request(r)
    w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nno length here")
    await w.drain()


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[Handler], Awaitable[RawServer]]]:
    servers: list[RawServer] = []

    async def start(handler: Handler) -> RawServer:
        server = RawServer(handler)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def make_pool() -> AsyncIterator[Callable[..., UpstreamPool]]:
    pools: list[UpstreamPool] = []

    def make(port: int, **kwargs: float) -> UpstreamPool:
        pool = UpstreamPool("127.0.0.1", port, **kwargs)  # type: ignore[arg-type]
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        await pool.close()


# -- behaviour


async def test_pool_reuses_connection_for_sequential_requests(app_state, make_pool):
    state, port = app_state
    pool = make_pool(port)
    for i in range(5):
        resp = await pool.request("POST", "/echo", f"n{i}".encode())
        assert (resp.status, resp.body) == (200, f"n{i}".encode())
    assert len(state.peers) == 1


async def test_pool_sends_headers_and_lowercases_response_headers(app_state, make_pool):
    _, port = app_state
    pool = make_pool(port)
    resp = await pool.request(
        "POST", "/echo", b"{}", {"Content-Type": "application/json", "X-Trace": "t-1"}
    )
    seen = json.loads(resp.headers["x-seen-headers"])
    assert seen["content-type"] == "application/json"
    assert seen["x-trace"] == "t-1"
    assert seen["host"] == f"127.0.0.1:{port}"
    assert seen["content-length"] == "2"
    assert resp.headers["content-length"] == "2"
    assert all(name == name.lower() for name in resp.headers)


async def test_pool_rejects_header_injection(app_state, make_pool):
    _, port = app_state
    pool = make_pool(port)
    with pytest.raises(ValueError, match="CR or LF"):
        await pool.request("GET", "/slow", headers={"X-A": "1\r\nX-Evil: 1"})


async def test_pool_caps_connections_at_max(app_state, make_pool):
    state, port = app_state
    pool = make_pool(port, max_connections=2)
    bodies = await asyncio.gather(
        *(pool.request("GET", f"/slow?s=0.05&tag=t{i}") for i in range(8))
    )
    assert sorted(r.body for r in bodies) == sorted(f"t{i}".encode() for i in range(8))
    assert state.max_in_flight == 2
    assert len(state.peers) == 2


async def test_pool_cancelled_waiter_does_not_leak_slot(app_state, make_pool):
    state, port = app_state
    pool = make_pool(port, max_connections=1)
    first = asyncio.create_task(pool.request("GET", "/slow?s=0.1&tag=first"))
    waiting = asyncio.create_task(pool.request("GET", "/slow?tag=never"))
    await asyncio.sleep(0.02)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert (await first).body == b"first"
    third = await asyncio.wait_for(pool.request("GET", "/slow?s=0&tag=third"), 2)
    assert third.body == b"third"
    assert len(state.peers) == 1


async def test_pool_decodes_chunked_body(app_state, make_pool):
    state, port = app_state
    pool = make_pool(port)
    expected = b"".join(bytes([65 + i % 26]) * (i * 100 + 1) for i in range(50))
    for _ in range(2):  # the connection stays usable after a chunked response
        resp = await pool.request("GET", "/chunked")
        assert resp.headers["transfer-encoding"] == "chunked"
        assert resp.headers["x-kind"] == "Chunked"
        assert resp.body == expected
    assert len(state.peers) == 1


async def test_pool_round_trips_large_body(app_state, make_pool):
    state, port = app_state
    pool = make_pool(port)
    payload = os.urandom(6 * MiB)
    resp = await pool.request("POST", "/echo", payload)
    assert resp.status == 200
    assert resp.body == payload
    resp = await pool.request("POST", "/echo", b"small")
    assert resp.body == b"small"
    assert len(state.peers) == 1


async def test_pool_does_not_reuse_connection_after_connection_close(app_state, make_pool):
    state, port = app_state
    pool = make_pool(port)
    for _ in range(3):
        resp = await pool.request("GET", "/close")
        assert resp.body == b"bye"
    assert len(state.peers) == 3


async def test_pool_does_not_reuse_http10_connection(raw_server, make_pool):
    server = await raw_server(http10)
    pool = make_pool(server.port)
    for _ in range(2):
        assert (await pool.request("GET", "/")).body == b"ok"
    assert server.connections == 2


async def test_pool_reads_body_until_eof_without_content_length(raw_server, make_pool):
    server = await raw_server(body_until_eof)
    pool = make_pool(server.port)
    resp = await pool.request("GET", "/")
    assert (resp.status, resp.body) == (200, b"no length here")


async def test_pool_raises_service_unavailable_on_malformed_response(raw_server, make_pool):
    async def garbage(r, w, s):
        await s.read_request(r)
        w.write(b"NOT-HTTP garbage\r\n\r\n")
        await r.read()

    server = await raw_server(garbage)
    pool = make_pool(server.port)
    with pytest.raises(ServiceUnavailable, match="Malformed HTTP response"):
        await pool.request("GET", "/")


async def test_pool_drops_connection_that_sent_more_than_one_response(raw_server, make_pool):
    async def too_much(r, w, s):
        while await s.read_request(r) is not None:
            w.write(OK + b"HTTP/1.1 200 OK\r\nX-Extra: 1\r\n")

    server = await raw_server(too_much)
    pool = make_pool(server.port)
    for _ in range(2):
        resp = await pool.request("GET", "/")
        assert resp.body == b"ok"
        assert "x-extra" not in resp.headers
    assert server.connections == 2


async def test_pool_retries_once_when_idle_connection_was_closed(raw_server, make_pool):
    server = await raw_server(answer_first_then_close)
    pool = make_pool(server.port)
    assert (await pool.request("POST", "/", b"1")).body == b"ok"
    assert (await pool.request("POST", "/", b"2")).body == b"ok"
    # Request 2 reached the first connection, which closed unanswered; the retry opened another.
    assert server.connections == 2
    assert server.requests == 3


async def test_pool_does_not_retry_fresh_connection_closed_by_server(raw_server, make_pool):
    server = await raw_server(close_unanswered)
    pool = make_pool(server.port)
    with pytest.raises(ServiceUnavailable, match="closed the connection"):
        await pool.request("GET", "/")
    assert server.connections == 1


async def test_pool_replaces_idle_connection_closed_by_server(app_state, raw_server, make_pool):
    async def answer_then_hang_up(r, w, s):
        await s.read_request(r)
        w.write(OK)

    server = await raw_server(answer_then_hang_up)
    pool = make_pool(server.port)
    assert (await pool.request("GET", "/")).body == b"ok"
    await asyncio.sleep(0.05)  # the client sees the FIN while the connection is idle
    assert (await pool.request("GET", "/")).body == b"ok"
    assert server.connections == 2


async def test_pool_raises_service_unavailable_when_refused(make_pool):
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    pool = make_pool(port)
    with pytest.raises(ServiceUnavailable, match=f"Cannot connect to Triton at 127.0.0.1:{port}"):
        await pool.request("GET", "/")
    with pytest.raises(ServiceUnavailable):  # the failed connect gave its slot back
        await pool.request("GET", "/")


async def test_pool_read_timeout_raises_service_unavailable(raw_server, make_pool):
    server = await raw_server(hang)
    pool = make_pool(server.port, read_timeout=0.2)
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable, match="no complete response"):
        await pool.request("GET", "/")
    assert 0.15 < time.monotonic() - started < 2
    await asyncio.wait_for(server.peer_closed.wait(), 2)  # the connection was dropped


async def test_pool_cancelled_request_drops_connection(raw_server, make_pool):
    server = await raw_server(hang)
    pool = make_pool(server.port, read_timeout=0.2)
    task = asyncio.create_task(pool.request("POST", "/", b"x"))
    await asyncio.wait_for(server.got_request.wait(), 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(server.peer_closed.wait(), 2)
    with pytest.raises(ServiceUnavailable):  # a new connection, not the half-read one
        await pool.request("GET", "/")
    assert server.connections == 2


async def test_pool_close_closes_connections_and_refuses_requests(raw_server, make_pool):
    async def keep_alive(r, w, s):
        while await s.read_request(r) is not None:
            w.write(OK)

    server = await raw_server(keep_alive)
    pool = make_pool(server.port)
    assert (await pool.request("GET", "/")).body == b"ok"
    await pool.close()
    await asyncio.wait_for(server.peer_closed.wait(), 2)
    with pytest.raises(ServiceUnavailable, match="closed"):
        await pool.request("GET", "/")


async def test_pool_close_fails_waiting_requests(app_state, make_pool):
    _, port = app_state
    pool = make_pool(port, max_connections=1)
    busy = asyncio.create_task(pool.request("GET", "/slow?s=1"))
    waiting = asyncio.create_task(pool.request("GET", "/slow"))
    await asyncio.sleep(0.05)
    await pool.close()
    for task in (busy, waiting):
        with pytest.raises(ServiceUnavailable):
            await task
