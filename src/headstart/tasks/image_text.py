"""Image-text retrieval (CLIP-style): two towers embed images and captions in one space.

Data
    (image, caption) pairs in a table, or an image folder whose class names become captions
    through prompt templates (:mod:`headstart.data.image_text`); split by image content, so no
    image is in two splits.

Model
    The backbone is a dual encoder (:meth:`sides`): CLIP or SigLIP (``CLIPModel`` /
    ``SiglipModel`` folders and ``hf:`` ids: pretrained projections and temperature), or a
    locked-image pair of packaged towers (``lit-lite0-minilm``: fresh projections, trained here).
    The task adds the head: each tower's projection into the shared space (the pretrained ones, or
    a fresh ``Linear(dim, 256)``), a learned log temperature (and SigLIP's bias). The towers a
    method adapts are the task option ``towers`` (``image``, ``text`` or ``both``; by default the
    backbone's: both for CLIP/SigLIP, the text tower for a pair, whose image tower stays locked as
    in LiT); the other tower is locked: frozen, in eval mode, its features computed once per
    image or caption and kept in the feature cache (``<cache>/features``), as are the features of
    any tower a method leaves frozen (``head-only`` trains only the projections and temperature on
    cached features of both towers).

Loss
    The symmetric contrastive loss (InfoNCE; Radford et al. 2021) over a batch's distinct images
    and distinct captions: ``L = (CE(s * I T^T) + CE(s * T I^T)) / 2`` with ``s`` the learned logit
    scale (clamped at 100, as CLIP), and SigLIP's pairwise sigmoid loss for SigLIP models (Zhai et
    al. 2023). An image with several captions in one batch (or a caption shared by several
    images: a class prompt) has several positives: each direction's loss is then the mean
    negative log-probability over its positives (Khosla et al. 2020's supervised contrastive
    form), which is CLIP's loss when every pair is distinct. The checkpoint kept is the one with
    the best validation ``recall@1`` (ties: the lower validation loss).

Metrics
    Image->text and text->image Recall@1/5/10 over the test split's distinct images and captions:
    a query scores 1 at ``k`` when one of its relevant items is among its ``k`` nearest (the
    Flickr30k/COCO protocol); ``recall@k`` pools both directions' queries. With labels (a class
    folder, or a table's label column): zero-shot accuracy and macro-F1 over the test classes,
    each class's prompts averaged (:func:`~headstart.tasks.zero_shot.class_embeddings`'s recipe).
    Every metric has a 95% bootstrap interval over its queries; ``predictions.csv`` has one row per
    query (direction, query, rank of the first relevant item, hits at 1/5/10).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..evaluate.metrics import MetricSpec
from .base import Objective, Scored, Task, TaskData, Training

KS = (1, 5, 10)
DIRECTIONS = {"i2t": "image->text", "t2i": "text->image"}
SCALE_MAX = 100.0
"""CLIP clamps its logit scale at 100 (temperature 0.01) so training cannot make it blow up."""
VAL_MAX = 1000
"""Validation pairs scored at each evaluation (a seeded sample of the split beyond this)."""
RESAMPLES = 1000
TOWERS = ("auto", "image", "text", "both")


def _specs() -> dict[str, MetricSpec]:
    out = {}
    for k in KS:
        out[f"recall@{k}"] = MetricSpec(f"recall@{k}")
        for d in DIRECTIONS:
            out[f"{d}_recall@{k}"] = MetricSpec(f"{d}_recall@{k}")
    out["zero_shot_accuracy"] = MetricSpec("zero_shot_accuracy")
    out["zero_shot_macro_f1"] = MetricSpec("zero_shot_macro_f1")
    return out


METRIC_SPECS = _specs()


@dataclass
class ImageTextOptions:
    templates: tuple[str, ...] | str = ("a photo of a {label}.", "a picture of a {label}.", "an image of a {label}.")
    """Prompts with a ``{label}`` field: the captions of a class folder, and the class prompts of
    zero-shot accuracy (averaged per class)."""
    towers: str = "auto"
    """Which towers the method adapts: image, text, both, or auto (the backbone's default: both for
    CLIP/SigLIP, text for a locked-image pair). The other tower is locked (frozen, cached features)."""

    def validate(self) -> None:
        from ..errors import BadInput
        from .zero_shot import ZeroShotOptions

        zs = ZeroShotOptions(templates=self.templates)
        try:
            zs.validate()
        except BadInput as e:
            raise BadInput(str(e).replace("zero-shot option", "image-text option")) from None
        self.templates = zs.templates
        if self.towers not in TOWERS:
            raise BadInput(f"image-text option towers must be one of {', '.join(TOWERS)} (got {self.towers!r})")


@dataclass
class ImageTextSet:
    """What one scoring pass ranks: distinct images and texts and which are relevant to which."""

    images: list[str]
    image_keys: list[str]
    texts: list[str]
    i2t: list[set[int]]
    """Per image: the indices of its relevant texts."""
    t2i: list[set[int]]
    labels: list[str] | None
    """Per image: its class (zero-shot accuracy), else None."""
    templates: tuple[str, ...]
    source: str
    fingerprint: str

    def __len__(self) -> int:
        return len(self.images) + len(self.texts)


def ranking_set(pairs, templates: tuple[str, ...]) -> ImageTextSet:
    """The distinct images and captions of ``pairs`` and their relevance. For a class folder
    (captions made from templates) the texts are every template of every class present, each
    relevant to every image of its class."""
    from .zero_shot import prompt_label

    first: dict[str, int] = {}
    for i, key in enumerate(pairs.image_keys):
        first.setdefault(key, i)
    image_rows = list(first.values())
    row_of_key = {pairs.image_keys[i]: r for r, i in enumerate(image_rows)}
    labels = None if pairs.labels is None else [pairs.labels[i] for i in image_rows]
    if pairs.templates is not None:  # a class folder: every class prompt is a candidate text
        classes = sorted(set(pairs.labels))
        texts = [t.format(label=prompt_label(c)) for c in classes for t in pairs.templates]
        text_class = [c for c in classes for _ in pairs.templates]
        i2t = [{j for j, c in enumerate(text_class) if c == lab} for lab in labels]
    else:
        text_index: dict[str, int] = {}
        for c in pairs.captions:
            text_index.setdefault(c, len(text_index))
        texts = list(text_index)
        i2t = [set() for _ in image_rows]
        for i, (key, cap) in enumerate(zip(pairs.image_keys, pairs.captions, strict=True)):
            i2t[row_of_key[key]].add(text_index[cap])
    t2i: list[set[int]] = [set() for _ in texts]
    for r, rel in enumerate(i2t):
        for j in rel:
            t2i[j].add(r)
    return ImageTextSet(images=[pairs.images[i] for i in image_rows], image_keys=[pairs.image_keys[i] for i in image_rows],
                        texts=texts, i2t=i2t, t2i=t2i, labels=labels, templates=tuple(pairs.templates or templates),
                        source=pairs.source, fingerprint=pairs.fingerprint)


def first_relevant_ranks(sim: np.ndarray, relevant: list[set[int]]) -> np.ndarray:
    """Per query row of ``sim`` (queries x candidates): the 1-based rank of its best-placed
    relevant candidate (ties counted pessimistically: every candidate scoring at least as high)."""
    ranks = np.empty(len(relevant), dtype=np.int64)
    for q, rel in enumerate(relevant):
        best = max(sim[q, j] for j in rel)
        ranks[q] = int((sim[q] > best).sum()) + 1
    return ranks


def recall_values(sim_i2t: np.ndarray, data: ImageTextSet) -> dict[str, np.ndarray]:
    """Per-query hits: ``{"i2t": ranks, "t2i": ranks}`` of the first relevant item."""
    return {"i2t": first_relevant_ranks(sim_i2t, data.i2t), "t2i": first_relevant_ranks(sim_i2t.T, data.t2i)}


# -- the model ------------------------------------------------------------------------------------

class ProjectionHead(nn.Module):
    """The projections into the shared space and the temperature (and SigLIP's bias)."""

    def __init__(self, image: nn.Module, text: nn.Module, log_scale: float, bias: float | None):
        super().__init__()
        self.image = image
        self.text = text
        self.log_scale = nn.Parameter(torch.tensor(float(log_scale)))
        self.bias = nn.Parameter(torch.tensor(float(bias))) if bias is not None else None

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp().clamp(max=SCALE_MAX)


class ImageTextModel(nn.Module):
    """``body``: the towers the method adapts; ``locked``: the others (frozen, eval mode); ``head``:
    projections and temperature. A batch holds each side's collated tensors as ``image.<name>`` /
    ``text.<name>``, or its cached features as ``image.features`` / ``text.features``; the output
    is ``{"image": (Bi, D), "text": (Bt, D)}`` unit-length embeddings."""

    def __init__(self, backbone, adapt: tuple[str, ...]):
        super().__init__()
        from ..backbones.dual import LIT_DIM

        image, text = backbone.sides()
        self._sides = {"image": image, "text": text}
        self.adapt = adapt
        self.body = nn.ModuleDict({name: self._sides[name].module for name in adapt})
        self.locked = nn.ModuleDict({name: side.module for name, side in self._sides.items() if name not in adapt})
        for p in self.locked.parameters():
            p.requires_grad_(False)
        projections = [side.projection if side.projection is not None else nn.Linear(side.dim, LIT_DIM, bias=False)
                       for side in (image, text)]
        log_scale, bias = backbone.temperature()
        self.head = ProjectionHead(*projections, log_scale, bias)
        for p in self.head.parameters():  # the method decides about the body; the head is the task's
            p.requires_grad_(True)
        self._backbone = [backbone]

    def train(self, mode: bool = True):
        super().train(mode)
        self.locked.eval()
        return self

    def side(self, name: str):
        return self._sides[name]

    def frozen_sides(self) -> list[str]:
        """The towers whose weights are the pretrained ones (locked, or nothing of them trains):
        their features can be cached by the backbone's identity."""
        return [name for name, side in self._sides.items() if not any(p.requires_grad for p in side.module.parameters())]

    def project(self, name: str, features: torch.Tensor) -> torch.Tensor:
        proj = self.head.image if name == "image" else self.head.text
        return nn.functional.normalize(proj(features.to(_dtype_of(proj, features))).float(), dim=-1)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        parts: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in batch.items():
            name, field_ = key.split(".", 1)
            parts.setdefault(name, {})[field_] = value
        out = {}
        for name, tensors in parts.items():
            feats = tensors["features"] if "features" in tensors else self._sides[name].features(tensors)
            out[name] = self.project(name, feats)
        return out


def _dtype_of(module: nn.Module, x: torch.Tensor) -> torch.dtype:
    p = next(module.parameters(), None)
    return x.dtype if p is None else p.dtype


def contrastive_loss(img: torch.Tensor, txt: torch.Tensor, positive: torch.Tensor, scale: torch.Tensor,
                     bias: torch.Tensor | None, kind: str) -> torch.Tensor:
    """The batch loss over ``img`` (I, D) and ``txt`` (T, D) unit embeddings with ``positive`` (I, T)
    a boolean mask (every row and column has a positive). ``kind``: 'infonce' (symmetric, mean
    negative log-probability over each query's positives) or 'sigmoid' (SigLIP: the mean over
    images of the summed pairwise logistic losses)."""
    logits = scale * img @ txt.T  # (I, T)
    pos = positive.to(logits.dtype)
    if kind == "sigmoid":
        if bias is not None:
            logits = logits + bias
        signs = 2 * pos - 1
        return -nn.functional.logsigmoid(signs * logits).sum() / img.shape[0]
    i2t = -(torch.log_softmax(logits, dim=1) * pos).sum(1) / pos.sum(1)
    t2i = -(torch.log_softmax(logits.T, dim=1) * pos.T).sum(1) / pos.T.sum(1)
    return (i2t.mean() + t2i.mean()) / 2


# -- the task -------------------------------------------------------------------------------------

class ImageText(Task):
    name: ClassVar[str] = "image-text"
    primary: ClassVar[MetricSpec] = METRIC_SPECS["recall@1"]
    metrics: ClassVar[tuple[MetricSpec, ...]] = tuple(METRIC_SPECS.values())
    has_head: ClassVar[bool] = True
    zero_shot: ClassVar[bool] = True
    head_only: ClassVar[bool] = True
    predicts: ClassVar[bool] = False
    options_cls: ClassVar[type] = ImageTextOptions
    shown: ClassVar[dict[str, str]] = {"recall@1": "Recall@1", "i2t_recall@1": "image->text R@1",
                                       "t2i_recall@1": "text->image R@1", "recall@10": "Recall@10",
                                       "zero_shot_accuracy": "zero-shot accuracy"}
    compared: ClassVar[tuple[str, str]] = ("recall@1", "recall@10")
    unit: ClassVar[str] = "queries"

    def check_backbone(self, spec, cls) -> None:
        from ..errors import BadInput

        super().check_backbone(spec, cls)
        if cls is not None and not getattr(cls, "dual_encoder", False):
            raise BadInput(f"the task 'image-text' needs an image-text dual encoder and backbone {spec.name!r} "
                           f"({spec.family}) is not one; choose a CLIP or SigLIP folder or hf: id, the offline pair "
                           "lit-lite0-minilm, or pair:IMAGE+TEXT of two packaged towers")

    def default_backbone(self, data) -> str:
        return "lit-lite0-minilm"

    def default_method(self, backbone: str) -> str:
        """CLIP/SigLIP: ``lora``; an untrained pair: ``head-only`` (its projections are all it lacks)."""
        from ..backbones import family_class
        from ..catalog import resolve

        cls = family_class(resolve(backbone))
        return "head-only" if cls is not None and not getattr(cls, "projections_pretrained", True) else "lora"

    def describe_data(self, manifest: dict) -> str:
        split = manifest["data"]["split"]
        return (f"{split['train']} training pairs / {split['val']} validation / {split['test']} test pairs "
                f"({split.get('test_images', '?')} images, {split.get('test_texts', '?')} texts)")

    # -- data ------------------------------------------------------------------------------------
    def _read_pairs(self, path, recipe, opts):
        from ..data.image_text import read_pairs

        return read_pairs(path, templates=opts.templates, caption_col=recipe.text_col, label_col=recipe.label_col,
                          fmt=recipe.fmt, header=recipe.header)

    def read(self, recipe) -> TaskData:
        from ..backbones import family_class
        from ..catalog import resolve
        from ..data.image_text import split_by_image
        from ..errors import BadInput

        opts = self.options(recipe.task_options)
        if recipe.method == "frozen" and recipe.backbone:
            cls = family_class(resolve(recipe.backbone))
            if cls is not None and not getattr(cls, "projections_pretrained", True):
                raise BadInput(f"--method frozen on {recipe.backbone}: a locked-image pair's projections are untrained, so "
                               "it has no zero-shot ability of its own; train them with --method head-only (or lora)")
        if recipe.method == "scratch" and recipe.backbone:
            cls = family_class(resolve(recipe.backbone))
            towers = opts.towers if opts.towers != "auto" else getattr(cls, "default_towers", "both")
            if towers != "both":
                raise BadInput(f"--method scratch re-initialises both towers, but towers={towers} would keep the other one "
                               "locked at random weights; add --task-set towers=both (a from-scratch dual encoder, the "
                               "baseline that shows what the pretrained towers bring)")
        pairs = self._read_pairs(recipe.data, recipe, opts)
        test_fraction = 0.0 if recipe.test is not None else recipe.test_fraction
        train_idx, val_idx, test_idx = split_by_image(pairs, val_fraction=recipe.val_fraction, test_fraction=test_fraction,
                                                      seed=recipe.seed_of_split)
        train, val = pairs.subset(train_idx), pairs.subset(val_idx)
        if recipe.test is not None:
            test = self._read_pairs(recipe.test, recipe, opts)
            seen = set(train.image_keys)
            shared = [p for p, k in zip(test.images, test.image_keys, strict=True) if k in seen]
            if shared:
                raise BadInput(f"{recipe.test}: {len(shared)} test images are also training images (e.g. {shared[0]}); "
                               "an image-text test must hold unseen images: remove them from one of the files")
        else:
            test = pairs.subset(test_idx)
        if len(val) > VAL_MAX:
            keep = np.random.default_rng(recipe.seed_of_split).choice(len(val), VAL_MAX, replace=False)
            val = val.subset(sorted(keep.tolist()))
        scored = ranking_set(test, opts.templates)
        common = {"val_fraction": recipe.val_fraction, "test_fraction": test_fraction, "seed": recipe.seed_of_split}
        info = {"task_info": {"templates": list(opts.templates), "towers": opts.towers}}
        return TaskData(
            train=train, val=val, test=scored, modality="image",
            train_record={"source": str(Path(recipe.data).expanduser()), "fingerprint": pairs.fingerprint,
                          "examples": len(train), "columns": pairs.columns,
                          "kind": "class folder" if pairs.templates is not None else "pairs"},
            test_record={"source": str(recipe.test) if recipe.test is not None else "held out from train",
                         "fingerprint": test.fingerprint, "examples": len(test)},
            split_record={**common, "by": "image", "train": len(train), "val": len(val), "test": len(test),
                          "test_images": len(scored.images), "test_texts": len(scored.texts)},
            info=info, separate_test=recipe.test is not None,
        )

    def context(self, data: TaskData) -> dict:
        return {"task_info": dict(data.info["task_info"])}

    def read_eval(self, run, data, *, text_col=None, header=None):
        from ..data.image_text import read_pairs
        from ..errors import BadInput

        if not isinstance(data, (str, Path)):
            raise BadInput("evaluating an image-text run takes a file or folder: a table of (image, caption) pairs, or an "
                           "image folder with one subfolder per class")
        templates = tuple((run.manifest.get("task_info") or {}).get("templates") or ImageTextOptions().templates)
        cols = run.manifest["data"]["train"].get("columns") or {}
        pairs = read_pairs(data, templates=templates, caption_col=text_col or cols.get("caption"), header=header)
        ranked = ranking_set(pairs, templates)
        return ranked, str(data), pairs.fingerprint

    def examples(self, data) -> int:
        return len(data)

    # -- the model -------------------------------------------------------------------------------
    def adapted_towers(self, backbone, ctx) -> tuple[str, ...]:
        towers = (ctx.task_info or {}).get("towers", "auto")
        if towers == "auto":
            towers = getattr(backbone, "default_towers", "both")
        return ("image", "text") if towers == "both" else (towers,)

    def build_model(self, backbone, cfg, ctx) -> nn.Module:
        return ImageTextModel(backbone, self.adapted_towers(backbone, ctx))

    def head_parameters(self, model) -> list[nn.Parameter]:
        return [p for p in model.head.parameters() if p.requires_grad]

    def preset(self, method: str, train) -> tuple[str, dict]:
        from .base import sized_preset

        return sized_preset("image-text", method, len(train), PRESETS, _COMMON, _EPOCHS)

    # -- features --------------------------------------------------------------------------------
    def side_features(self, model: ImageTextModel, name: str, items: list[str], keys: list[str], ctx, *,
                      cache: bool) -> torch.Tensor:
        """(N, dim) pooled features of ``items`` by the side ``name`` as the model has it now (no grad),
        looked up in and added to the feature cache when the side is the pretrained one."""
        from ..backbones.cache import FeatureCache

        side = model.side(name)

        def compute(todo: list[str]) -> np.ndarray:
            return _run_side(side, todo, model._backbone[0].device, ctx.precision, desc=f"encoding {name}s")

        if cache and ctx.feature_cache:
            store = FeatureCache(side.identity or ctx.backbone_hash, side.signature, ctx.precision)
            feats, _ = store.get_or_compute(keys, items, compute)
        else:
            feats = compute(items)
        return torch.from_numpy(np.ascontiguousarray(feats))

    def embed_set(self, model: ImageTextModel, name: str, items: list[str], keys: list[str], ctx) -> torch.Tensor:
        """(N, D) unit embeddings of ``items`` on side ``name`` (features, then the projection)."""
        model.eval()
        feats = self.side_features(model, name, items, keys, ctx, cache=name in model.frozen_sides())
        device = model._backbone[0].device
        with torch.inference_mode():
            return torch.cat([model.project(name, feats[s:s + 512].to(device)).cpu() for s in range(0, len(feats), 512)]) \
                if len(feats) else torch.empty((0, 0))

    # -- training --------------------------------------------------------------------------------
    def training(self, model, train, val, cfg, ctx) -> Training:
        bb = model._backbone[0]
        kind = bb.contrastive
        frozen = model.frozen_sides()
        text_keys = [_text_key(t) for t in train.captions]
        inputs = {"image": (train.images, train.image_keys), "text": (train.captions, text_keys)}
        cached: dict[str, torch.Tensor] = {}
        prepared: dict[str, list] = {}
        for name in ("image", "text"):
            items, keys = inputs[name]
            if name in frozen:  # its features once, from the cache when another run computed them
                cached[name] = self.side_features(model, name, list(items), list(keys), ctx, cache=True)
            else:
                prepared[name] = model.side(name).prepare(list(items))
        lengths = [sum(model.side(n).cost(prepared[n][i]) for n in prepared) or 1 for i in range(len(train))]

        def groups(idx: list[int]) -> tuple[list[int], list[int], torch.Tensor]:
            """The distinct images and captions of ``idx`` (first occurrences) and their positives."""
            img_first: dict[str, int] = {}
            txt_first: dict[str, int] = {}
            for i in idx:
                img_first.setdefault(train.image_keys[i], i)
                txt_first.setdefault(text_keys[i], i)
            img_row = {k: r for r, k in enumerate(img_first)}
            txt_row = {k: r for r, k in enumerate(txt_first)}
            positive = torch.zeros((len(img_first), len(txt_first)), dtype=torch.bool)
            for i in idx:
                positive[img_row[train.image_keys[i]], txt_row[text_keys[i]]] = True
            return list(img_first.values()), list(txt_first.values()), positive

        def collate(idx: list[int]) -> dict[str, torch.Tensor]:
            images, texts, _ = groups(idx)
            out: dict[str, torch.Tensor] = {}
            for name, rows in (("image", images), ("text", texts)):
                if name in cached:
                    out[f"{name}.features"] = cached[name][rows]
                else:
                    side = model.side(name)
                    out.update({f"{name}.{k}": v for k, v in side.collate([prepared[name][i] for i in rows]).items()})
            return out

        def loss(outputs: dict[str, torch.Tensor], idx: list[int]) -> torch.Tensor:
            _, _, positive = groups(idx)
            return contrastive_loss(outputs["image"], outputs["text"], positive.to(outputs["image"].device),
                                    model.head.scale, model.head.bias, kind)

        val_set = ranking_set(val, (ctx.task_info or {}).get("templates") or ImageTextOptions().templates)

        def evaluate(m: nn.Module) -> dict[str, float]:
            img = self.embed_set(m, "image", val_set.images, val_set.image_keys, ctx)
            txt = self.embed_set(m, "text", val_set.texts, [_text_key(t) for t in val_set.texts], ctx)
            ranks = recall_values((img @ txt.T).numpy(), val_set)
            hits = np.concatenate([ranks["i2t"] <= 1, ranks["t2i"] <= 1])
            positive = torch.zeros((len(val_set.images), len(val_set.texts)), dtype=torch.bool)
            for r, rel in enumerate(val_set.i2t):
                positive[r, list(rel)] = True
            with torch.inference_mode():
                value = contrastive_loss(img, txt, positive, m.head.scale.detach().cpu(),
                                         None if m.head.bias is None else m.head.bias.detach().cpu(), kind)
            return {"recall@1": float(hits.mean()), "loss": float(value)}

        objective = Objective(loss=loss, evaluate=evaluate, metric=self.primary, val_examples=len(val_set),
                              per_example=False)
        return Training(lengths=lengths, collate=collate, objective=objective,
                        batches=lambda rng: _distinct_batches(train.image_keys, text_keys, lengths, cfg.batch_size, rng),
                        record={"cached_towers": sorted(frozen), "adapted_towers": list(model.adapt), "loss": kind})

    # -- scoring ---------------------------------------------------------------------------------
    def embeddings(self, method, backbone, ctx, data: ImageTextSet) -> tuple[torch.Tensor, torch.Tensor]:
        model = method.task_model(backbone, ctx)
        img = self.embed_set(model, "image", data.images, data.image_keys, ctx)
        txt = self.embed_set(model, "text", data.texts, [_text_key(t) for t in data.texts], ctx)
        return img, txt

    def score(self, method, backbone, test: ImageTextSet, ctx, *, n_resamples: int = RESAMPLES, intervals: bool = True) -> Scored:
        from ..evaluate.bootstrap import bootstrap_ci
        from ..evaluate.metrics import classification_metrics
        from ..evaluate.retrieval import prediction_mean

        img, txt = self.embeddings(method, backbone, ctx, test)
        sim = (img @ txt.T).numpy()
        ranks = recall_values(sim, test)
        values: dict[str, np.ndarray] = {}
        for k in KS:
            for d in DIRECTIONS:
                values[f"{d}_recall@{k}"] = (ranks[d] <= k).astype(np.float64)
            values[f"recall@{k}"] = np.concatenate([values[f"i2t_recall@{k}"], values[f"t2i_recall@{k}"]])
        summary: dict[str, Any] = {}
        zero_shot = None
        if test.labels is not None:
            zero_shot = self.zero_shot_predictions(method, backbone, ctx, test, img)
            classes = sorted(set(test.labels))
            truth = np.array([classes.index(c) for c in test.labels])
            pred = np.array([classes.index(c) for c in zero_shot])
            cm = classification_metrics(truth, pred, classes)
            values["zero_shot_accuracy"] = (truth == pred).astype(np.float64)
            summary["zero_shot_macro_f1"] = round(cm["macro_f1"], 6)
            from ..evaluate.bootstrap import MacroF1

            _, low, high = bootstrap_ci(truth, pred, MacroF1(len(classes)), n_resamples=n_resamples)
            summary["zero_shot_macro_f1_ci"] = [round(float(low), 6), round(float(high), 6)]
        for name, v in values.items():
            summary[name] = round(float(v.mean()), 6)
            _, low, high = bootstrap_ci(np.zeros(len(v)), v, prediction_mean, n_resamples=n_resamples)
            summary[f"{name}_ci"] = [round(float(low), 6), round(float(high), 6)]
        summary.update(images=len(test.images), texts=len(test.texts), queries=len(test.images) + len(test.texts),
                       ci_level=0.95, ci_resamples=n_resamples)
        records = []
        top_t = np.argsort(-sim, axis=1, kind="stable")[:, :5]
        top_i = np.argsort(-sim.T, axis=1, kind="stable")[:, :5]
        for r, path in enumerate(test.images):
            records.append(_record("i2t", path, int(ranks["i2t"][r]), " | ".join(test.texts[j] for j in top_t[r]),
                                   test.labels[r] if test.labels else "", zero_shot[r] if zero_shot else ""))
        for j, text in enumerate(test.texts):
            records.append(_record("t2i", text, int(ranks["t2i"][j]), " ".join(test.images[i] for i in top_i[j]), "", ""))
        return Scored(summary=summary, detail=dict(summary), records=records)

    def zero_shot_predictions(self, method, backbone, ctx, data: ImageTextSet, img: torch.Tensor) -> list[str]:
        """Each image's class by its nearest class embedding (the mean of the class's normalised
        prompt embeddings, renormalised)."""
        from .zero_shot import prompt_label

        classes = sorted(set(data.labels))
        prompts = [t.format(label=prompt_label(c)) for c in classes for t in data.templates]
        model = method.task_model(backbone, ctx)
        emb = self.embed_set(model, "text", prompts, [_text_key(p) for p in prompts], ctx)
        cls = nn.functional.normalize(emb.reshape(len(classes), len(data.templates), -1).mean(1), dim=-1)
        return [classes[i] for i in (img @ cls.T).argmax(1).tolist()]

    def example_values(self, run, path, metrics):
        """Per-query hits (and per-image zero-shot correctness) of a pairs table or class folder."""
        from ..evaluate.retrieval import prediction_mean

        ranked, _, fingerprint = self.read_eval(run, path)
        method, bb = run.open_model()
        records = self.score(method, bb, ranked, run.fit_context(), n_resamples=1).records
        out = {}
        for m in metrics:
            v = np.asarray(_record_values(records, m), dtype=float)
            out[m] = (np.zeros(len(v)), v, prediction_mean)
        return out, fingerprint

    def moved_example(self, row: dict) -> tuple[str, str]:
        return row["query"], row["direction"]

    def run_values(self, run_path, manifest):
        import csv

        from ..evaluate.retrieval import prediction_mean

        try:
            with open(Path(run_path) / "predictions.csv", newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
            hits = {name: _record_values(rows, name) for name in self.compared}
        except (OSError, KeyError, ValueError):
            return None
        if not hits[self.compared[0]]:
            return None
        return {name: (np.zeros(len(v)), np.array(v), prediction_mean) for name, v in hits.items()}

    def suite_cells(self, run, path, metrics, *, n_resamples: int, seed: int):
        ranked, source, fingerprint = self.read_eval(run, path)
        method, bb = run.open_model()
        scored = self.score(method, bb, ranked, run.fit_context(), n_resamples=n_resamples)
        cells = {}
        for m in metrics:
            if m not in scored.summary:
                from ..errors import BadInput

                raise BadInput(f"suite: metric {m!r} is not measured on {path} (zero-shot metrics need labels)")
            low, high = scored.summary[f"{m}_ci"]
            cells[m] = {"value": float(scored.summary[m]), "ci": [low, high], "n": len(ranked)}
        return cells, source, fingerprint

    # -- embeddings for users --------------------------------------------------------------------
    def embed_items(self, method, backbone, items: list[str], ctx, side: str) -> np.ndarray:
        """(N, D) float32 unit embeddings of image paths (``side='image'``) or texts (``'text'``)."""
        from ..errors import BadInput

        if side == "image":
            missing = [p for p in items if not Path(p).is_file()]
            if missing:
                raise BadInput(f"embed_images: {missing[0]} is not a file" + (f" ({len(missing)} in all)" if len(missing) > 1 else ""))
            keys = [_file_key(p) for p in items]
        else:
            keys = [_text_key(t) for t in items]
        model = method.task_model(backbone, ctx)
        return self.embed_set(model, side, list(items), keys, ctx).numpy().astype(np.float32)

    def export(self, run, out, *, merge: bool = False) -> dict:
        """CLIP/SigLIP runs: the model's own Hugging Face folder (:mod:`headstart.export_dual`)."""
        from ..export_dual import export_dual_encoder

        return export_dual_encoder(run, out, merge=merge)

    def verbs(self, modality: str) -> tuple:
        from .retrieval import _search_verb
        from .verbs import Param, Verb

        return (
            Verb("embed-texts", "unit-length embeddings of texts in the shared image-text space", item="text",
                 field="inputs", call=_embed_texts_verb, needs=("embed",), result="embeddings", example="a photo of a cat."),
            Verb("embed-images", "unit-length embeddings of images (base64 files) in the shared space", item="image",
                 field="inputs", call=_embed_images_verb, needs=("embed",), result="embeddings"),
            Verb("search", "the images of the served index nearest each text query", item="text", field="queries",
                 call=_search_verb, needs=("embed", "index"), result="results", example="a photo of a cat.",
                 params=(Param("k", int, 10, "images per query", ge=1, le=1000),
                         Param("index", str, "", "which served index (its folder name); may be left out when the server "
                                                 "holds one"))),
        )

    def embed_role(self, role: str) -> str:
        """Which side embeds a retrieval role: queries are texts, documents (the index) images."""
        return "text" if role == "query" else "image"

    def read_corpus(self, path, *, text_col=None, id_col=None, fmt=None) -> tuple[list[str], list[str]]:
        """(ids, image paths) of an image folder (ids: paths relative to it) or of a table's image column."""
        from ..data.readers import IMAGE_SUFFIXES, _file_column, file_paths, read_table
        from ..errors import BadInput

        p = Path(path).expanduser()
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise BadInput(f"corpus {p}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in the folder")
            return [str(f.relative_to(p)) for f in files], [str(f.resolve()) for f in files]
        if not p.is_file():
            raise BadInput(f"corpus {p}: no such file or folder; give an image folder or a table with an image-path column")
        columns, origin = read_table(p, fmt=fmt)
        col = text_col or _file_column(columns, exclude=None)
        if col is None or col not in columns:
            raise BadInput(f"corpus {p}: no image-path column; name it with --text-col. Columns: {', '.join(map(repr, columns))}")
        if id_col is not None and id_col not in columns:
            raise BadInput(f"corpus {p}: no column {id_col!r} for --id-col. Columns: {', '.join(map(repr, columns))}")
        paths = file_paths(p, columns[col], origin, col, "image")
        ids = [str(columns[id_col][i]) for i in range(len(paths))] if id_col else [str(i + 1) for i in range(len(paths))]
        if len(set(ids)) != len(ids):
            raise BadInput(f"corpus {p}: document ids repeat in column {id_col!r}; ids must be unique")
        return ids, [str(Path(x).resolve()) for x in paths]


def _embed_texts_verb(served, items: list, params: dict) -> list[list[float]]:
    """``POST /v1/embed-texts``: one unit-length embedding per text, in the images' space."""
    return [[round(float(x), 7) for x in row] for row in served.embed(items, role="query")]


def _embed_images_verb(served, items: list, params: dict) -> list[list[float]]:
    """``POST /v1/embed-images``: one unit-length embedding per base64 image file."""
    from .verbs import decoded_files

    with decoded_files(items, "image") as paths:
        vectors = served.embed(paths, role="document")
    return [[round(float(x), 7) for x in row] for row in vectors]


def _record_values(records: list[dict], metric: str) -> list[float]:
    """A metric's per-query values from ``predictions.csv``-style records (rank, direction, label)."""
    from ..errors import BadInput

    if metric.startswith("zero_shot_accuracy"):
        rows = [r for r in records if r["direction"] == DIRECTIONS["i2t"] and r["label"] != ""]
        if not rows:
            raise BadInput("zero_shot_accuracy needs labelled images (a class folder or a label column)")
        return [float(r["label"] == r["zero_shot"]) for r in rows]
    name, _, k = metric.rpartition("@")
    if name not in ("recall", "i2t_recall", "t2i_recall") or not k.isdigit():
        raise BadInput(f"image-text runs compare recall@k, i2t_recall@k, t2i_recall@k or zero_shot_accuracy per query, "
                       f"not {metric!r}")
    direction = None if name == "recall" else DIRECTIONS[name.split("_")[0]]
    return [float(int(r["rank"]) <= int(k)) for r in records if direction is None or r["direction"] == direction]


def _record(direction: str, query: str, rank: int, top: str, label: str, predicted: str) -> dict:
    return {"direction": DIRECTIONS[direction], "query": query, "rank": rank,
            **{f"hit@{k}": int(rank <= k) for k in KS}, "top5": top, "label": label, "zero_shot": predicted}


def _text_key(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _file_key(path: str) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _run_side(side, items: list, device, precision: str, desc: str) -> np.ndarray:
    """(N, dim) float32 features of ``items`` by ``side`` (eval mode, no grad): the tower's own
    backbone path where it has one, else the shared batched loop over its ``features``."""
    from ..backbones.base import encode_batched

    if side.encode is not None:
        return side.encode(list(items), precision, desc)
    module = side.module
    was_training = module.training
    module.eval()
    budget, max_batch = side.batch_budget
    try:
        return encode_batched(items, prepare=side.prepare, cost=side.cost, collate=side.collate, forward=side.features,
                              dim=side.dim, module=module, device=device, precision=precision, budget=budget,
                              max_batch=max_batch, measure=None, desc=desc)
    finally:
        module.train(was_training)


def _distinct_batches(image_keys: list[str], text_keys: list[str], lengths: list[int], batch_size: int, rng):
    """Length-bucketed batches in which no image and no caption repeats where the data allows
    (:func:`~headstart.train.sampling.no_duplicate_batches`); a class folder's captions repeat by
    design, so only its images are kept distinct."""
    from ..train.sampling import no_duplicate_batches

    distinct_texts = len(set(text_keys))
    if distinct_texts >= 2 * batch_size:
        keys = [(f"i:{a}", f"t:{b}") for a, b in zip(image_keys, text_keys, strict=True)]
    else:
        keys = [f"i:{a}" for a in image_keys]
    return no_duplicate_batches(keys, lengths, batch_size, rng)


# Hyperparameters by the number of training pairs: few <= 500 < medium <= 5000 < large.
# Projections alone train at a large rate; tower weights at CLIP fine-tuning rates.
_COMMON = {
    "few": {"batch_size": 32, "patience": 3, "eval_every": 1.0},
    "medium": {"batch_size": 64, "patience": 2, "eval_every": 0.5},
    "large": {"batch_size": 128, "patience": 2, "eval_every": 0.25},
}
_EPOCHS = {"few": 10, "medium": 5, "large": 2}
PRESETS: dict[str, dict] = {
    "head-only": {"lr": 1e-3, "head_lr": 1e-3},
    "finetune": {"lr": 1e-5, "head_lr": 1e-4},
    "lora": {"lr": 2e-4, "head_lr": 1e-3, "rank": 8, "alpha": 16.0, "lora_dropout": 0.0},
    "dora": {"lr": 2e-4, "head_lr": 1e-3, "rank": 8, "alpha": 16.0, "lora_dropout": 0.0},
    "adapter": {"lr": 2e-4, "head_lr": 1e-3, "bottleneck": 64},
    "scratch": {"lr": 5e-4, "head_lr": 1e-3},
}


__all__ = ["ImageText", "ImageTextModel", "ImageTextOptions", "contrastive_loss", "ranking_set"]
