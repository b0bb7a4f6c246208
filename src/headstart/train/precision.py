"""Numeric precision for running a backbone: fp32, or bf16 autocast where it is safe and fast."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ..catalog import BackboneSpec
from ..errors import BadInput

PRECISIONS = ("auto", "fp32", "bf16")


@functools.cache
def cpu_supports_bf16() -> bool:
    """True when oneDNN has native bf16 kernels on this CPU (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def bf16_available() -> bool:
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return cpu_supports_bf16()


def resolve_precision(requested: str, spec: BackboneSpec) -> str:
    """'auto' picks bf16 only where the hardware has it *and* it was measured harmless for this
    backbone (``spec.bf16_measured_ok``); otherwise fp32."""
    if requested not in PRECISIONS:
        raise BadInput(f"--precision {requested!r} is not one of {', '.join(PRECISIONS)}")
    if requested == "bf16" and not bf16_available():
        raise BadInput("--precision bf16: this machine has no native bf16 support (no AVX512-BF16/AMX or bf16 GPU); use --precision fp32")
    if requested == "auto":
        return "bf16" if spec.bf16_measured_ok and bf16_available() else "fp32"
    return requested


@contextmanager
def linears_in_bf16(module: torch.nn.Module, *, frozen_only: bool = False) -> Iterator[None]:
    """Cast ``nn.Linear`` weights (only frozen ones with ``frozen_only``) to bf16 for the block.

    Under autocast a linear layer runs in bf16 anyway; casting its weight once up front gives the
    same numbers without a copy per call. The fp32 tensors are put back afterwards, so trainable
    weights stay fp32 masters and nothing outside the block sees bf16.
    """
    saved = []
    for m in module.modules():
        if not isinstance(m, torch.nn.Linear) or m.weight.dtype != torch.float32:
            continue
        if frozen_only and (m.weight.requires_grad or (m.bias is not None and m.bias.requires_grad)):
            continue
        saved.append((m, m.weight.data, None if m.bias is None else m.bias.data))
        m.weight.data = m.weight.data.to(torch.bfloat16)
        if m.bias is not None:
            m.bias.data = m.bias.data.to(torch.bfloat16)
    try:
        yield
    finally:
        for m, w, b in saved:
            m.weight.data = w
            if b is not None:
                m.bias.data = b
