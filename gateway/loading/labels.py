"""A label beside each model's config saying which target it is, so that a gateway restarted
beside a Triton that still holds the model can adopt it (Triton knows only folder names)."""

from __future__ import annotations

from pathlib import Path

import orjson

from gateway.resolve import ModelRef

LABEL_FILE = ".mme-ref.json"


def write_label(model_dir: Path, ref: ModelRef) -> None:
    """Blocking."""
    label = {
        "name": ref.name,
        "candidates": list(ref.candidates),
        "source": ref.source,
        "variant": ref.variant,
        "renames": [list(pair) for pair in ref.renames],
    }
    (model_dir / LABEL_FILE).write_bytes(orjson.dumps(label))


def read_label(model_dir: Path) -> ModelRef | None:
    """Blocking: the target a folder holds, or None when it has no readable label."""
    try:
        label = orjson.loads((model_dir / LABEL_FILE).read_bytes())
        return ModelRef(
            name=str(label["name"]),
            candidates=tuple(str(c) for c in label["candidates"]),
            triton_name=model_dir.name,
            source=str(label.get("source", "")),
            variant=str(label.get("variant", "")),
            renames=tuple((str(a), str(b)) for a, b in label.get("renames", [])),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
