"""Image-text pairs: what the image-text task reads, checks and splits.

Two layouts:

* a table (CSV, TSV, JSONL, Parquet) with an image-path column (found by its values: every one
  names an image file; paths relative to the table's folder) and a caption column
  (``caption``, ``text``, ``sentence``, ... or ``--text-col``); an image may appear in several
  rows with different captions (COCO's five per image). An optional label column (``label`` or
  ``--label-col``) adds zero-shot accuracy over its classes to the scores.
* an image folder with one subfolder per class (the classification layout), whose labels become
  captions through prompt templates (``"a photo of a {label}."``): image ``i`` of the folder is
  paired with template ``i mod T``, so training sees every template; scoring ranks every class
  prompt and reports zero-shot accuracy over the classes (templates averaged per class).

The split is by image content (the sha256 of the file): no image, whatever its name or caption,
is in two of train / validation / test.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from ..errors import BadInput

CAPTION_NAMES = ("caption", "captions", "text", "sentence", "description", "alt_text", "title", "prompt")


@dataclass
class ImageTextPairs:
    images: list[str]
    """Absolute image paths, one per pair."""
    captions: list[str]
    source: str
    labels: list[str] | None = None
    """Each pair's class (a labelled folder, or a table's label column); None: captions only."""
    templates: tuple[str, ...] | None = None
    """The prompt templates the captions were made with (a labelled folder), else None."""
    columns: dict = field(default_factory=dict)
    origin: list[str] | None = None

    def __len__(self) -> int:
        return len(self.images)

    @cached_property
    def image_keys(self) -> list[str]:
        """sha256 of each pair's image file (the same image under two names is one image)."""
        digests: dict[str, str] = {}
        for p in self.images:
            if p not in digests:
                try:
                    digests[p] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
                except OSError as e:
                    raise BadInput(f"{p}: cannot read the image ({e.strerror or e}); fix or remove that row") from None
        return [digests[p] for p in self.images]

    @cached_property
    def fingerprint(self) -> str:
        h = hashlib.sha256(b"image-text")
        for i, key in enumerate(self.image_keys):
            label = self.labels[i] if self.labels is not None else ""
            h.update(f"{key}\t{self.captions[i]}\t{label}\n".encode())
        return h.hexdigest()

    @property
    def classes(self) -> list[str]:
        from .dataset import _label_sort_key

        return [] if self.labels is None else sorted(set(self.labels), key=_label_sort_key)

    def subset(self, idx) -> ImageTextPairs:
        idx = [int(i) for i in idx]
        out = ImageTextPairs(images=[self.images[i] for i in idx], captions=[self.captions[i] for i in idx],
                             source=self.source, labels=None if self.labels is None else [self.labels[i] for i in idx],
                             templates=self.templates, columns=self.columns,
                             origin=None if self.origin is None else [self.origin[i] for i in idx])
        if "image_keys" in self.__dict__:
            out.__dict__["image_keys"] = [self.image_keys[i] for i in idx]
        return out


def read_pairs(path: str | Path, *, templates: tuple[str, ...], caption_col: str | None = None,
               label_col: str | None = None, fmt: str | None = None, header: bool | None = None) -> ImageTextPairs:
    """The pairs of a table or a labelled image folder (module docstring), checked row by row."""
    p = Path(path).expanduser()
    if not p.exists():
        raise BadInput(f"{p}: no such file or folder; give a table of (image, caption) pairs or an image folder with "
                       "one subfolder per class")
    if p.is_dir():
        return _from_folder(p, templates)
    return _from_table(p, caption_col=caption_col, label_col=label_col, fmt=fmt, header=header)


def _from_folder(path: Path, templates: tuple[str, ...]) -> ImageTextPairs:
    from .readers import read_folder

    ds = read_folder(path)
    if ds.modality != "image":
        raise BadInput(f"{path}: the class folders hold {ds.modality}, not images; image-text needs images")
    from ..tasks.zero_shot import prompt_label

    captions = [templates[i % len(templates)].format(label=prompt_label(lab)) for i, lab in enumerate(ds.labels)]
    return ImageTextPairs(images=[str(Path(x).resolve()) for x in ds.inputs], captions=captions, source=str(path),
                          labels=list(ds.labels), templates=tuple(templates), origin=ds.origin)


def _from_table(path: Path, *, caption_col, label_col, fmt, header) -> ImageTextPairs:
    from ..errors import did_you_mean
    from .readers import EDGE_SPACE, _file_column, file_paths, is_blank, read_table

    columns, origin = read_table(path, fmt=fmt, header=header, names=(caption_col, label_col))
    names = list(columns)
    for option, col in (("--text-col", caption_col), ("--label-col", label_col)):
        if col is not None and col not in columns:
            raise BadInput(f"{path}: {option} {col!r} is not a column.{did_you_mean(col, names)} Columns: "
                           f"{', '.join(map(repr, names))}")
    image_col = _file_column(columns, exclude=caption_col)
    if image_col is None:
        raise BadInput(f"{path}: no column whose every value names an image file (.jpg, .png, ...); image-text needs "
                       f"an image-path column and a caption column. Columns: {', '.join(map(repr, names))}")
    lower = {n.lower(): n for n in names if n not in (image_col, label_col)}
    caption = caption_col or next((lower[n] for n in CAPTION_NAMES if n in lower), None)
    if caption is None:
        others = [n for n in names if n not in (image_col, label_col)]
        if len(others) != 1:
            raise BadInput(f"{path}: no caption column (looked for {', '.join(CAPTION_NAMES[:5])}, ...); name it with "
                           f"--text-col. Columns: {', '.join(map(repr, names))}")
        caption = others[0]
    if caption == image_col:
        raise BadInput(f"{path}: the caption column {caption!r} holds image paths; name the caption column with --text-col")
    captions = columns[caption]
    blank = [i for i, t in enumerate(captions) if is_blank(t)]
    if blank:
        raise BadInput(f"{origin[blank[0]]}: empty caption in column {caption!r}"
                       + (f" ({len(blank)} rows in all)" if len(blank) > 1 else "") + "; fill in or remove those rows")
    images = file_paths(path, columns[image_col], origin, image_col, "image")
    labels = None
    if label_col is not None or "label" in lower:
        col = label_col or lower["label"]
        values = columns[col]
        missing = [i for i, v in enumerate(values) if v is None or is_blank(str(v))]
        if missing:
            raise BadInput(f"{origin[missing[0]]}: missing label in column {col!r}; label every row or leave the column out")
        labels = [EDGE_SPACE.sub("", str(v)) for v in values]
    cols = {"image": image_col, "caption": caption, **({"label": label_col or lower.get("label")} if labels else {})}
    return ImageTextPairs(images=[str(Path(x).resolve()) for x in images], captions=[EDGE_SPACE.sub("", str(c)) for c in captions],
                          source=str(path), labels=labels, columns=cols, origin=origin)


def split_by_image(pairs: ImageTextPairs, *, val_fraction: float, test_fraction: float, seed: int):
    """(train, validation, test indices) of the pairs with every image (by content) in one part."""
    keys = pairs.image_keys
    unique = list(dict.fromkeys(keys))
    order = np.random.default_rng(seed).permutation(len(unique))
    n = len(unique)
    n_test = max(1, int(round(n * test_fraction))) if test_fraction > 0 else 0
    n_val = max(1, int(round(n * val_fraction)))
    if n - n_test - n_val < 2:
        raise BadInput(f"{pairs.source}: {n} distinct images leave too few to train on after the split; add images or "
                       "lower --val-fraction/--test-fraction")
    part_of = {}
    for rank, i in enumerate(order):
        part_of[unique[i]] = 2 if rank < n_test else 1 if rank < n_test + n_val else 0
    parts: tuple[list[int], list[int], list[int]] = ([], [], [])
    for i, key in enumerate(keys):
        parts[part_of[key]].append(i)
    return parts


__all__ = ["ImageTextPairs", "read_pairs", "split_by_image"]
