"""What clients see of Triton's load and inference errors: no host paths, first line."""

from __future__ import annotations

from gateway.triton.errors import client_text, infer_error, without_paths

NAME = "m-0123456789ab"


def test_client_text_keeps_first_line_without_paths():
    text = (
        f"failed to load '{NAME}' version 1: Internal: RuntimeError: cannot initialise\n\n"
        f"At:\n  /srv/cache/models/{NAME}/1/model.py(7): initialize\n"
    )
    assert client_text(text, NAME) == (
        f"failed to load '{NAME}' version 1: Internal: RuntimeError: cannot initialise"
    )


def test_client_text_path_inside_model_becomes_model_name():
    text = f"failed to open text file for read /srv/cache/models/{NAME}/config.pbtxt: missing"
    assert (
        client_text(text, NAME) == f"failed to open text file for read {NAME}/config.pbtxt: missing"
    )


def test_client_text_other_paths_become_placeholder():
    text = "unable to load shared library: /opt/tritonserver/backends/onnx/libx.so: no such file"
    assert client_text(text, NAME) == "unable to load shared library: <path>: no such file"


def test_without_paths_leaves_urls_and_ratios():
    text = "see http://example.com/a/b, shape 1/2 and a/b"
    assert without_paths(text, NAME) == text


def test_infer_error_message_has_no_paths():
    body = b'{"error": "Failed to process: No such file \'/home/u/data/x.npy\'"}'
    error = infer_error("m", 500, body)
    assert "/home/u" not in error.message and "<path>" in error.message
