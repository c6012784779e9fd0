"""Production variants on one gateway: several model stores, split by weight (A/B tests).

``--variant NAME=WEIGHT@STORE`` (repeatable) gives each variant its own model store; the
same target path in two variants is two different models, with Triton names of their own.
A request naming ``X-Amzn-SageMaker-Target-Variant`` goes to that variant (an unknown name
is a ValidationError, as SageMaker answers); the others are split by weight. Without the
flag there is one variant, ``--variant-name``, over ``--model-store``.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import random
from dataclasses import dataclass
from functools import lru_cache

from gateway.errors import ValidationError
from gateway.resolve import ModelRef, scoped_triton_name
from gateway.settings import Settings


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    weight: float
    store: str


def parse_variant(text: str) -> Variant:
    name, sep, rest = text.partition("=")
    weight, at, store = rest.partition("@")
    try:
        value = float(weight)
    except ValueError:
        value = -1.0
    if not sep or not at or not name.strip() or not store.strip() or value < 0:
        raise ValueError(f"--variant must be NAME=WEIGHT@STORE, got {text!r}")
    return Variant(name.strip(), value, store.strip())


class Variants:
    def __init__(self, settings: Settings) -> None:
        if settings.variant:
            self.all = [parse_variant(v) for v in settings.variant]
        else:
            self.all = [Variant(settings.variant_name, 1.0, settings.model_store)]
        names = [v.name for v in self.all]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique: {names}")
        if sum(v.weight for v in self.all) <= 0:
            raise ValueError("at least one variant needs a positive weight")
        self.by_name = {v.name: v for v in self.all}
        self._cumulative = list(itertools.accumulate(v.weight for v in self.all))
        self.single = len(self.all) == 1

    def choose(self, requested: str | None) -> Variant:
        if requested is not None:
            variant = self.by_name.get(requested)
            if variant is None:
                raise ValidationError(
                    f"Target variant '{requested[:64]}' is not one of this endpoint's variants: "
                    f"{', '.join(self.by_name)}."
                )
            return variant
        if self.single:
            return self.all[0]
        point = random.random() * self._cumulative[-1]
        return self.all[bisect.bisect_right(self._cumulative, point)]

    def ref(self, ref: ModelRef, variant: Variant) -> ModelRef:
        """The model as this variant holds it: the default variant keeps the plain names."""
        return ref if self.single else _in_variant(ref, variant.name)


@lru_cache(maxsize=65536)
def _in_variant(ref: ModelRef, variant: str) -> ModelRef:
    return dataclasses.replace(ref, triton_name=scoped_triton_name(variant, ref), variant=variant)
