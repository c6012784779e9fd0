"""Tensor specs derived from config.pbtxt must read as Triton's own model metadata does."""

from __future__ import annotations

from gateway.loading.loader import _spec
from gateway.triton.repository import parse_config


def test_spec_from_config_matches_triton_metadata_form():
    config = parse_config(
        'name: "m" max_batch_size: 8\n'
        'input [{ name: "a" data_type: TYPE_FP32 dims: [ 3 ] },'
        '       { name: "s" data_type: TYPE_STRING dims: [ 1 ] }]\n'
        'output [{ name: "y" data_type: TYPE_INT64 dims: [ -1, 2 ] }]'
    )
    specs = [_spec(t, config.max_batch_size) for t in (*config.input, *config.output)]
    assert [(s.name, s.datatype, s.shape) for s in specs] == [
        ("a", "FP32", [-1, 3]),
        ("s", "BYTES", [-1, 1]),
        ("y", "INT64", [-1, -1, 2]),
    ]


def test_spec_without_batching_keeps_dims():
    config = parse_config('name: "m" input [{ name: "x" data_type: TYPE_UINT8 dims: [ 4 ] }]')
    spec = _spec(config.input[0], config.max_batch_size)
    assert (spec.datatype, spec.shape) == ("UINT8", [4])
