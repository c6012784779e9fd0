"""The front server on real sockets: parsing, pipelining, limits, routing, error shapes.

Requests here never reach Triton: the test's own routes echo, the real ones fail
validation first.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import AbstractAsyncContextManager

import pytest

from gateway.front.call import Call
from gateway.front.context import Context
from gateway.front.replies import Reply
from gateway.front.routes import PUBLIC, Route
from gateway.front.server import FrontServer, Limits
from gateway.settings import Settings
from tests.front.serving import serving


async def _echo(context: Context, call: Call) -> Reply:
    document = {"path": call.path, "query": call.query.decode(), "body": call.body.decode()}
    return Reply(200, json.dumps(document).encode(), {"Content-Type": "application/json"})


ECHO_ROUTES = tuple(Route(m, "/echo", _echo, frozenset({PUBLIC})) for m in ("GET", "POST"))


def _serving(limits: Limits) -> AbstractAsyncContextManager[tuple[FrontServer, int]]:
    return serving(ECHO_ROUTES, limits, Settings(max_body_size=1000))


@pytest.fixture
async def front():
    async with _serving(Limits.of(Settings())) as served:
        yield served


async def _exchange(
    port: int, raw: bytes, responses: int = 1
) -> list[tuple[int, dict[str, str], bytes]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    out = []
    for _ in range(responses):
        status_line = await reader.readline()
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", 0)))
        out.append((int(status_line.split()[1]), headers, body))
    writer.close()
    await writer.wait_closed()
    return out


async def test_server_routes_on_the_normalised_path_and_keeps_the_query(front):
    _, port = front
    raw = b"GET //ech%6f/?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"
    [(status, _, body)] = await _exchange(port, raw)
    assert status == 200
    assert json.loads(body) == {"path": "/echo", "query": "x=1", "body": ""}


async def test_server_answers_pipelined_requests_in_order(front):
    _, port = front
    raw = b"".join(
        f"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: {len(str(i))}\r\n\r\n{i}".encode()
        for i in range(5)
    )
    replies = await _exchange(port, raw, responses=5)
    assert [json.loads(body)["body"] for _, _, body in replies] == ["0", "1", "2", "3", "4"]


async def test_server_invocation_errors_use_sagemaker_shape(front):
    _, port = front
    raw = b"POST /endpoints/e/invocations HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}"
    [(status, headers, body)] = await _exchange(port, raw)
    assert status == 400
    assert headers["x-amzn-errortype"] == "ValidationError"
    assert headers["x-amzn-requestid"]
    assert "Target-Model" in json.loads(body)["message"]


async def test_server_body_over_limit_is_413_validation_error(front):
    _, port = front
    raw = b"POST /invocations HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n" + b"x" * 1001
    [(status, headers, body)] = await _exchange(port, raw)
    assert status == 413
    assert headers["x-amzn-errortype"] == "ValidationError"
    assert "too large" in json.loads(body)["message"]


async def test_server_malformed_request_gets_400_and_close(front):
    _, port = front
    [(status, headers, body)] = await _exchange(port, b"NONSENSE\x00\r\n\r\n")
    assert status == 400
    assert headers["connection"] == "close"
    assert "Malformed" in json.loads(body)["message"]


async def test_server_unknown_route_keeps_error_shape(front):
    _, port = front
    [(status, headers, _)] = await _exchange(port, b"GET /nowhere HTTP/1.1\r\nHost: a\r\n\r\n")
    assert status == 404
    assert headers["x-amzn-errortype"] == "UnknownOperationException"


async def test_server_connection_close_is_honoured(front):
    _, port = front
    raw = b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    [(status, headers, _)] = await _exchange(port, raw)
    assert status == 200 and headers["connection"] == "close"


async def test_server_close_waits_for_requests_in_flight(front):
    server, port = front
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(0.05)
    await server.close(2)
    assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    writer.close()
    await writer.wait_closed()
    assert not server.connections


async def test_server_unexpected_error_is_internal_failure_with_request_id(front, caplog):
    """The service here has no loader, so a valid invocation fails unexpectedly inside it."""
    _, port = front
    raw = (
        b"POST /endpoints/e/invocations HTTP/1.1\r\nHost: a\r\n"
        b"X-Amzn-SageMaker-Target-Model: m.tar.gz\r\nContent-Length: 2\r\n\r\n{}"
    )
    [(status, headers, body)] = await _exchange(port, raw)
    assert status == 500
    assert headers["x-amzn-errortype"] == "InternalFailure"
    message = json.loads(body)["message"]
    assert headers["x-amzn-requestid"] in message and "NoneType" not in message
    assert "request " + headers["x-amzn-requestid"] + " failed" in caplog.text


async def test_server_connections_over_the_cap_are_closed_and_the_loop_goes_on():
    async with _serving(Limits.of(Settings(max_connections=2))) as (server, port):
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed at once, no answer
        writer.close()
        assert len(server.connections) == 2
        held[0][1].close()
        await held[0][1].wait_closed()
        for _ in range(100):  # until the server has seen that close: refused until then
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n")
            status_line = await asyncio.wait_for(reader.readline(), 5)
            writer.close()
            if status_line:
                break
        assert status_line.startswith(b"HTTP/1.1 200")
        held[1][1].close()
        await held[1][1].wait_closed()


async def test_server_expect_continue_within_the_limit_gets_100_then_the_answer(front):
    _, port = front
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
    )
    assert await reader.readline() == b"HTTP/1.1 100 Continue\r\n"
    assert await reader.readline() == b"\r\n"
    writer.write(b"hi")
    assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    writer.close()
    await writer.wait_closed()


async def test_server_chunked_body_over_the_limit_is_413_and_closed(front):
    _, port = front
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    writer.write(b"400\r\n" + b"x" * 1024 + b"\r\n")  # 1 KiB in one chunk: the limit is 1000
    assert (await reader.readline()).startswith(b"HTTP/1.1 413")
    assert (await asyncio.wait_for(reader.read(), 5)).endswith(b"}")  # then closed
    writer.close()
    await writer.wait_closed()
