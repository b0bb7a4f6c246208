"""The validated, labelled dataset every method consumes, whatever the modality."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from ..errors import BadInput


@dataclass(frozen=True, eq=False)
class Dataset:
    """Inputs (texts, or image file paths) with optional string labels.

    ``origin`` says where each example came from (``"train.csv line 12"``) for error messages;
    ``columns`` records which columns were read, so predictions can reuse them.
    """

    inputs: list
    labels: list[str] | None
    modality: str
    source: str
    origin: list[str] = field(repr=False, default_factory=list)
    columns: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.inputs)

    @cached_property
    def item_keys(self) -> list[str]:
        """sha256 of each example's content (text, or the image file's bytes)."""
        if self.modality == "text":
            return [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in self.inputs]
        return [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in self.inputs]

    @cached_property
    def fingerprint(self) -> str:
        """Content hash of the examples and labels, in order (independent of file name)."""
        h = hashlib.sha256(self.modality.encode())
        for i, key in enumerate(self.item_keys):
            label = self.labels[i] if self.labels is not None else ""
            h.update(f"{key}\t{label}\n".encode())
        return h.hexdigest()

    @property
    def classes(self) -> list[str]:
        if self.labels is None:
            return []
        return sorted(set(self.labels), key=_label_sort_key)

    def subset(self, index: np.ndarray | list[int], source: str | None = None) -> Dataset:
        index = [int(i) for i in index]
        return Dataset(
            inputs=[self.inputs[i] for i in index],
            labels=None if self.labels is None else [self.labels[i] for i in index],
            modality=self.modality,
            source=source or self.source,
            origin=[self.origin[i] for i in index] if self.origin else [],
            columns=self.columns,
        )

    @staticmethod
    def concat(a: Dataset, b: Dataset) -> Dataset:
        return Dataset(
            inputs=a.inputs + b.inputs,
            labels=(a.labels or []) + (b.labels or []) if a.labels is not None else None,
            modality=a.modality,
            source=a.source,
            origin=a.origin + b.origin,
            columns=a.columns,
        )

    def require_labels(self) -> None:
        if self.labels is None:
            raise BadInput(f"{self.source}: no labels; name the label column with --label-col")


def _label_sort_key(label: str):
    """Numeric labels sort numerically ('-1' < '1' < '10'), others alphabetically."""
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


@dataclass(frozen=True)
class Split:
    train: Dataset
    val: Dataset
    test: Dataset | None
    """None when the caller will supply the test set."""

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test) if self.test else 0}


def stratified_split(data: Dataset, *, val_fraction: float, test_fraction: float, seed: int) -> Split:
    """Seeded, stratified split into train / validation / (test when test_fraction > 0).

    Each class needs at least 2 examples: one to train on and one held out. A class too small for
    every held-out split gets its held-out example in the test split first (it is what is reported).
    """
    data.require_labels()
    classes = data.classes
    index = {c: i for i, c in enumerate(classes)}
    codes = np.fromiter((index[label] for label in data.labels), dtype=np.int32, count=len(data))
    train, val, test = split_indices(codes, classes, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                                     source=data.source)
    return Split(
        train=data.subset(train),
        val=data.subset(val),
        test=data.subset(test) if test_fraction > 0 else None,
    )


def split_indices(codes: np.ndarray, classes: list[str], *, val_fraction: float, test_fraction: float, seed: int,
                  source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rule of :func:`stratified_split` on label codes (``codes[i]`` indexes ``classes``, which
    are in :func:`_label_sort_key` order): sorted int64 row indices of train, validation, test.

    Works on index arrays only, so a table of millions of rows splits without a Python object per row.
    """
    if not 0 < val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise BadInput(f"split fractions must be in (0, 1) and sum below 1 (validation {val_fraction}, test {test_fraction})")
    counts = np.bincount(codes, minlength=len(classes))
    too_small = [(classes[c], int(n)) for c, n in enumerate(counts) if n < 2]
    if too_small:
        shown = ", ".join(f"{c!r} ({n})" for c, n in too_small[:5])
        more = f" and {len(too_small) - 5} more" if len(too_small) > 5 else ""
        raise BadInput(
            f"{source}: classes with fewer than 2 examples cannot be split: {shown}{more}; "
            "add examples, drop those classes, or pass a separate --test file and more training rows"
        )
    rng = np.random.default_rng(seed)
    train, val, test = [], [], []
    for c in range(len(classes)):
        ix = np.flatnonzero(codes == c)  # the class's rows in row order, then shuffled
        rng.shuffle(ix)
        n = len(ix)
        n_test = int(round(n * test_fraction))
        n_val = int(round(n * val_fraction))
        if test_fraction > 0 and n_test == 0:
            n_test = 1
        n_val = min(n_val, n - n_test - 1)
        if n_val == 0 and n - n_test >= 2:  # every class gets a validation example when it can
            n_val = 1
        test.append(ix[:n_test])
        val.append(ix[n_test : n_test + n_val])
        train.append(ix[n_test + n_val :])
    train_ix, val_ix, test_ix = (np.sort(np.concatenate(parts)) if parts else np.empty(0, np.int64) for parts in (train, val, test))
    if not len(val_ix):
        raise BadInput(f"{source}: too few examples to hold out a validation split; add examples")
    return train_ix, val_ix, test_ix
