"""Read and rewrite a model's ``config.pbtxt`` as Triton's ``ModelConfig`` protobuf message.

The file is parsed and printed with protobuf's text format, never edited as text, so nested
blocks, comments and odd formatting cannot fool a rewrite. Comments are lost on write.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from gateway.errors import ValidationError

CONFIG_FILE = "config.pbtxt"
_KIND_GPU = model_config_pb2.ModelInstanceGroup.KIND_GPU
_KIND_CPU = model_config_pb2.ModelInstanceGroup.KIND_CPU


def read_config(model_dir: Path) -> model_config_pb2.ModelConfig:
    """Parse ``model_dir/config.pbtxt``; ValidationError says what is wrong and where."""
    try:
        text = (model_dir / CONFIG_FILE).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ValidationError(f"the model has no {CONFIG_FILE}") from exc
    except UnicodeDecodeError as exc:
        raise ValidationError(f"{CONFIG_FILE} is not UTF-8 text: {exc}") from exc
    return parse_config(text)


def parse_config(text: str) -> model_config_pb2.ModelConfig:
    config = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        # The parser's message carries line:column, which is what a user needs to fix it.
        raise ValidationError(f"{CONFIG_FILE} is not a valid Triton model config: {exc}") from exc
    return config


def prepare_model_dir(
    model_dir: Path,
    triton_name: str,
    *,
    gpu_available: bool,
    renames: Mapping[str, str] | None = None,
) -> model_config_pb2.ModelConfig:
    """Make an unpacked model loadable under ``triton_name`` on this host; returns its config.

    Triton requires ``name`` to match the folder, and refuses KIND_GPU groups on a host
    without GPUs, so both are rewritten before the load request. An ensemble's steps name
    its composing models, which the gateway renamed too: ``renames`` maps old to new.
    """
    config = read_config(model_dir)
    config.name = triton_name
    for step in config.ensemble_scheduling.step:
        step.model_name = (renames or {}).get(step.model_name, step.model_name)
    if not gpu_available:
        _gpu_groups_to_cpu(config)
    _write_atomically(model_dir / CONFIG_FILE, text_format.MessageToString(config))
    return config


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    datatype: str
    shape: list[int]


@dataclass(frozen=True, slots=True)
class ModelView:
    """What the gateway needs of a model's config, as plain data (no protobuf types)."""

    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    cpu_only: bool
    cpu_fallback: bool
    """parameters { key: "cpu_fallback" value: { string_value: "true" } }"""
    instances: int
    """Instances of its first instance group."""
    batch: int
    """Requests one instance takes at once: max_batch_size with dynamic batching, else 1."""
    min_instances: int | None
    max_instances: int | None
    """Config parameters mme_min_instances / mme_max_instances, when set."""
    memory_bytes: int | None
    """Config parameter mme_memory_mb, the model's declared need before its first load."""
    python_backend: bool
    """Its instances run in stub processes of their own (their memory can be attributed)."""
    config_json: str
    """The config as JSON, the base of load_model overrides."""
    cpu_config_json: str
    """The same with every GPU instance group on the CPU."""


def view(config: model_config_pb2.ModelConfig) -> ModelView:
    groups = config.instance_group
    dynamic = config.HasField("dynamic_batching")
    memory_mb = _int_parameter(config, "mme_memory_mb")
    batch = config.max_batch_size
    return ModelView(
        max_batch_size=batch,
        inputs=tuple(_spec(t, batch) for t in config.input),
        outputs=tuple(_spec(t, batch) for t in config.output),
        cpu_only=is_cpu_only(config),
        cpu_fallback=_text_parameter(config, "cpu_fallback").lower() in {"true", "1", "yes"},
        instances=max(groups[0].count, 1) if groups else 1,
        batch=max(batch, 1) if dynamic else 1,
        min_instances=_int_parameter(config, "mme_min_instances"),
        max_instances=_int_parameter(config, "mme_max_instances"),
        memory_bytes=None if memory_mb is None else memory_mb << 20,
        python_backend=config.backend == "python",
        config_json=_json(config),
        cpu_config_json=_json(to_cpu(config)),
    )


def read_view(model_dir: Path) -> ModelView:
    return view(read_config(model_dir))


def specs(tensors: list[dict[str, object]]) -> tuple[TensorSpec, ...]:
    """Tensor specs from Triton's model metadata (JSON)."""
    out = []
    for t in tensors:
        shape = t.get("shape", [])
        dims = [int(d) for d in shape] if isinstance(shape, list) else []
        out.append(TensorSpec(str(t["name"]), str(t["datatype"]), dims))
    return tuple(out)


def _spec(
    tensor: model_config_pb2.ModelInput | model_config_pb2.ModelOutput, max_batch_size: int
) -> TensorSpec:
    """As Triton's metadata states it: KServe datatype names, the batch dimension included."""
    datatype = model_config_pb2.DataType.Name(tensor.data_type).removeprefix("TYPE_")
    shape = [int(d) for d in tensor.dims]
    return TensorSpec(
        tensor.name,
        "BYTES" if datatype == "STRING" else datatype,
        [-1, *shape] if max_batch_size > 0 else shape,
    )


def _text_parameter(config: model_config_pb2.ModelConfig, key: str) -> str:
    parameter = config.parameters.get(key)
    return parameter.string_value.strip() if parameter is not None else ""


def _int_parameter(config: model_config_pb2.ModelConfig, key: str) -> int | None:
    text = _text_parameter(config, key)
    return int(text) if text.isascii() and text.isdigit() else None


def _json(config: model_config_pb2.ModelConfig) -> str:
    return str(json_format.MessageToJson(config, preserving_proto_field_name=True, indent=None))


def is_cpu_only(config: model_config_pb2.ModelConfig) -> bool:
    """True when the config names instance groups and all of them run on the CPU."""
    groups = config.instance_group
    return len(groups) > 0 and all(group.kind == _KIND_CPU for group in groups)


def to_cpu(config: model_config_pb2.ModelConfig) -> model_config_pb2.ModelConfig:
    """A copy of ``config`` with every GPU instance group on the CPU (a load override)."""
    copy = model_config_pb2.ModelConfig()
    copy.CopyFrom(config)
    _gpu_groups_to_cpu(copy)
    return copy


def _gpu_groups_to_cpu(config: model_config_pb2.ModelConfig) -> None:
    for group in config.instance_group:
        if group.kind == _KIND_GPU:
            group.kind = _KIND_CPU
            group.ClearField("gpus")  # GPU ids mean nothing to a CPU instance


def _write_atomically(path: Path, text: str) -> None:
    # Triton may read the folder at any moment; it must see the old file or the new one.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; Triton may run as another user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
