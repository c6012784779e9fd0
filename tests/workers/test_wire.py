"""Messages between the control process and data planes: models, errors and replies arrive
as they left, and a link over a real socket pair answers asks and fails them when closed."""

from __future__ import annotations

import asyncio
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import (
    GatewayError,
    InsufficientMemory,
    ModelError,
    ModelNotReady,
    ServiceUnavailable,
    TritonUnavailable,
)
from gateway.front.replies import Reply
from gateway.loading.registry import Loaded, ModelEntry, ModelState
from gateway.log import whole_lines
from gateway.metrics import Metrics
from gateway.resolve import resolve_target
from gateway.triton.repository import TensorSpec
from gateway.workers.link import Link, LinkClosed
from gateway.workers.wire import (
    error_in,
    error_out,
    model_in,
    model_out,
    ref_in,
    ref_out,
    reply_in,
    reply_out,
)


def test_a_model_travels_with_what_its_bodies_need():
    ref = resolve_target("team/m.tar.gz")
    entry = ModelEntry(ref, state=ModelState.READY, max_batch_size=8, memory_kind="gpu")
    entry.inputs = (TensorSpec("INPUT0", "FP32", [-1, 3]),)
    entry.outputs = (TensorSpec("OUTPUT0", "FP32", [-1, 3]),)
    message = model_out(entry, 7)
    assert message["gen"] == 7
    got_ref, loaded = model_in(message)
    assert got_ref == ref and ref_in(ref_out(ref)) == ref
    assert isinstance(loaded, Loaded)
    assert (loaded.max_batch_size, loaded.memory_kind) == (8, "gpu")
    assert loaded.inputs == entry.inputs and loaded.outputs == entry.outputs


@pytest.mark.parametrize(
    "error",
    [
        ModelError("Model 'm' failed.", 500, "boom"),
        ModelNotReady("Model 'm' is still loading."),
        InsufficientMemory("No room for 'm'."),
        TritonUnavailable("Triton is restarting.", retry_after=7),
        ServiceUnavailable("retry"),
        GatewayError("internal"),
    ],
)
def test_an_error_is_raised_as_its_own_class_with_its_fields(error):
    error.model = "m"
    back = error_in(error_out(error))
    assert type(back) is type(error)
    assert (back.message, back.extra, back.model, back.status) == (
        error.message,
        error.extra,
        "m",
        error.status,
    )
    assert getattr(back, "retry_after", None) == getattr(error, "retry_after", None)
    assert back.for_model("n").message == error.for_model("n").message


def test_an_unknown_error_class_is_an_internal_failure():
    back = error_in({"type": "NoSuchError", "message": "x"})
    assert type(back) is GatewayError and back.status == 500


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=4096), st.integers(100, 599))
def test_a_reply_arrives_byte_for_byte(body, status):
    reply = Reply(status, body, {"Content-Type": "application/octet-stream"})
    assert reply_in(reply_out(reply)) == reply


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.text(
            alphabet=st.characters(blacklist_characters="\n", codec="utf-8"),
            max_size=300,
        )
    )
)
def test_access_log_chunks_are_whole_lines_within_the_limit(lines):
    chunks = list(whole_lines(lines, 512))
    assert "".join(chunks) == "".join(line + "\n" for line in lines)
    for chunk in chunks:
        assert chunk.endswith("\n")
        if chunk.count("\n") > 1:  # a line longer than the limit goes alone
            assert len(chunk.encode()) <= 512


def test_a_link_over_a_socket_pair_answers_asks_and_fails_them_once_closed():
    async def run() -> None:
        ours, theirs = socket.socketpair()
        near, far = await Link.over(ours), await Link.over(theirs)

        async def answer_one() -> None:
            message = await far.receive()
            assert message is not None and message["q"] == "double"
            far.answer(message["id"], message["n"] * 2)
            message = await far.receive()
            assert message is not None
            far.answer(message["id"], error=ModelNotReady("Model 'm' is still loading."))

        answering = asyncio.ensure_future(answer_one())
        reading = asyncio.ensure_future(near.receive())  # answers are taken by the reader
        assert await near.ask({"op": "ask", "q": "double", "n": 21}) == 42
        with pytest.raises(ModelNotReady):
            await near.ask({"op": "ask", "q": "fail"})
        await answering
        pending = asyncio.ensure_future(near.ask({"op": "ask", "q": "never answered"}))
        await asyncio.sleep(0.05)
        far.close()
        assert await reading is None  # the other end went away
        with pytest.raises(LinkClosed):
            await pending
        with pytest.raises(LinkClosed):
            await near.ask({"op": "ask", "q": "after"})

    asyncio.run(run())


def test_metrics_add_up_planes_and_keep_a_dead_planes_counts():
    metrics = Metrics()
    metrics.invoked(200, 0.001)
    plane = Metrics()
    for _ in range(3):
        plane.invoked(200, 0.002)
    plane.invoked(503, 0.002)
    plane.cache_hits.inc()
    metrics.hot.absorb(0, plane.hot.figures())
    metrics.hot.absorb(0, plane.hot.figures())  # a newer report replaces, never adds

    def sample(name: str, labels: dict[str, str] | None = None) -> float | None:
        return metrics.registry.get_sample_value(name, labels or {})

    assert sample("mme_invocations_total", {"code": "200"}) == 4
    assert sample("mme_invocations_total", {"code": "503"}) == 1
    assert sample("mme_invocation_seconds_count") == 5
    assert sample("mme_model_cache_hits_total") == 1
    metrics.hot.retire(0)
    metrics.hot.absorb(0, Metrics().hot.figures())  # its replacement starts at zero
    assert sample("mme_invocations_total", {"code": "200"}) == 4
    assert sample("mme_invocation_seconds_count") == 5
