from __future__ import annotations

import orjson
import pytest

from gateway import codecs
from gateway.errors import ValidationError
from gateway.loading.registry import ModelEntry
from gateway.resolve import resolve_target
from gateway.triton.repository import TensorSpec


def _entry(max_batch_size=64, shape=(3,), datatype="FP32", inputs=1):
    specs = tuple(TensorSpec(f"in{i}", datatype, list(shape)) for i in range(inputs))
    return ModelEntry(resolve_target("m.tar.gz"), max_batch_size=max_batch_size, inputs=specs)


def test_parse_content_type_variants():
    assert codecs.parse_content_type(None, 0).mime == codecs.JSON
    assert codecs.parse_content_type("application/json; charset=utf-8", 0).mime == codecs.JSON
    assert codecs.parse_content_type("text/csv", 0).mime == codecs.CSV
    kind = codecs.parse_content_type(f"{codecs.BINARY};json-header-size=12", 20)
    assert kind == codecs.BodyKind(codecs.BINARY, 12)


@pytest.mark.parametrize(
    "value",
    [
        "image/png",
        f"{codecs.BINARY}",
        f"{codecs.BINARY};json-header-size=abc",
        f"{codecs.BINARY};json-header-size=99",
    ],
)
def test_parse_content_type_refuses(value):
    with pytest.raises(ValidationError):
        codecs.parse_content_type(value, 10)


def test_csv_to_v2_rows_become_batch():
    request = orjson.loads(codecs.csv_to_v2(b"1.0,2.0,5.0\r\n2,3,4\n\n", _entry()))
    assert request == {
        "inputs": [
            {
                "name": "in0",
                "shape": [2, 3],
                "datatype": "FP32",
                "data": [1.0, 2.0, 5.0, 2.0, 3.0, 4.0],
            }
        ]
    }


def test_csv_to_v2_integer_input_and_unbatched_single_row():
    request = orjson.loads(codecs.csv_to_v2(b"1,2,3", _entry(max_batch_size=0, datatype="INT32")))
    assert request["inputs"][0]["shape"] == [3]
    assert request["inputs"][0]["data"] == [1, 2, 3]


@pytest.mark.parametrize(
    ("body", "entry"),
    [
        (b"1,2,x", _entry()),
        (b"1,2\n1,2,3", _entry()),
        (b"", _entry()),
        (b"\xff\xfe", _entry()),
        (b"1,2", _entry(inputs=2)),
        (b"1,2\n3,4", _entry(max_batch_size=0)),
    ],
)
def test_csv_to_v2_refuses_bad_input(body, entry):
    with pytest.raises(ValidationError):
        codecs.csv_to_v2(body, entry)


def test_v2_to_csv_one_line_per_row_outputs_side_by_side():
    body = orjson.dumps(
        {
            "outputs": [
                {"name": "a", "shape": [2, 1], "datatype": "FP32", "data": [9.75, 7.25]},
                {"name": "b", "shape": [2, 2], "datatype": "INT32", "data": [1, 2, 3, 4]},
            ]
        }
    )
    assert codecs.v2_to_csv(body) == b"9.75,1,2\n7.25,3,4\n"
