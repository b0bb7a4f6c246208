"""Evaluation data for a run: suite datasets, the run's own test set, and its predictions on them.

An :class:`EvalSet` is a labelled dataset plus the raw columns of its file (slices may group by
any of them). A run is evaluated live (its base loaded and checked against the recorded sha256);
when the base has changed since the run was made (the case ``watch`` exists for), the run's
recorded test predictions stand in for it on its own test set, found by content fingerprint.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data import Dataset, load_dataset, stratified_split
from ..errors import BadInput, RunIntegrityError


@dataclass
class EvalSet:
    name: str
    data: Dataset
    columns: dict[str, list] = field(default_factory=dict)
    """Raw columns of the source table (empty for image folders), row-aligned with ``data``."""


def load_eval_set(name: str, path: str | Path, *, text_col: str | None = None, label_col: str | None = None,
                  hint: dict | None = None, where: str = "") -> EvalSet:
    """A labelled table file or image folder. ``hint`` holds the training column names, used when
    the file has them and no column was named."""
    from ..data.readers import read_table, select_columns

    p = Path(path).expanduser()
    if p.is_dir() or not p.exists():
        data = load_dataset(p, text_col=text_col, label_col=label_col)
        data.require_labels()
        return EvalSet(name, data)
    columns, origin = read_table(p)
    hint = hint or {}
    text_col = text_col or (hint.get("text") if hint.get("text") in columns else None)
    label_col = label_col or (hint.get("label") if hint.get("label") in columns else None)
    data = select_columns(p, columns, origin, text_col=text_col, label_col=label_col, labels_required=True)
    if data.labels is None:
        raise BadInput(f"{where or p}: no label column; name it (label_col) so the data can be scored")
    return EvalSet(name, data, {k: list(v) for k, v in columns.items()})


def run_test_set(run) -> EvalSet:
    """The examples the run was tested on: its --test file, or its held-out split re-made from
    the recorded data, fractions and seed (checked against the recorded fingerprint)."""
    m = run.manifest
    recipe = recipe_of(m)
    hint = m["data"]["train"].get("columns", {})
    if recipe["test"]:
        es = load_eval_set("test", recipe["test"], text_col=recipe["text_col"], label_col=recipe["label_col"], hint=hint)
    else:
        full = _training_data(run)
        split = stratified_split(full, val_fraction=recipe["val_fraction"], test_fraction=recipe["test_fraction"], seed=recipe["seed"])
        columns = {}
        src = Path(recipe["data"])
        if src.is_file():
            from ..data.readers import read_table

            raw, _ = read_table(src, fmt=recipe["fmt"])
            index = {o: i for i, o in enumerate(full.origin)}
            rows = [index[o] for o in split.test.origin]
            columns = {k: [v[i] for i in rows] for k, v in raw.items()}
        es = EvalSet("test", split.test, columns)
    if es.data.fingerprint != m["data"]["test"]["fingerprint"]:
        raise BadInput(f"run {run.id}: its test data {es.data.source} changed since the run was made (fingerprint differs); "
                       "give a suite (--suite) with the data to compare on")
    return es


def _training_data(run) -> Dataset:
    recipe = recipe_of(run.manifest)
    full = load_dataset(recipe["data"], text_col=recipe["text_col"], label_col=recipe["label_col"], fmt=recipe["fmt"])
    if full.fingerprint != run.manifest["data"]["train"]["fingerprint"]:
        raise BadInput(f"run {run.id}: its training data {recipe['data']} changed since the run was made (fingerprint differs); "
                       "the recipe cannot be re-run on the same data")
    return full


def recipe_of(manifest: dict) -> dict:
    """The recorded recipe (runs from headstart >= 0.3), or one rebuilt from an older manifest."""
    if manifest.get("recipe"):
        recipe = dict(manifest["recipe"])
        recipe["method_options"] = {k: tuple(v) if isinstance(v, list) else v for k, v in recipe["method_options"].items()}
        return recipe
    data, split = manifest["data"], manifest["data"]["split"]
    cols = data["train"].get("columns", {})
    test_src = data["test"]["source"]
    return {
        "data": data["train"]["source"], "test": None if test_src == "held out from train" else test_src,
        "backbone": manifest["backbone"]["name"], "method": manifest["method"]["name"], "method_options": {},
        "seed": manifest["seed"], "text_col": cols.get("text"), "label_col": cols.get("label"), "fmt": None,
        "val_fraction": split["val_fraction"], "test_fraction": split["test_fraction"],
        "precision": manifest["precision"]["requested"], "budget": manifest.get("budget_s"),
    }


def class_indices(labels: list[str], classes: list[str], source: str) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({label for label in labels if label not in index})
    if unknown:
        raise BadInput(f"{source}: labels the run never saw: {', '.join(map(repr, unknown[:5]))}; remove those rows")
    return np.array([index[label] for label in labels], dtype=np.int64)


def predict_indices(run, es: EvalSet) -> tuple[np.ndarray, str]:
    """The run's predicted class indices on ``es`` and where they came from ('live' or 'recorded')."""
    try:
        return run.predict(es.data).indices, "live"
    except RunIntegrityError:
        if es.data.fingerprint != run.manifest["data"]["test"]["fingerprint"]:
            raise BadInput(
                f"run {run.id}: its base changed since the run was made, so it can only be compared on its own test set "
                f"(its recorded predictions); {es.name} ({es.data.source}) is other data. Drop --suite, or restore the old base"
            ) from None
        return recorded_predictions(run, es.data), "recorded"


def recorded_predictions(run, data: Dataset) -> np.ndarray:
    """The predicted class indices written to the run's predictions.csv (its test set, in order)."""
    path = run.path / "predictions.csv"
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if len(rows) != len(data) or any(r["input"] != str(x) for r, x in zip(rows, data.inputs, strict=True)):
        raise BadInput(f"{path}: does not match the run's test data; the run folder may be damaged")
    return class_indices([r["predicted"] for r in rows], run.classes, str(path))
