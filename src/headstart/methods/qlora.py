"""QLoRA: the frozen base held in 4-bit NF4, LoRA trained on top (Dettmers et al. 2023).

The blocks' linear layers become bitsandbytes ``Linear4bit`` (NF4, optional double quantisation
of the block scales); their forward and backward run on the CPU (bitsandbytes >= 0.46). The token
embedding table, half the weights of a small encoder, is held in NF4 too (``NF4Embedding``); the
small rest (position embeddings, norms, biases) stays fp32. ``fit`` reports the measured bytes of
the base weights before and after, so "4 bits" is a measurement, not a claim.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import BadInput
from ._layers import NF4Embedding, replace_module, storage_bytes
from .base import FitContext
from .lora import LoRA, LoRAConfig
from .trained import TaskModel

EMBEDDING_MIN_ROWS = 1000
"""Embedding tables with at least this many rows (token vocabularies) are quantised; position and
type embeddings are small and precision-sensitive, and stay fp32."""


def require_bitsandbytes():
    # bitsandbytes logs at import that an optional faster CPU kernel (the `kernels` package) is
    # missing; the portable kernels are what this method measures, so keep the log clean.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    try:
        import bitsandbytes
    except ImportError:
        raise BadInput('qlora needs bitsandbytes for its 4-bit kernels: pip install "headstart[qlora]" (or use --method lora)') from None
    return bitsandbytes


@dataclass
class QLoRAConfig(LoRAConfig):
    double_quant: bool = True
    """Quantise the per-block scales too (QLoRA's double quantisation: ~0.37 bit/param saved)."""
    quantize_embeddings: bool = True
    """Hold the token embedding table in NF4 as well."""

    def validate(self, method: str) -> None:
        super().validate(method)
        for name in ("double_quant", "quantize_embeddings"):
            if not isinstance(getattr(self, name), bool):
                raise BadInput(f"{method} option {name} must be true or false (got {getattr(self, name)!r})")
        require_bitsandbytes()


@torch.no_grad()
def _own_storage(body: nn.Module) -> None:
    """Copy the weights left in full precision (embeddings, norms) into memory of their own.

    transformers maps the safetensors file into memory and the loaded tensors are views of that
    mapping; quantising reads every page of it, and the pages stay resident while any view lives.
    Measured on SmolLM2-135M (benchmarks/README.md "Generation"): 926 MB RSS after quantising,
    520 MB of it the file's pages; 632 MB once the rest is copied out (the copies are ~115 MB)."""
    import gc

    for mod in body.modules():
        for name, p in list(mod.named_parameters(recurse=False)):
            if type(p) is nn.Parameter:  # bitsandbytes' Params4bit already owns its packed bytes
                p.data = p.data.clone()
        for name, b in list(mod.named_buffers(recurse=False)):
            if b is not None:
                mod._buffers[name] = b.clone()
    gc.collect()
    _trim_heap()


def _trim_heap() -> None:
    """Give the heap pages freed by quantisation back to the OS (glibc keeps them otherwise)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
    except OSError:  # not glibc (macOS, musl): nothing to trim
        pass


class QLoRA(LoRA):
    name = "qlora"
    target_kinds = ("linear",)  # NF4 quantises linear layers only: a convolutional net is refused
    config_cls = QLoRAConfig

    def prepare(self, model: TaskModel, ctx: FitContext) -> None:
        bnb = require_bitsandbytes()
        cfg = self.resolved_
        device = self._backbone_of(model).device
        self.fp32_bytes_ = storage_bytes(model.body)
        targets = self.freeze_and_target(model)
        compute = torch.bfloat16 if ctx.precision == "bf16" else torch.float32
        for name, _ in targets:
            lin = model.body.get_submodule(name)
            q = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=lin.bias is not None, compute_dtype=compute,
                                  compress_statistics=cfg.double_quant, quant_type="nf4")
            q.load_state_dict(lin.state_dict())
            q = q.to(device)  # bitsandbytes quantises when the weight moves to its device
            # In eval mode on AVX512-BF16 CPUs bitsandbytes repacks the weight into another layout
            # (undoing double quantisation, needing in_features >= 64, and only faster with the
            # optional `kernels` package). Keep one layout for training, inference and export.
            q.support_avx512bf16_for_cpu = False
            q.weight.requires_grad_(False)
            if q.bias is not None:
                q.bias.requires_grad_(False)
            replace_module(model.body, name, q)
        self.tied_kept_ = []
        if cfg.quantize_embeddings:
            # A table tied to an output head (Whisper's and most LMs' proj_out / lm_head share the
            # token embedding) stays as it is: quantising it would untie the two and keep the fp32
            # copy for the head anyway.
            shared = {id(p) for n, m in model.body.named_modules() if not isinstance(m, nn.Embedding)
                      for p in m.parameters(recurse=False)}
            for name, mod in list(model.body.named_modules()):
                if isinstance(mod, nn.Embedding) and mod.num_embeddings >= EMBEDDING_MIN_ROWS:
                    if id(mod.weight) in shared:
                        self.tied_kept_.append(name)
                        continue
                    replace_module(model.body, name, NF4Embedding(mod.weight, mod.padding_idx).to(device))
        _own_storage(model.body)
        self.base_bytes_ = storage_bytes(model.body)
        self.wrap(model, targets)

    def fit_details(self, model: TaskModel) -> dict[str, Any]:
        return {
            **super().fit_details(model),
            "base_weight_bytes_fp32": self.fp32_bytes_,
            "base_weight_bytes": self.base_bytes_,
            "base_weight_ratio": round(self.base_bytes_ / self.fp32_bytes_, 4),
            **({"tied_embeddings_kept": self.tied_kept_} if getattr(self, "tied_kept_", None) else {}),
        }
