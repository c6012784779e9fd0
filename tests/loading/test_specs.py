"""Tensor specs derived from config.pbtxt must read as Triton's own model metadata does."""

from __future__ import annotations

from gateway.triton.repository import parse_config, view


def test_spec_from_config_matches_triton_metadata_form():
    config = parse_config(
        'name: "m" max_batch_size: 8\n'
        'input [{ name: "a" data_type: TYPE_FP32 dims: [ 3 ] },'
        '       { name: "s" data_type: TYPE_STRING dims: [ 1 ] }]\n'
        'output [{ name: "y" data_type: TYPE_INT64 dims: [ -1, 2 ] }]'
    )
    described = view(config)
    specs = [*described.inputs, *described.outputs]
    assert [(s.name, s.datatype, s.shape) for s in specs] == [
        ("a", "FP32", [-1, 3]),
        ("s", "BYTES", [-1, 1]),
        ("y", "INT64", [-1, -1, 2]),
    ]


def test_spec_without_batching_keeps_dims():
    config = parse_config('name: "m" input [{ name: "x" data_type: TYPE_UINT8 dims: [ 4 ] }]')
    spec = view(config).inputs[0]
    assert (spec.datatype, spec.shape) == ("UINT8", [4])
