"""The S3 download stream tarfile reads: full reads from partial ones, cuts, cancellation."""

from __future__ import annotations

import io

import pytest

from gateway.store.archive import Cancelled, Limits
from gateway.store.s3 import BodyCut, Progress, s3_config


class Trickle(io.RawIOBase):
    """A socket-like stream: read1 returns at most 3 bytes at a time, like a slow body."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def read1(self, size: int = -1) -> bytes:
        return self._data.read(min(size, 3))

    def read(self, size: int | None = -1) -> bytes:
        return self._data.read(size)


def test_progress_full_reads_from_partial_ones():
    stream = Progress(Trickle(b"x" * 1000), 1000, "s3://b/k")

    assert stream.read(512) == b"x" * 512
    assert stream.read(1000) == b"x" * 488
    assert stream.read(10) == b""


def test_progress_body_shorter_than_content_length_is_cut():
    stream = Progress(Trickle(b"x" * 100), 1000, "s3://b/k")

    with pytest.raises(BodyCut, match="100 of 1000"):
        stream.read(512)


def test_progress_drain_checks_the_rest_of_the_body():
    stream = Progress(Trickle(b"x" * 600), 1000, "s3://b/k")
    assert stream.read(512)

    with pytest.raises(BodyCut, match="600 of 1000"):
        stream.drain()


def test_progress_cancelled_fetch_stops_at_next_read():
    limits = Limits(1 << 20)
    stream = Progress(Trickle(b"x" * 1000), 1000, "s3://b/k", limits)
    stream.read(10)
    limits.cancel.set()

    with pytest.raises(Cancelled):
        stream.read(10)


def test_s3_config_bounds_attempts_and_stalls():
    config = s3_config(stall_timeout=7.0)

    assert config.retries == {"mode": "standard", "total_max_attempts": 4}
    assert config.read_timeout == 7.0 and config.connect_timeout == 10.0
