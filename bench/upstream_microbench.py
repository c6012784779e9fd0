"""Client CPU per request: UpstreamPool vs aiohttp.ClientSession, both on uvloop.

An aiohttp echo server runs in a subprocess, so time.process_time() of this process counts
only the client's work. Usage: python -m bench.upstream_microbench [--requests N] [--body B]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import aiohttp
import uvloop

from bench.harness import free_port
from gateway.triton.upstream import UpstreamPool

CONCURRENCY = 16


def serve(port: int) -> None:
    from aiohttp import web

    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read(), content_type="application/json")

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/v2/models/m/infer", echo)
    web.run_app(
        app, host="127.0.0.1", port=port, print=None, access_log=None, loop=uvloop.new_event_loop()
    )


async def wait_listening(port: int) -> None:
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise RuntimeError("echo server did not start")


async def drive(n: int, one: Callable[[], Awaitable[bytes]], expect: bytes) -> float:
    """Run n requests from CONCURRENCY workers; return client CPU microseconds per request."""

    async def worker(count: int) -> None:
        for _ in range(count):
            if await one() != expect:
                raise AssertionError("bad echo")

    per, extra = divmod(n, CONCURRENCY)
    cpu = time.process_time()
    await asyncio.gather(*(worker(per + (i < extra)) for i in range(CONCURRENCY)))
    return (time.process_time() - cpu) / n * 1e6


async def bench(port: int, n: int, body: bytes, rounds: int) -> None:
    path = "/v2/models/m/infer"
    headers = {"Content-Type": "application/json"}
    pool = UpstreamPool("127.0.0.1", port, max_connections=64)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
    url = f"http://127.0.0.1:{port}{path}"

    async def via_pool() -> bytes:
        return (await pool.request("POST", path, body, headers)).body

    async def via_session() -> bytes:
        async with session.post(url, data=body, headers=headers) as resp:
            return await resp.read()

    try:
        await drive(2000, via_pool, body)  # warm up connections and code paths
        await drive(2000, via_session, body)
        results: dict[str, list[float]] = {"UpstreamPool": [], "aiohttp.ClientSession": []}
        for _ in range(rounds):  # interleave rounds so drift hits both alike
            results["UpstreamPool"].append(await drive(n, via_pool, body))
            results["aiohttp.ClientSession"].append(await drive(n, via_session, body))
    finally:
        await pool.close()
        await session.close()
    print(f"{n} requests x {rounds} rounds, concurrency {CONCURRENCY}, body {len(body)} B, uvloop")
    for name, values in results.items():
        runs = ", ".join(f"{v:.1f}" for v in values)
        print(f"  {name:22s} {min(values):6.1f} us/request CPU (best; rounds: {runs})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--body", type=int, default=1024, help="request body bytes")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(wait_listening(port))
            runner.run(bench(port, args.requests, b"x" * args.body, args.rounds))
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
