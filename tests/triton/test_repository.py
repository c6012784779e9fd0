"""config.pbtxt parsing and rewriting, on real files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from gateway.errors import ValidationError
from gateway.triton.repository import (
    is_cpu_only,
    parse_config,
    prepare_model_dir,
    read_config,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "triton_repo_template" / "examples"
KIND_GPU = model_config_pb2.ModelInstanceGroup.KIND_GPU
KIND_CPU = model_config_pb2.ModelInstanceGroup.KIND_CPU
KIND_AUTO = model_config_pb2.ModelInstanceGroup.KIND_AUTO

FULL_CONFIG = """
# comments are allowed
name: "original"
backend: "python"
max_batch_size: 64
input [{ name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] }]
output [{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] }]
dynamic_batching { max_queue_delay_microseconds: 500 }
instance_group [
  { name: "gpu_group" kind: KIND_GPU count: 2 gpus: [ 0, 1 ] },
  { kind: KIND_CPU count: 3 },
  { kind: KIND_AUTO }
]
parameters { key: "LOAD_LOG" value: { string_value: "/tmp/log" } }
"""


def write_model(tmp_path: Path, config: str) -> Path:
    model = tmp_path / "model"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text(config)
    return model


def test_read_config_parses_fields(tmp_path: Path) -> None:
    config = read_config(write_model(tmp_path, FULL_CONFIG))

    assert config.name == "original"
    assert config.max_batch_size == 64
    assert [i.name for i in config.input] == ["INPUT0"]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert config.parameters["LOAD_LOG"].string_value == "/tmp/log"


def test_read_config_parse_error_has_parser_message(tmp_path: Path) -> None:
    model = write_model(tmp_path, 'name: "m"\nmax_batch_sise: 4\n')

    with pytest.raises(ValidationError) as raised:
        read_config(model)

    message = raised.value.message
    assert message.startswith("config.pbtxt is not a valid Triton model config: ")
    assert "2:1" in message
    assert 'no field named "max_batch_sise"' in message


def test_read_config_syntax_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not a valid Triton model config"):
        read_config(write_model(tmp_path, "input [{ name: "))


def test_read_config_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"no config\.pbtxt"):
        read_config(tmp_path)


def test_read_config_not_utf8(tmp_path: Path) -> None:
    model = write_model(tmp_path, "")
    (model / "config.pbtxt").write_bytes(b'name: "\xff"')

    with pytest.raises(ValidationError, match="not UTF-8"):
        read_config(model)


def test_prepare_model_dir_rewrites_name(tmp_path: Path) -> None:
    model = write_model(tmp_path, FULL_CONFIG)

    returned = prepare_model_dir(model, "m-3f2a", gpu_available=True)

    on_disk = read_config(model)
    assert returned.name == on_disk.name == "m-3f2a"
    assert on_disk == returned


def test_prepare_model_dir_keeps_gpu_groups_with_gpu(tmp_path: Path) -> None:
    model = write_model(tmp_path, FULL_CONFIG)

    config = prepare_model_dir(model, "m", gpu_available=True)

    assert [g.kind for g in config.instance_group] == [KIND_GPU, KIND_CPU, KIND_AUTO]
    assert list(config.instance_group[0].gpus) == [0, 1]


def test_prepare_model_dir_gpu_to_cpu_without_gpu(tmp_path: Path) -> None:
    model = write_model(tmp_path, FULL_CONFIG)

    prepare_model_dir(model, "m", gpu_available=False)

    groups = read_config(model).instance_group
    assert [g.kind for g in groups] == [KIND_CPU, KIND_CPU, KIND_AUTO]
    assert list(groups[0].gpus) == []
    assert groups[0].count == 2
    assert groups[0].name == "gpu_group"
    assert groups[1].count == 3


def test_prepare_model_dir_empty_instance_group_stays_empty(tmp_path: Path) -> None:
    model = write_model(tmp_path, 'name: "m"\nbackend: "python"\n')

    config = prepare_model_dir(model, "m2", gpu_available=False)

    assert len(config.instance_group) == 0
    assert len(read_config(model).instance_group) == 0


def test_prepare_model_dir_round_trip_keeps_everything_but_name(tmp_path: Path) -> None:
    model = write_model(tmp_path, FULL_CONFIG)
    original = parse_config(FULL_CONFIG)

    prepare_model_dir(model, "renamed", gpu_available=True)

    rewritten = read_config(model)
    rewritten.name = original.name
    assert rewritten == original
    assert "comments are allowed" not in (model / "config.pbtxt").read_text()


def test_prepare_model_dir_leaves_no_temp_files(tmp_path: Path) -> None:
    model = write_model(tmp_path, FULL_CONFIG)

    prepare_model_dir(model, "m", gpu_available=False)

    assert sorted(p.name for p in model.iterdir()) == ["1", "config.pbtxt"]
    assert (model / "config.pbtxt").stat().st_mode & 0o777 == 0o644


def test_prepare_model_dir_invalid_config_left_untouched(tmp_path: Path) -> None:
    model = write_model(tmp_path, "name: [")

    with pytest.raises(ValidationError):
        prepare_model_dir(model, "m", gpu_available=False)

    assert (model / "config.pbtxt").read_text() == "name: ["


def test_prepare_model_dir_gpu_example_becomes_cpu_only(tmp_path: Path) -> None:
    model = tmp_path / "gpu_add_one"
    shutil.copytree(EXAMPLES / "gpu_add_one", model)
    assert not is_cpu_only(read_config(model))

    config = prepare_model_dir(model, "gpu_add_one", gpu_available=False)

    assert is_cpu_only(config)
    assert is_cpu_only(read_config(model))


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        ("", False),
        ("instance_group [{ kind: KIND_CPU }]", True),
        ("instance_group [{ kind: KIND_CPU }, { kind: KIND_CPU count: 2 }]", True),
        ("instance_group [{ kind: KIND_CPU }, { kind: KIND_GPU }]", False),
        ("instance_group [{ kind: KIND_AUTO }]", False),
    ],
    ids=["none", "one_cpu", "two_cpu", "mixed", "auto"],
)
def test_is_cpu_only_instance_groups(groups: str, expected: bool) -> None:
    assert is_cpu_only(parse_config(f'name: "m"\n{groups}')) is expected


def test_parse_config_round_trip_through_text_format() -> None:
    original = parse_config(FULL_CONFIG)

    again = parse_config(text_format.MessageToString(original))

    assert again == original
