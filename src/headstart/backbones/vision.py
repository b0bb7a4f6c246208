"""Image backbones: EfficientNet-Lite (packaged weights) and Hugging Face vision encoders.

Preprocessing follows the backbone's :class:`~headstart.catalog.ImagePreprocessing` record and
needs only Pillow and numpy (no torchvision). Training-time augmentation (the classification
task's ``augment=crop-flip``) is :func:`load_image` with a random generator: a random resized
crop (area 0.5-1 of the image, aspect 3/4-4/3, as torchvision's ``RandomResizedCrop`` with
``scale=(0.5, 1)``) squashed to the input size, then a horizontal flip with probability 1/2.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ..catalog import ImagePreprocessing
from ..errors import BadInput
from .base import Backbone, quiet_transformers
from .batch_size import positive_int_env

_RESAMPLE = {"bilinear": 2, "bicubic": 3}  # PIL.Image.Resampling values


AUGMENT_SCALE = (0.5, 1.0)
"""Share of the image's area a random resized crop keeps."""
AUGMENT_RATIO = (3 / 4, 4 / 3)
"""Aspect ratios (width / height) a random resized crop takes, drawn log-uniformly."""


def _random_resized_crop(im, rng: np.random.Generator):
    """A crop of ``im`` with a random area share and aspect; the whole image when 10 draws do not fit."""
    w, h = im.size
    for _ in range(10):
        area = w * h * rng.uniform(*AUGMENT_SCALE)
        aspect = math.exp(rng.uniform(math.log(AUGMENT_RATIO[0]), math.log(AUGMENT_RATIO[1])))
        cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            return im.crop((left, top, left + cw, top + ch))
    return im


def load_image(path: str, pre: ImagePreprocessing, rng: np.random.Generator | None = None) -> np.ndarray:
    """(3, S, S) float32, normalised with the backbone's mean/std; with ``rng``, augmented for
    training (random resized crop squashed to S x S, random horizontal flip)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            s = pre.image_size
            if rng is not None:
                im = _random_resized_crop(im, rng).resize((s, s), _RESAMPLE[pre.interpolation])
                if rng.random() < 0.5:
                    im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            elif pre.resize == "squash":
                im = im.resize((s, s), _RESAMPLE[pre.interpolation])
            else:
                short = int(round(s / pre.crop_pct))
                w, h = im.size
                scale = short / min(w, h)
                im = im.resize((max(s, round(w * scale)), max(s, round(h * scale))), _RESAMPLE[pre.interpolation])
                w, h = im.size
                left, top = (w - s) // 2, (h - s) // 2
                im = im.crop((left, top, left + s, top + s))
            arr = np.asarray(im, dtype=np.float32) / 255.0  # (S, S, 3)
    except (OSError, UnidentifiedImageError) as e:
        raise BadInput(f"{path}: cannot read the image ({type(e).__name__}); remove or replace the file") from None
    arr = (arr - np.asarray(pre.mean, dtype=np.float32)) / np.asarray(pre.std, dtype=np.float32)
    return arr.transpose(2, 0, 1)


WORKERS_ENV = "HEADSTART_IMAGE_WORKERS"


def image_workers() -> int:
    """Threads that decode and resize a batch's images: ``HEADSTART_IMAGE_WORKERS``, else
    ``min(4, cores - 1)`` (1 on a 2-core machine, where decoding would compete with the model's
    own threads). Threads rather than DataLoader worker processes: Pillow's decoders and resampling
    run in C outside the GIL, and a batch needs no pickling. Measured on a 2-core machine with a
    benchmark holding the other core (so no parallel gain could show): one thread decoded ~100
    img/s of 500x375 JPEGs and ~18 img/s of 1600x1200 JPEGs to 224 px (shortest side + centre
    crop); 2 threads the same. The gain on a many-core GPU host is not measured yet."""
    n = positive_int_env(WORKERS_ENV, "give a number of image-decoding threads >= 1 (1: none in parallel)")
    if n is None:
        return max(1, min(4, (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1) - 1))
    return n


_POOLS: dict[int, ThreadPoolExecutor] = {}


def load_images(paths: list[str], pre: ImagePreprocessing, rng: np.random.Generator | None = None) -> np.ndarray:
    """(N, 3, S, S) float32 of :func:`load_image` over ``paths``, in order, decoded by
    :func:`image_workers` threads. With ``rng`` each image draws its augmentation from its own
    generator, seeded from ``rng`` in path order, so the batch is the same for any thread count."""
    rngs = [None] * len(paths) if rng is None else [np.random.default_rng(s) for s in rng.integers(0, 2**63, len(paths))]
    n = min(image_workers(), len(paths))
    if n <= 1:
        return np.stack([load_image(p, pre, r) for p, r in zip(paths, rngs, strict=True)])
    pool = _POOLS.get(n) or _POOLS.setdefault(n, ThreadPoolExecutor(n, thread_name_prefix="headstart-images"))
    return np.stack(list(pool.map(lambda pr: load_image(pr[0], pre, pr[1]), zip(paths, rngs, strict=True))))


class ImageBackbone(Backbone):
    modality = "image"
    uniform_cost = True
    batch_budget = (16, 16)
    """Batches of 16 ran 1.6-2x faster than 64 on 2 CPU cores (EfficientNet-Lite0, CIFAR-10): the
    size for training batches, and for :meth:`embed` until a size was measured on this machine
    (:mod:`headstart.backbones.batch_size`)."""

    @property
    def pre(self) -> ImagePreprocessing:
        assert isinstance(self.spec.preprocessing, ImagePreprocessing)
        return self.spec.preprocessing

    def prepare(self, inputs: list[str]) -> list[str]:
        return list(inputs)

    def cost(self, prepared: str) -> int:
        return 1

    def collate(self, prepared: list[str]) -> dict[str, torch.Tensor]:
        return {"pixel_values": torch.from_numpy(load_images(prepared, self.pre))}

    def collate_augmented(self, prepared: list[str], rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """A training batch with each image randomly cropped and flipped (seeded from ``rng``)."""
        return {"pixel_values": torch.from_numpy(load_images(prepared, self.pre, rng))}


EFFICIENTNET_LITE_VARIANTS = tuple(f"efficientnet-lite{i}" for i in range(5))
"""The architectures the package builds; a catalog entry's name is its variant."""


def _efficientnet_class():
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise BadInput(
            "efficientnet backbones need the efficientnet-lite-pytorch package: "
            "pip install efficientnet-lite-pytorch==0.1.0 (or pip install 'headstart[weights]')"
        ) from None
    return EfficientNet


class EfficientNetLiteBackbone(ImageBackbone):
    """EfficientNet-Lite from the ``efficientnet-lite-pytorch`` package; features = pooled conv head.

    The architecture is the catalog entry's name (``efficientnet-lite0`` ... ``-lite4``, the
    package's variant names). Trained methods: finetune and scratch train every layer (batch norms
    in train mode, their statistics saved with the run); LoRA/DoRA adapt the MBConv blocks' 1x1
    expand/project convs and adapters follow the project convs, with every batch norm frozen."""

    @property
    def variant(self) -> str:
        if self.spec.name not in EFFICIENTNET_LITE_VARIANTS:
            raise BadInput(f"backbone {self.spec.name!r}: the efficientnet-lite family builds {', '.join(EFFICIENTNET_LITE_VARIANTS)}; "
                           "name the catalog entry after its variant")
        return self.spec.name

    def load(self) -> EfficientNetLiteBackbone:
        EfficientNet = _efficientnet_class()
        variant = self.variant
        # The package prints "Loaded pretrained weights..." to stdout, which would corrupt
        # `--json` and CSV output: send it to stderr.
        with contextlib.redirect_stdout(sys.stderr):
            self.module_ = EfficientNet.from_pretrained(variant, weights_path=str(self.path))
        self.module_.eval()
        return self

    def reinitialize(self) -> None:
        """The same architecture built by the package's ``from_name`` (its own random initialisation)."""
        self.module_ = _efficientnet_class().from_name(self.variant).eval()

    @property
    def feature_dim(self) -> int:
        return int(self.module._conv_head.out_channels)

    def forward_features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.embed_forward(self.module, batch)

    def embed_forward(self, module: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        fmap = module.extract_features(batch["pixel_values"])  # (B, 1280, 7, 7)
        return fmap.float().mean(dim=(2, 3))  # (B, 1280)

    def inference_module(self, module: torch.nn.Module) -> torch.nn.Module:
        """A copy of ``module`` with each batch norm folded into the conv before it (eval-mode
        numerics, equal to ~1e-5; one memory pass fewer per conv: 1.15-1.3x the images/s in a
        forward-only probe on 2 CPU cores). Built once per state of the weights (a training step
        changes their version and so rebuilds it); pairs a method has wrapped (LoRA, adapters) or
        hooked stay as they are."""
        state = tuple((id(t), t._version, t.device, t.dtype) for t in (*module.parameters(), *module.buffers()))
        cached = getattr(self, "_folded", None)
        if cached is not None and cached[0] is module and cached[1] == state:
            return cached[2]
        folded = fold_batch_norms(module)
        self._folded = (module, state, folded)
        return folded


def _foldable(conv: torch.nn.Module, bn: torch.nn.Module) -> bool:
    return (isinstance(conv, torch.nn.Conv2d) and type(bn) is torch.nn.BatchNorm2d and bn.running_var is not None
            and not (conv._forward_hooks or conv._forward_pre_hooks or bn._forward_hooks or bn._forward_pre_hooks))


EFFICIENTNET_BN_PAIRS = (("_conv_stem", "_bn0"), ("_conv_head", "_bn1"))
MBCONV_BN_PAIRS = (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2"))


def fold_batch_norms(module: torch.nn.Module) -> torch.nn.Module:
    """An eval-mode copy of an EfficientNet(-Lite) with every (conv, batch norm) pair folded into
    one conv: ``w' = w * g / sqrt(var + eps)``, ``b' = (b - mean) * g / sqrt(var + eps) + beta``,
    the batch norm replaced by ``Identity``. The original is not touched."""
    import copy

    folded = copy.deepcopy(module).eval()
    sites = [(folded, EFFICIENTNET_BN_PAIRS)] + [(block, MBCONV_BN_PAIRS) for block in getattr(folded, "_blocks", ())]
    with torch.no_grad():
        for owner, pairs in sites:
            for conv_name, bn_name in pairs:
                conv, bn = getattr(owner, conv_name, None), getattr(owner, bn_name, None)
                if conv is None or bn is None or not _foldable(conv, bn):
                    continue
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
                conv.weight = torch.nn.Parameter(conv.weight * scale.reshape(-1, 1, 1, 1), requires_grad=False)
                conv.bias = torch.nn.Parameter((bias - bn.running_mean) * scale + bn.bias, requires_grad=False)
                setattr(owner, bn_name, torch.nn.Identity())
    return folded


class HFImageBackbone(ImageBackbone):
    """Any Hugging Face vision encoder folder (ViT, ConvNeXt, DINOv2...) via ``AutoModel``."""

    def reinitialize(self) -> None:
        """The architecture's own initialisation via ``from_config``."""
        from transformers import AutoModel

        self.module_ = AutoModel.from_config(self.module.config)
        self.module_.eval()

    def load(self) -> HFImageBackbone:
        from transformers import AutoModel

        quiet_transformers()
        self.module_ = AutoModel.from_pretrained(self.path)
        self.module_.eval()
        return self

    @property
    def feature_dim(self) -> int:
        cfg = self.module.config
        return int(getattr(cfg, "hidden_size", None) or cfg.hidden_sizes[-1])

    def forward_features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.module(pixel_values=batch["pixel_values"])
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            pooled = out.last_hidden_state[:, 0]  # (B, H): the [CLS] token
        return pooled.reshape(pooled.shape[0], -1).float()
