"""Precision selection."""

from __future__ import annotations

import dataclasses

import pytest

import headstart.train.precision as precision
from headstart.catalog import CATALOG
from headstart.errors import BadInput
from headstart.train import resolve_precision

UNMEASURED = dataclasses.replace(CATALOG["efficientnet-lite0"], bf16_measured_ok=False)
MEASURED = dataclasses.replace(CATALOG["minilm-l6"], bf16_measured_ok=True)


@pytest.mark.parametrize("has_bf16", [True, False])
def test_auto_is_fp32_for_a_backbone_not_measured_in_bf16(monkeypatch, has_bf16):
    monkeypatch.setattr(precision, "bf16_available", lambda: has_bf16)
    assert resolve_precision("auto", UNMEASURED) == "fp32"


def test_auto_uses_bf16_only_where_measured_and_available(monkeypatch):
    monkeypatch.setattr(precision, "bf16_available", lambda: True)
    assert resolve_precision("auto", MEASURED) == "bf16"
    monkeypatch.setattr(precision, "bf16_available", lambda: False)
    assert resolve_precision("auto", MEASURED) == "fp32"


def test_explicit_choices(monkeypatch):
    monkeypatch.setattr(precision, "bf16_available", lambda: True)
    assert resolve_precision("fp32", MEASURED) == "fp32"
    assert resolve_precision("bf16", UNMEASURED) == "bf16"  # asked for explicitly: honoured


def test_bf16_without_hardware_support_is_bad_input(monkeypatch):
    monkeypatch.setattr(precision, "bf16_available", lambda: False)
    with pytest.raises(BadInput, match="--precision bf16"):
        resolve_precision("bf16", MEASURED)


@pytest.mark.parametrize("value", ["fp16", "BF16", "", "float32"])
def test_invalid_value_is_bad_input(value):
    with pytest.raises(BadInput, match="--precision"):
        resolve_precision(value, MEASURED)


def test_bf16_available_is_a_bool():
    assert isinstance(precision.bf16_available(), bool)
