from __future__ import annotations

import random
from collections import Counter

import pytest

from gateway.errors import ValidationError
from gateway.resolve import resolve_target
from gateway.settings import Settings
from gateway.variants import Variant, Variants, parse_variant


def test_parse_variant_reads_name_weight_store():
    assert parse_variant("A=70@s3://bucket/a/") == Variant("A", 70.0, "s3://bucket/a/")
    assert parse_variant(" B = 0.5 @/models/b") == Variant("B", 0.5, "/models/b")


@pytest.mark.parametrize("text", ["A", "A=1", "A@/x", "=1@/x", "A=x@/x", "A=-1@/x", "A=1@"])
def test_parse_variant_refuses_malformed(text):
    with pytest.raises(ValueError, match="NAME=WEIGHT@STORE"):
        parse_variant(text)


def test_variants_split_by_weight_within_tolerance():
    random.seed(7)
    variants = Variants(Settings(variant=("A=3@/a", "B=1@/b")))
    counts = Counter(variants.choose(None).name for _ in range(4000))
    assert abs(counts["A"] / 4000 - 0.75) < 0.03


def test_variants_honour_target_variant_and_refuse_unknown():
    variants = Variants(Settings(variant=("A=1@/a", "B=0@/b")))
    assert variants.choose("B").name == "B"  # even at weight 0, when asked for by name
    with pytest.raises(ValidationError, match="not one of"):
        variants.choose("C")


def test_variants_give_each_variant_its_own_triton_name():
    variants = Variants(Settings(variant=("A=1@/a", "B=1@/b")))
    ref = resolve_target("m.tar.gz")
    a, b = (variants.ref(ref, variants.by_name[n]) for n in "AB")
    assert len({a.triton_name, b.triton_name, ref.triton_name}) == 3
    assert (a.variant, b.variant) == ("A", "B")


def test_single_variant_keeps_plain_names():
    variants = Variants(Settings(variant_name="Prod"))
    ref = resolve_target("m.tar.gz")
    chosen = variants.choose(None)
    assert chosen.name == "Prod" and variants.ref(ref, chosen) is ref


def test_variants_refuse_duplicates_and_zero_total():
    with pytest.raises(ValueError, match="unique"):
        Variants(Settings(variant=("A=1@/a", "A=1@/b")))
    with pytest.raises(ValueError, match="positive"):
        Variants(Settings(variant=("A=0@/a",)))
