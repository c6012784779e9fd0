"""The model name in Triton's infer answer becomes the one the client asked for."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.triton.answer import HEADER_LENGTH, error_shown_as, show_as
from gateway.triton.upstream import UpstreamResponse

INTERNAL = "add_one-0123456789ab"
OUTPUTS = [{"name": "OUTPUT0", "datatype": "FP32", "shape": [1, 2], "data": [2.0, 3.0]}]


def _triton_json(name: str = INTERNAL, **extra: object) -> bytes:
    """As Triton writes it: compact, model_name first."""
    document = {"model_name": name, "model_version": "1", **extra, "outputs": OUTPUTS}
    return json.dumps(document, separators=(",", ":")).encode()


def _answer(body: bytes, headers: dict[str, str] | None = None) -> UpstreamResponse:
    return UpstreamResponse(200, headers or {"content-type": "application/json"}, body)


def test_json_answer_shows_the_public_name_and_keeps_the_rest():
    response = _answer(_triton_json())
    show_as(response, INTERNAL, "team/add_one.tar.gz")
    assert json.loads(response.body) == {
        "model_name": "team/add_one.tar.gz",
        "model_version": "1",
        "outputs": OUTPUTS,
    }


def test_binary_answer_moves_the_header_length_and_keeps_the_tensors():
    header = _triton_json()
    tensors = bytes(range(256)) * 4
    response = _answer(header + tensors, {HEADER_LENGTH: str(len(header))})
    show_as(response, INTERNAL, "a-much-longer-public-name.tar.gz")
    size = int(response.headers[HEADER_LENGTH])
    assert json.loads(response.body[:size])["model_name"] == "a-much-longer-public-name.tar.gz"
    assert response.body[size:] == tensors


def test_name_found_later_in_the_header_when_triton_orders_fields_otherwise():
    body = b'{ "id":"r1","model_name":"' + INTERNAL.encode() + b'","outputs":[]}'
    response = _answer(body)
    show_as(response, INTERNAL, "m")
    assert json.loads(response.body) == {"id": "r1", "model_name": "m", "outputs": []}


def test_an_answer_without_the_name_is_left_alone():
    for body in (b"", b"{}", _triton_json("another-model"), b"\xff\x00binary"):
        response = _answer(body)
        show_as(response, INTERNAL, "m")
        assert response.body == body


def test_a_match_in_the_tensors_of_a_binary_answer_is_left_alone():
    header = b'{"outputs":[]}'
    tensors = b'"model_name":"' + INTERNAL.encode() + b'"'
    response = _answer(header + tensors, {HEADER_LENGTH: str(len(header))})
    show_as(response, INTERNAL, "m")
    assert response.body == header + tensors
    assert response.headers[HEADER_LENGTH] == str(len(header))


def test_only_the_name_field_is_replaced_not_an_output_that_echoes_it():
    body = _triton_json(echo=f'"model_name":"{INTERNAL}"')
    response = _answer(body)
    show_as(response, INTERNAL, "m")
    document = json.loads(response.body)
    assert document["model_name"] == "m"
    assert document["echo"] == f'"model_name":"{INTERNAL}"'


@settings(max_examples=200, deadline=1000)
@given(public=st.text(max_size=300), binary=st.booleans())
def test_any_public_name_is_escaped_into_valid_json(public: str, binary: bool):
    header = _triton_json()
    tensors = b"\x00\x01\x02\x03"
    headers = {HEADER_LENGTH: str(len(header))} if binary else {}
    response = _answer(header + tensors if binary else header, headers)
    show_as(response, INTERNAL, public)
    size = int(response.headers[HEADER_LENGTH]) if binary else len(response.body)
    assert json.loads(response.body[:size]) == json.loads(_triton_json(public))
    assert response.body[size:] == (tensors if binary else b"")


def test_a_name_json_cannot_hold_leaves_the_answer_as_triton_wrote_it():
    response = _answer(_triton_json())
    show_as(response, INTERNAL, "bad\udc80name")
    assert response.body == _triton_json()


def test_a_long_request_id_before_the_name_does_not_hide_it():
    """Triton writes the client's ``id`` first: however long, the field after it is found."""
    long_id = "r" * 10_000
    body = b'{"id":"' + long_id.encode() + b'",' + _triton_json()[1:]
    response = _answer(body)
    show_as(response, INTERNAL, "m")
    document = json.loads(response.body)
    assert document["model_name"] == "m" and document["id"] == long_id


def test_an_error_answer_names_the_model_as_the_client_did():
    body = f"{{\"error\":\"unexpected inference input 'X' for model '{INTERNAL}'\"}}".encode()
    response = UpstreamResponse(400, {"content-type": "application/json"}, body)
    error_shown_as(response, INTERNAL, 'team/"m".tar.gz')
    assert json.loads(response.body) == {
        "error": """unexpected inference input 'X' for model 'team/"m".tar.gz'"""
    }
