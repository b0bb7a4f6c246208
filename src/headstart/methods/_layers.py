"""Torch building blocks the parameter-efficient methods inject, and how they find where to.

Nothing here knows about BERT: targets are found structurally. A model's *blocks* are the
children of its ``nn.ModuleList``s of identical layers (``encoder.layer`` in BERT, ``layers`` in
LLaMA and Whisper, ``encoder.layer`` in ViT, ``_blocks`` in EfficientNet); LoRA adapts every
``nn.Linear`` inside them by default, or, where the blocks have none (a convolutional net's MBConv
blocks), every pointwise (1x1, ungrouped) ``nn.Conv2d`` -- the next kind in :data:`LAYER_KINDS`.
Adapters go after the blocks' output projections, named per architecture family in
:data:`ADAPTER_SITES` (a table, not a substring match).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import BadInput


def find_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(qualified name, module) of every repeated transformer/CNN block, outermost lists only."""
    found: list[tuple[str, nn.Module]] = []
    taken: list[str] = []
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.ModuleList) or len(mod) == 0:
            continue
        if any(name.startswith(t + ".") for t in taken):
            continue
        if len({type(c) for c in mod}) != 1:
            continue
        taken.append(name)
        found.extend((f"{name}.{i}" if name else str(i), child) for i, child in enumerate(mod))
    return found


def is_pointwise_conv(mod: nn.Module) -> bool:
    """A 1x1, ungrouped, stride-1, unpadded ``nn.Conv2d``: a linear map over channels at every pixel
    (EfficientNet's expand/project convs; ``Conv2dStaticSamePadding`` pads nothing at 1x1 stride 1)."""
    return (isinstance(mod, nn.Conv2d) and tuple(mod.kernel_size) == (1, 1) and mod.groups == 1
            and tuple(mod.stride) == (1, 1) and mod.padding in ((0, 0), "valid", "same"))


LAYER_KINDS: dict[str, tuple[str, Callable[[nn.Module], bool]]] = {
    # kind: (how messages name it, test); a method lists the kinds it adapts, in order of preference
    "linear": ("nn.Linear", lambda m: isinstance(m, nn.Linear)),
    "pointwise-conv": ("pointwise (1x1) nn.Conv2d", is_pointwise_conv),
}


def linear_targets(model: nn.Module, names: list[str] | None, *, what: str,
                   kinds: tuple[str, ...] = ("linear",)) -> list[tuple[str, str]]:
    """(qualified name, name relative to its block) of the layers to adapt inside the blocks: those
    of the first of ``kinds`` (:data:`LAYER_KINDS`) the blocks have any of, optionally only those
    whose relative name is in ``names``. Raises a clear error when none match."""
    blocks = find_blocks(model)
    found: dict[str, list[tuple[str, str]]] = {k: [] for k in kinds}
    for block_name, block in blocks:
        for rel, mod in block.named_modules():
            kind = next((k for k in kinds if rel and LAYER_KINDS[k][1](mod)), None)
            if kind is not None:
                found[kind].append((f"{block_name}.{rel}", rel))
    kind = next((k for k in kinds if found[k]), None)
    shown = " or ".join(LAYER_KINDS[k][0] for k in kinds)
    if kind is None:
        if not blocks:
            raise BadInput(
                f"{what}: found no repeated blocks (nn.ModuleList of layers) in {type(model).__name__}; "
                "this method adapts the layers of repeated blocks: use finetune or linear-probe for this backbone"
            )
        hint = " (convolutional? lora, dora and adapter adapt pointwise convs)" if kinds == ("linear",) else ""
        raise BadInput(
            f"{what}: the blocks of {type(model).__name__} have no {shown} layers to adapt{hint}; "
            "use finetune or linear-probe for this backbone"
        )
    seen_relative = {rel for _, rel in found[kind]}
    out = [(full, rel) for full, rel in found[kind] if names is None or rel in names]
    if not out:
        raise BadInput(
            f"{what}: none of targets={','.join(names or [])} is a {LAYER_KINDS[kind][0]} layer in the blocks of "
            f"{type(model).__name__}; its block layers are: {', '.join(sorted(seen_relative))}"
        )
    if names is not None:
        missing = sorted(set(names) - seen_relative)
        if missing:
            raise BadInput(
                f"{what}: targets {', '.join(missing)} match no {LAYER_KINDS[kind][0]} layer in the blocks of "
                f"{type(model).__name__}; its block layers are: {', '.join(sorted(seen_relative))}"
            )
    return out


ADAPTABLE = ("linear", "pointwise-conv")
"""The layer kinds LoRA/DoRA and adapters work on: linear layers, else pointwise convolutions."""

ADAPTER_SITES: dict[str, tuple[str, ...]] = {
    # family: the block's output projections an adapter follows (transformers: attention output,
    # feed-forward output), relative to a block
    "bert": ("attention.output.dense", "output.dense"),  # BERT, RoBERTa, MiniLM, XLM-R (transformers 4 ViT)
    "mpnet": ("attention.output.dense", "output.dense"),
    "llama": ("self_attn.o_proj", "mlp.down_proj"),  # LLaMA, Qwen2, SmolLM, Gemma, Mistral
    "whisper": ("self_attn.out_proj", "fc2"),  # Whisper, BART encoder layers
    "vit-timm": ("attn.proj", "mlp.fc2"),
    "vit": ("attention.o_proj", "mlp.fc2"),  # transformers >= 5 ViT, DeiT
    "siglip": ("self_attn.out_proj", "mlp.fc2"),  # SigLIP / CLIP vision towers
    "gpt-neox": ("attention.dense", "mlp.dense_4h_to_h"),
    "efficientnet": ("_project_conv",),  # MBConv blocks (EfficientNet, -Lite): the 1x1 projection conv
    "convnext": ("pwconv2",),  # ConvNeXt stages: each layer's second pointwise (linear) layer
}
"""Sites are relative to a block; where a family's repeated block is a stage of layers (ConvNeXt:
``layers.0.pwconv2``, ``layers.1.pwconv2``, ...), a site also matches every layer name ending in
``.<site>`` -- but only when no family's sites match exactly, so ``output.dense`` never also
takes BERT's ``attention.output.dense``."""


def adapter_targets(model: nn.Module, names: list[str] | None) -> list[tuple[str, str]]:
    """Where Houlsby adapters go: after each block's output projections (:data:`ADAPTER_SITES`)."""
    blocks = find_blocks(model)
    rel_layers = {rel for _, b in blocks for rel, m in b.named_modules()
                  if rel and any(LAYER_KINDS[k][1](m) for k in ADAPTABLE)}
    if names is None:
        for sites in ADAPTER_SITES.values():
            if all(site in rel_layers for site in sites):
                names = list(sites)
                break
        else:
            for sites in ADAPTER_SITES.values():
                inside = sorted(rel for rel in rel_layers if any(rel.endswith("." + site) for site in sites))
                if all(any(rel.endswith("." + site) for rel in inside) for site in sites):
                    names = inside
                    break
        if names is None:
            raise BadInput(
                f"adapter: no known attention/feed-forward output layers in the blocks of {type(model).__name__} "
                f"(block layers: {', '.join(sorted(rel_layers)) or 'none'}); name them with --set targets=ATTN_OUT,FFN_OUT"
            )
    return linear_targets(model, names, what="adapter", kinds=ADAPTABLE)


def replace_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def dense_weight(layer: nn.Module) -> torch.Tensor:
    """A linear layer's weight as a dense (out, in) tensor, dequantised for a 4-bit layer."""
    weight = layer.weight
    if getattr(weight, "quant_state", None) is not None:
        import bitsandbytes.functional as bnbf

        return bnbf.dequantize_4bit(weight.data, weight.quant_state)
    return weight


class LoRALinear(nn.Module):
    """``y = base(x) + (alpha / r) * B A dropout(x)`` -- LoRA (Hu et al. 2021, arXiv:2106.09685).

    ``A`` (r, in) starts Kaiming-uniform and ``B`` (out, r) at zero, so the wrapped layer starts
    exactly equal to the base. With ``dora=True`` the update is weight-decomposed (DoRA, Liu et
    al. 2024, arXiv:2402.09353): ``y = m / ||W0 + s B A||_row * (W0 + s B A) x + b``, with the
    row norm detached as the paper recommends (Sec. 4.3) so backprop holds no (out, in) graph.
    ``base`` is any layer with ``in_features``/``out_features`` (``nn.Linear``, 4-bit linear).
    """

    def __init__(self, base: nn.Module, rank: int, alpha: float, dropout: float, dora: bool = False):
        super().__init__()
        self.base = base
        self.in_features, self.out_features = self._features(base)
        self.rank, self.scaling, self.dora = rank, alpha / rank, dora
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        if dora:
            with torch.no_grad():
                self.magnitude = nn.Parameter(self.base_weight().float().norm(dim=1))  # (out,)

    @staticmethod
    def _features(base: nn.Module) -> tuple[int, int]:
        return base.in_features, base.out_features

    def _update(self, x: torch.Tensor) -> torch.Tensor:
        """``B A x`` (unscaled) in the base layer's output layout: (..., out)."""
        return F.linear(F.linear(x, self.lora_A), self.lora_B)

    @staticmethod
    def _per_channel(v: torch.Tensor) -> torch.Tensor:
        """An (out,) vector shaped to broadcast over the output: (..., out)."""
        return v

    def base_weight(self) -> torch.Tensor:
        """The frozen weight W0 as a dense (out, in) tensor."""
        return dense_weight(self.base)

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scaling  # (out, in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        update = self._update(self.dropout(x)) * self.scaling
        if not self.dora:
            return y + update.to(y.dtype)
        bias = self.base.bias
        y_nobias = y if bias is None else y - self._per_channel(bias).to(y.dtype)
        with torch.no_grad():
            norm = (self.base_weight().float() + self.delta_weight().float()).norm(dim=1)  # (out,)
        out = self._per_channel(self.magnitude / norm).to(y.dtype) * (y_nobias + update.to(y.dtype))
        return out if bias is None else out + self._per_channel(bias).to(y.dtype)

    @torch.no_grad()
    def merged_weight(self) -> torch.Tensor:
        """(out, in) float32: the weight of one plain layer computing the same function."""
        w = self.base_weight().float() + self.delta_weight().float()
        if self.dora:
            w = w * (self.magnitude / w.norm(dim=1)).unsqueeze(1)
        return w

    @torch.no_grad()
    def merged(self) -> nn.Module:
        """A plain ``nn.Linear`` computing the same function (for export)."""
        out = nn.Linear(self.in_features, self.out_features, bias=self.base.bias is not None)
        out.weight.copy_(self.merged_weight())
        if self.base.bias is not None:
            out.bias.copy_(self.base.bias.float())
        return out


class LoRAConv2d(LoRALinear):
    """LoRA / DoRA on a pointwise (1x1, ungrouped, stride 1) ``nn.Conv2d`` (:func:`is_pointwise_conv`).

    A 1x1 conv is a linear map over channels at every pixel, so the update is LoRALinear's with
    ``A`` (r, in) and ``B`` (out, r) applied as two 1x1 convs: ``y = base(x) + s * B(A(x))`` on
    (B, C, H, W), DoRA's magnitude and norm per output channel. :meth:`merged` is a copy of the
    base conv (its class and padding kept) with ``W0 + s B A`` as its (out, in, 1, 1) weight. A
    subclass so that everything merging LoRA layers for export merges these too.
    """

    @staticmethod
    def _features(base: nn.Module) -> tuple[int, int]:
        if not is_pointwise_conv(base):
            raise BadInput(f"LoRA on convolutions adapts pointwise (1x1, groups=1) convs only, not {base!r}")
        return base.in_channels, base.out_channels

    def _update(self, x: torch.Tensor) -> torch.Tensor:
        a = self.lora_A[:, :, None, None]  # (r, in, 1, 1)
        b = self.lora_B[:, :, None, None]  # (out, r, 1, 1)
        return F.conv2d(F.conv2d(x, a), b)  # (B, out, H, W)

    @staticmethod
    def _per_channel(v: torch.Tensor) -> torch.Tensor:
        return v.view(-1, 1, 1)  # (out, 1, 1) over (B, out, H, W)

    def base_weight(self) -> torch.Tensor:
        return self.base.weight.flatten(1)  # (out, in)

    @torch.no_grad()
    def merged(self) -> nn.Module:
        out = copy.deepcopy(self.base).float()
        out.weight.copy_(self.merged_weight().view_as(out.weight))
        return out


def lora_layer(base: nn.Module, rank: int, alpha: float, dropout: float, dora: bool = False) -> LoRALinear:
    """The LoRA wrapper for a target: :class:`LoRAConv2d` for a pointwise conv, else :class:`LoRALinear`."""
    cls = LoRAConv2d if isinstance(base, nn.Conv2d) else LoRALinear
    return cls(base, rank, alpha, dropout, dora=dora)


class Adapter(nn.Module):
    """Bottleneck adapter (Houlsby et al. 2019, arXiv:1902.00751): ``h + up(gelu(down(h)))``.

    Wraps a block's output projection so the adapter sees that sublayer's output before the
    residual connection and layer norm, as in the paper. ``up`` starts at zero: the wrapped block
    starts exactly equal to the pretrained one. On a pointwise conv (a conv block's projection,
    before its batch norm) ``down`` and ``up`` are 1x1 convs over the channels.
    """

    def __init__(self, base: nn.Module, bottleneck: int):
        super().__init__()
        self.base = base
        if isinstance(base, nn.Conv2d):
            self.in_features, self.out_features = base.in_channels, base.out_channels
            self.down = nn.Conv2d(self.out_features, bottleneck, 1)
            self.up = nn.Conv2d(bottleneck, self.out_features, 1)
        else:
            self.in_features, self.out_features = base.in_features, base.out_features
            self.down = nn.Linear(self.out_features, bottleneck)
            self.up = nn.Linear(bottleneck, self.out_features)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        nn.init.normal_(self.down.weight, std=1e-2)
        nn.init.zeros_(self.down.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.base(x)
        return h + self.up(F.gelu(self.down(h))).to(h.dtype)


# NF4 code book: quantiles of N(0, 1) scaled to [-1, 1] (Dettmers et al. 2023, QLoRA, Appendix E).
NF4_CODE = torch.tensor([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
])


class NF4Embedding(nn.Module):
    """A frozen embedding table held in 4-bit NF4 with one absmax per block of 64 values.

    bitsandbytes quantises linear layers but not embeddings, and in a small encoder the token
    table is half the weights (MiniLM: 11.7M of 22.7M). Rows are stored packed (two codes per
    byte) and only the looked-up rows are dequantised, so memory is ~0.14x of fp32 for the table.
    """

    def __init__(self, weight: torch.Tensor, padding_idx: int | None, block: int = 64):
        super().__init__()
        rows, dim = weight.shape
        if dim % block:
            block = dim  # one scale per row when the width is not a multiple of the block
        if dim % 2:
            raise BadInput(f"qlora: embedding width {dim} is odd; 4-bit packing needs an even width")
        self.num_embeddings, self.embedding_dim, self.block, self.padding_idx = rows, dim, block, padding_idx
        w = weight.detach().float().reshape(rows, dim // block, block)
        absmax = w.abs().amax(-1, keepdim=True).clamp(min=1e-12)  # (rows, nblocks, 1)
        normed = (w / absmax).reshape(rows, dim)
        mids = (NF4_CODE[1:] + NF4_CODE[:-1]) / 2
        codes = torch.bucketize(normed.contiguous(), mids).to(torch.uint8)  # (rows, dim) in 0..15
        self.register_buffer("packed", (codes[:, 0::2] << 4) | codes[:, 1::2])  # (rows, dim/2) uint8
        self.register_buffer("absmax", absmax.squeeze(-1).to(torch.float16))  # (rows, nblocks)
        self.register_buffer("code", NF4_CODE.clone())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        packed = self.packed[ids]  # (..., dim/2)
        codes = torch.stack(((packed >> 4) & 15, packed & 15), dim=-1).flatten(-2).long()  # (..., dim)
        values = self.code[codes]
        scale = self.absmax[ids].float().repeat_interleave(self.block, dim=-1)  # (..., dim)
        return values * scale

    @property
    def weight(self) -> torch.Tensor:
        """The dequantised table (dense; for export and inspection only)."""
        return self.forward(torch.arange(self.num_embeddings))


def param_counts(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters, counting 4-bit weights by their logical (unpacked) size."""
    trainable = total = 0
    for p in module.parameters():
        qs = getattr(p, "quant_state", None)
        n = math.prod(qs.shape) if qs is not None else p.numel()
        total += n
        trainable += n if p.requires_grad else 0
    for m in module.modules():
        if isinstance(m, NF4Embedding):
            total += m.num_embeddings * m.embedding_dim
    return int(trainable), int(total)


def storage_bytes(module: nn.Module) -> int:
    """Bytes held by a module's parameters and buffers, counting 4-bit quantisation state."""
    total = 0
    seen: set[int] = set()
    for t in list(module.parameters()) + list(module.buffers()):
        if id(t) in seen:
            continue
        seen.add(id(t))
        total += t.numel() * t.element_size()
        qs = getattr(t, "quant_state", None)
        if qs is not None:
            total += _quant_state_bytes(qs)
    return total


def _quant_state_bytes(qs) -> int:
    n = 0
    for attr in ("absmax", "code", "offset"):
        t = getattr(qs, attr, None)
        if isinstance(t, torch.Tensor):
            n += t.numel() * t.element_size()
    inner = getattr(qs, "state2", None)
    if inner is not None:
        n += _quant_state_bytes(inner)
    return n
