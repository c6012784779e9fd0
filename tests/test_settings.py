from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from gateway.settings import Settings, add_arguments, parse_size, settings_from, worker_count


def _parse(argv, environ):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return settings_from(parser.parse_args(argv), environ)


def test_settings_defaults():
    settings = _parse([], {})
    assert settings == Settings()
    assert settings.port == 8080 and settings.max_body_size == 6 * 1024 * 1024
    assert settings.repository == Path("./.mme-cache/models")


def test_settings_env_then_flag_precedence():
    env = {"MME_PORT": "9000", "MME_MODEL_STORE": "s3://b/p/", "MME_MAX_BODY_SIZE": "1MiB"}
    settings = _parse(["--port", "9100"], env)
    assert settings.port == 9100
    assert settings.model_store == "s3://b/p/"
    assert settings.max_body_size == 1024 * 1024


def test_settings_every_field_has_flag_env_and_doc(capsys):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    parser.print_help()
    text = capsys.readouterr().out
    for name in Settings.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in text
        assert "MME_" + name.upper() in text


def test_settings_bad_env_value_exits_with_message():
    with pytest.raises(SystemExit, match="MME_PORT"):
        _parse([], {"MME_PORT": "eighty"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("123", 123),
        ("6MiB", 6 * 1024**2),
        ("1.5GiB", int(1.5 * 1024**3)),
        ("10GB", 10 * 1000**3),
        ("2k", 2000),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


def test_parse_size_refuses_garbage():
    with pytest.raises(ValueError):
        parse_size("lots")


def test_settings_triton_targets_follow_url():
    settings = Settings(triton_url="http://triton:8000", triton_grpc_port=9001)
    assert settings.triton_http_url == "http://triton:8000"
    assert settings.triton_grpc_target == "triton:9001"


@pytest.mark.parametrize(
    ("text", "cores", "count"), [("auto", 64, 16), ("auto", 2, 1), ("3", 64, 3)]
)
def test_workers_count(text, cores, count):
    assert worker_count(text, cores) == count


@pytest.mark.parametrize("text", ["0", "-1", "two", "257", ""])
def test_workers_refuses_what_is_no_count(text):
    with pytest.raises(ValueError, match="--workers"):
        worker_count(text)
    with pytest.raises(SystemExit, match="--workers"):
        settings_from(None, {"MME_WORKERS": text} if text else {"MME_WORKERS": " "})


@pytest.mark.parametrize("text", ["0", "-2"])
def test_worker_timeout_must_be_above_zero(text):
    with pytest.raises(SystemExit, match="--worker-timeout"):
        settings_from(None, {"MME_WORKER_TIMEOUT": text})


def test_workers_above_one_need_a_fixed_port(capsys):
    from gateway.__main__ import serve

    with pytest.raises(SystemExit):
        serve(["--workers", "2", "--port", "0"])
    assert "needs a fixed --port" in capsys.readouterr().err


def test_every_setting_has_a_row_in_the_readmes_table():
    rows = [
        line
        for line in (Path(__file__).parent.parent / "README.md").read_text().splitlines()
        if line.startswith("| `--")
    ]
    for field in dataclasses.fields(Settings):
        flag, variable = f"`--{field.name.replace('_', '-')}`", f"`MME_{field.name.upper()}`"
        assert any(flag in row and variable in row for row in rows), f"{flag} is not in README"
