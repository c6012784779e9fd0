"""The access log's line: what it says of a request, in text and JSON."""

from __future__ import annotations

import io
import json

from gateway.log import CACHE_HIT, MODEL, REQUEST_ID, AccessLog


async def _line(fmt: str, seconds: float, hit: bool | None) -> str:
    stream = io.StringIO()
    log = AccessLog(fmt, stream)
    REQUEST_ID.set("rid-1")
    MODEL.set("m.tar.gz")
    CACHE_HIT.set(hit)
    log.record("POST", "/invocations", 200, seconds)
    assert log._flusher is not None  # flushed a moment later, off the request
    log._flusher.cancel()
    log.flush()
    return stream.getvalue().strip()


async def test_text_line_has_latency_in_milliseconds_to_the_microsecond():
    assert await _line("text", 0.0012345, True) == (
        "access rid-1 POST /invocations model=m.tar.gz status=200 ms=1.234 hit=1"
    )
    assert (await _line("text", 2.5, None)).endswith("ms=2500.000 hit=-")
    assert (await _line("text", 0.000007, False)).endswith("ms=0.007 hit=0")


async def test_json_line_carries_the_same_fields():
    document = json.loads(await _line("json", 0.0012345, False))
    assert {k: document[k] for k in ("request_id", "model", "status", "ms", "cache_hit")} == {
        "request_id": "rid-1",
        "model": "m.tar.gz",
        "status": 200,
        "ms": 1.234,
        "cache_hit": False,
    }
