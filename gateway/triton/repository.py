"""Read and rewrite a model's ``config.pbtxt`` as Triton's ``ModelConfig`` protobuf message.

The file is parsed and printed with protobuf's text format, never edited as text, so nested
blocks, comments and odd formatting cannot fool a rewrite. Comments are lost on write.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from google.protobuf import text_format
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
