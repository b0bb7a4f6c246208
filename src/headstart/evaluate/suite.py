"""Evaluation suites: which test sets, metrics, slices and pass/fail gates a model is checked on.

A suite is a YAML file, checked in next to the data, so that "is this model good enough?" has
one written answer instead of a notebook. :func:`load_suite` validates the whole file before
anything runs and reports every problem at once (one :class:`~headstart.errors.BadInput` whose
first line is ``suite X has N errors:`` followed by one line per error naming the file and key).

Format::

    name: banking-regression          # required
    datasets:                          # required, at least one
      - name: test                     # required, unique within the suite
        path: data/test.csv            # a table file (.csv .tsv .jsonl .parquet) relative to this
                                       # file, or hf:<hub dataset name> (needs a network)
        text_col: text                 # optional; inferred like `headstart train` does
        label_col: label               # optional; inferred likewise
      - name: public
        path: hf:banking77
        split: test                    # optional, hf: datasets only
    metrics: [accuracy, macro_f1]      # optional; these two are the default and the choices
    slices:                            # optional: metrics also per ...
      - label                          #   ... true label          -> keys "label=refund", ...
                                       #       with recall and precision for that label
      - column: language               #   ... value of a column   -> keys "language=de", ...
    gates:                             # optional pass/fail checks
      - accuracy >= 0.85               # absolute, on every dataset, all examples
      - macro_f1 drop <= 1.0 pt        # relative to a baseline run: (baseline - value) * 100 <= 1.0
      - {gate: "accuracy >= 0.9", dataset: test, slice: "label=refund"}

Metric values are fractions in [0, 1] (write 0.85, not 85); drops are in percentage points.
Absolute gates take ``>=``, ``>``, ``<=`` or ``<``; relative gates ``drop <=`` or ``drop <``.
A gate's ``slice`` is ``all`` (the default) or a key of a slice listed under ``slices``.

A per-label slice holds the examples of one true label, where macro-F1 means nothing (one true
class) and accuracy is that label's recall; such a slice reports :data:`LABEL_METRICS` instead:
``recall`` (share of the label's examples predicted as it) and ``precision`` (share of all the
examples predicted as the label that have it; bootstrapped over the whole dataset). A gate on a
``label=...`` slice names ``recall`` or ``precision`` (``accuracy`` is read as ``recall``);
``macro_f1`` there is a validation error.

Local files are checked when the suite loads (they exist, have a known format, and have the named
columns and slice columns); ``hf:`` datasets are only checked when they are downloaded.

:func:`slice_masks` turns a slice into boolean masks over a dataset's examples and
:func:`evaluate_slices` computes each metric with a percentile-bootstrap interval per slice.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..data.readers import TABLE_FORMATS
from ..errors import BadInput, did_you_mean
from .bootstrap import MacroF1, accuracy, bootstrap_ci

METRICS = ("accuracy", "macro_f1")
"""Metrics a suite may name: the scalar metrics of :func:`~.metrics.classification_metrics`."""
DEFAULT_METRICS = ("accuracy", "macro_f1")
LABEL_METRICS = ("recall", "precision")
"""What a per-label slice (key ``label=<value>``) reports instead of :data:`METRICS`."""
LABEL_PREFIX = "label="
ALL = "all"
"""Slice key of the whole dataset."""

_TOP_KEYS = ("name", "task", "datasets", "metrics", "slices", "gates")
_DATASET_KEYS = ("name", "path", "text_col", "label_col", "split")
_GATE_KEYS = ("gate", "dataset", "slice")
_DROP_UNITS = ("pt", "pts", "point", "points")
_TOLERANCE = 1e-9
"""Values this close to a gate's threshold count as equal to it (floating-point slack)."""

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_ABSOLUTE_RE = re.compile(rf"^\s*(?P<metric>[\w@]+)\s*(?P<op>>=|<=|>|<)\s*(?P<value>{_NUMBER})\s*$")
_RELATIVE_RE = re.compile(rf"^\s*(?P<metric>[\w@]+)\s+drop\s*(?P<op><=|<)\s*(?P<value>{_NUMBER})\s*(?P<unit>[^\s\d]*)\s*$")
_GATE_HELP = (
    "write '<metric> <op> <value>' with op one of >=, >, <=, < (e.g. 'accuracy >= 0.85') "
    "or '<metric> drop <= <points> pt' (e.g. 'macro_f1 drop <= 1.0 pt')"
)


@dataclass(frozen=True)
class SuiteDataset:
    """One test set of a suite.

    ``source`` is the ``path`` value as written; ``path`` is the resolved local file (``None`` for
    ``hf:`` datasets) and ``hf_name`` the hub dataset name (``None`` for local files).
    """

    name: str
    source: str
    path: Path | None = None
    hf_name: str | None = None
    text_col: str | None = None
    label_col: str | None = None
    split: str | None = None

    def to_dict(self) -> dict[str, str]:
        out = {"name": self.name, "path": self.source}
        for key in ("text_col", "label_col", "split"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


@dataclass(frozen=True)
class Slice:
    """Per-subgroup metrics: ``kind="label"`` (per true label) or ``kind="column"`` (per value of
    ``column``). Its masks are keyed ``"<prefix>=<value>"`` with :attr:`prefix`."""

    kind: str
    column: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("label", "column") or (self.kind == "column") != bool(self.column):
            raise ValueError(f"a Slice is Slice('label') or Slice('column', '<name>') (got {self!r})")

    @property
    def prefix(self) -> str:
        return "label" if self.kind == "label" else str(self.column)

    def to_yaml(self) -> str | dict[str, str]:
        return "label" if self.kind == "label" else {"column": str(self.column)}


@dataclass(frozen=True)
class Gate:
    """A pass/fail check on one metric.

    Absolute (``relative=False``): passes when ``value <op> threshold``. Relative
    (``relative=True``, ``op`` is ``<=`` or ``<``): ``threshold`` is an allowed drop in percentage
    points and the gate passes when ``(baseline_value - value) * 100 <op> threshold`` -- for a
    metric where lower is better (``higher_is_better=False``: WER) the drop is
    ``(value - baseline_value) * 100``, the rise of the error. Values
    within 1e-9 of the threshold count as equal to it. ``dataset=None`` applies the gate to every
    dataset of the suite; ``slice`` is ``"all"`` or a slice key such as ``"label=refund"``.
    ``text`` is the gate as written and ``where`` its place in the suite (``"gates[2]"``).
    """

    metric: str
    op: str
    threshold: float
    relative: bool = False
    dataset: str | None = None
    slice: str = ALL
    text: str = ""
    where: str = "gate"
    higher_is_better: bool = True
    """The metric's direction (from the suite's task): what a "drop" is."""

    def applies_to(self, dataset: str) -> bool:
        return self.dataset is None or self.dataset == dataset

    def check(self, value: float, baseline_value: float | None = None) -> tuple[bool, str]:
        """Return ``(passed, detail)``; ``detail`` states the numbers compared.

        A missing value (``None`` or NaN, e.g. an empty slice) fails. A relative gate without a
        ``baseline_value`` raises :class:`BadInput`.
        """
        if value is None or math.isnan(value):
            return False, f"{self.metric}: no value (no examples in slice {self.slice!r}?)"
        if not self.relative:
            passed = _compare(value, self.op, self.threshold)
            verb = "" if passed else "is not "
            return passed, f"{self.metric} {value:.4f} {verb}{self.op} {self.threshold:g}"
        if baseline_value is None:
            raise BadInput(
                f"{self.where} {self.text or self.canonical()!r} compares with a baseline run and none was given; "
                "give a baseline run or remove the gate"
            )
        if math.isnan(baseline_value):
            return False, f"{self.metric}: the baseline has no value to compare with"
        drop = (baseline_value - value if self.higher_is_better else value - baseline_value) * 100.0  # percentage points
        passed = _compare(drop, self.op, self.threshold)
        verb = "" if passed else "is not "
        return passed, (
            f"{self.metric} drop {drop:.2f} pt ({baseline_value:.4f} -> {value:.4f}) {verb}{self.op} {self.threshold:g} pt"
        )

    def canonical(self) -> str:
        """The gate expression in one normal form (used for hashing and display)."""
        if self.relative:
            return f"{self.metric} drop {self.op} {self.threshold!r} pt"
        return f"{self.metric} {self.op} {self.threshold!r}"

    def to_dict(self) -> dict[str, str]:
        out = {"gate": self.canonical()}
        if self.dataset is not None:
            out["dataset"] = self.dataset
        if self.slice != ALL:
            out["slice"] = self.slice
        return out


@dataclass(frozen=True)
class Suite:
    """A validated evaluation suite (build it with :func:`load_suite`)."""

    name: str
    datasets: tuple[SuiteDataset, ...]
    metrics: tuple[str, ...] = DEFAULT_METRICS
    slices: tuple[Slice, ...] = ()
    gates: tuple[Gate, ...] = ()
    path: Path | None = field(default=None, compare=False)
    task: str = "classification"
    """The task whose runs the suite checks (``task: retrieval``: collections or pairs, ranking metrics)."""

    def to_dict(self) -> dict[str, Any]:
        """Canonical content: defaults filled in, gates in normal form, paths as written (the
        task only when it is not classification, so older suites keep their hash)."""
        return {
            "name": self.name,
            **({"task": self.task} if self.task != "classification" else {}),
            "datasets": [d.to_dict() for d in self.datasets],
            "metrics": list(self.metrics),
            "slices": [s.to_yaml() for s in self.slices],
            "gates": [g.to_dict() for g in self.gates],
        }

    @property
    def sha256(self) -> str:
        """SHA-256 of :meth:`to_dict` as sorted, compact JSON.

        Comments, key order, spacing and gate spelling do not change it; it covers the suite
        definition, not the contents of the data files.
        """
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def dataset(self, name: str) -> SuiteDataset:
        for d in self.datasets:
            if d.name == name:
                return d
        raise BadInput(f"suite {self.name!r} has no dataset {name!r}.{did_you_mean(name, [d.name for d in self.datasets])}")


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file; raise one :class:`BadInput` listing every problem found."""
    p = Path(path).expanduser()
    label = str(path)
    if not p.is_file():
        raise BadInput(f"{label}: no such suite file" + (" (it is a folder)" if p.is_dir() else "") + "; check the path")
    try:
        raw = yaml.load(p.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except UnicodeDecodeError:
        raise BadInput(f"suite {label} has 1 error:\n  {label}: not UTF-8 text; save the file as UTF-8") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise BadInput(f"suite {label} has 1 error:\n  {label}: {where}not valid YAML ({problem}); fix the file") from None

    checker = _Checker(label, base=p.parent)
    suite = checker.suite(raw, p)
    if checker.errors:
        name = raw.get("name") if isinstance(raw, dict) and isinstance(raw.get("name"), str) else None
        n = len(checker.errors)
        head = f"suite {name!r} ({label})" if name else f"suite {label}"
        raise BadInput(f"{head} has {n} error{'s' if n > 1 else ''}:\n" + "\n".join(f"  {e}" for e in checker.errors))
    assert suite is not None
    return suite


def parse_gate(text: str, metrics: Sequence[str] = METRICS) -> Gate:
    """One gate expression (``"accuracy >= 0.85"``, ``"macro_f1 drop <= 1.0 pt"``) applying to all
    datasets, e.g. from a command-line option; raises :class:`BadInput` when it is not valid."""
    checker = _Checker("gate", base=Path.cwd())
    parsed = checker._parse_gate("", text, list(metrics)) if isinstance(text, str) else None
    if parsed is None:
        raise BadInput(checker.errors[0] if checker.errors else f"{text!r} is not a gate; {_GATE_HELP}")
    metric, op, threshold, relative = parsed
    return Gate(metric, op, threshold, relative, text=text.strip(), where="gate")


def slice_masks(slice: Slice, labels: Sequence[str], columns: Mapping[str, Sequence]) -> dict[str, np.ndarray]:
    """Boolean masks over the examples, one per distinct value, keyed ``"<prefix>=<value>"``.

    ``labels`` are the examples' true labels; ``columns`` the dataset's columns by name (each as
    long as ``labels``). Missing values (``None``, NaN, blank) are keyed ``"<prefix>=(missing)"``.
    Keys come sorted by value.
    """
    if slice.kind == "label":
        values: Sequence = labels
    else:
        if slice.column not in columns:
            raise BadInput(
                f"slice column {slice.column!r} is not a column of the dataset; columns are "
                f"{', '.join(map(repr, columns))}.{did_you_mean(str(slice.column), columns)}"
            )
        values = columns[slice.column]
        if len(values) != len(labels):
            raise ValueError(f"column {slice.column!r} has {len(values)} values for {len(labels)} examples")
    keys = np.array([f"{slice.prefix}={_value_key(v)}" for v in values], dtype=object)
    return {k: keys == k for k in sorted(set(keys.tolist()))}


def evaluate_slices(
    y_true_idx: np.ndarray,
    y_pred_idx: np.ndarray,
    classes: Sequence[str],
    masks: Mapping[str, np.ndarray],
    metrics: Sequence[str] = DEFAULT_METRICS,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Each metric with a percentile-bootstrap interval, on all examples and on each mask.

    Returns ``{slice_key: {metric: {"value": v, "ci": [low, high], "n": n}}}`` with the key
    ``"all"`` first. Values are :func:`~.bootstrap.bootstrap_ci` estimates (macro-F1 over
    ``classes``, as :func:`~.metrics.classification_metrics` computes it) with the same ``seed``
    for every slice. An empty slice gets ``{"value": None, "ci": None, "n": 0}``.

    A per-label slice (key ``"label=<class>"``, as :func:`slice_masks` names them) gets
    :data:`LABEL_METRICS` instead of ``metrics``: ``recall`` (accuracy within the slice,
    bootstrapped over its examples) and ``precision`` (bootstrapped over all examples, since it
    depends on what else was predicted as the class; its entry also has ``"predicted"``, how many
    examples were). ``n`` is the slice's size for both.
    """
    y_true, y_pred = np.asarray(y_true_idx), np.asarray(y_pred_idx)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true_idx and y_pred_idx must be 1-D and of equal length (got {y_true.shape} and {y_pred.shape})")
    if ALL in masks:
        raise ValueError(f"a mask may not be called {ALL!r}: that key is the whole dataset")
    fns = {}
    for m in metrics:
        if m not in METRICS:
            raise ValueError(f"unknown metric {m!r}; choose from {', '.join(METRICS)}.{did_you_mean(m, METRICS)}")
        fns[m] = accuracy if m == "accuracy" else MacroF1(len(classes))
    everything = np.ones(len(y_true), dtype=bool)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for key, mask in {ALL: everything, **masks}.items():
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != y_true.shape:
            raise ValueError(f"mask {key!r} has shape {mask.shape}, expected {y_true.shape}")
        n = int(mask.sum())
        if key.startswith(LABEL_PREFIX) and n:
            out[key] = _label_slice(y_true, y_pred, classes, key, mask, n_resamples, seed, level)
            continue
        out[key] = {}
        for name, fn in fns.items():
            if n == 0:
                out[key][name] = {"value": None, "ci": None, "n": 0}
                continue
            est, low, high = bootstrap_ci(y_true[mask], y_pred[mask], fn, n_resamples=n_resamples, level=level, seed=seed)
            out[key][name] = {"value": est, "ci": [low, high], "n": n}
    return out


def slice_metric(metric: str, slice_key: str) -> str:
    """The key :func:`evaluate_slices` reports ``metric`` under on slice ``slice_key``: a gate's
    ``accuracy`` on a per-label slice is that label's ``recall``."""
    return "recall" if metric == "accuracy" and slice_key.startswith(LABEL_PREFIX) else metric


class LabelPrecision:
    """Precision of one class: of the examples predicted as ``label``, the share that have it
    (0 when none is); vectorised over resamples (see :class:`~.bootstrap.BatchMetric`)."""

    def __init__(self, label: int):
        self.label = int(label)

    def __call__(self, y_true: np.ndarray, y_pred: np.ndarray) -> float:
        return float(self.batch(y_true, y_pred, np.arange(len(y_true))[None, :])[0])

    def batch(self, y_true: np.ndarray, y_pred: np.ndarray, idx: np.ndarray) -> np.ndarray:
        predicted = (np.asarray(y_pred) == self.label).astype(np.float64)  # (n,)
        hit = predicted * (np.asarray(y_true) == self.label)
        num, den = hit[idx].sum(axis=1), predicted[idx].sum(axis=1)  # (R,)
        return np.divide(num, den, out=np.zeros_like(num), where=den > 0)

    def __repr__(self) -> str:
        return f"precision(label={self.label})"


def _label_slice(y_true, y_pred, classes, key, mask, n_resamples, seed, level) -> dict[str, dict[str, Any]]:
    label = key[len(LABEL_PREFIX):]
    if label not in classes:
        raise ValueError(f"mask {key!r} names a label that is not one of the classes ({', '.join(map(str, classes))})")
    c = list(classes).index(label)
    n = int(mask.sum())
    rec, r_low, r_high = bootstrap_ci(y_true[mask], y_pred[mask], accuracy, n_resamples=n_resamples, level=level, seed=seed)
    prec, p_low, p_high = bootstrap_ci(y_true, y_pred, LabelPrecision(c), n_resamples=n_resamples, level=level, seed=seed)
    return {"recall": {"value": rec, "ci": [r_low, r_high], "n": n},
            "precision": {"value": prec, "ci": [p_low, p_high], "n": n, "predicted": int((y_pred == c).sum())}}


def _compare(x: float, op: str, threshold: float) -> bool:
    if op == ">=":
        return x >= threshold - _TOLERANCE
    if op == ">":
        return x > threshold + _TOLERANCE
    if op == "<=":
        return x <= threshold + _TOLERANCE
    if op == "<":
        return x < threshold - _TOLERANCE
    raise ValueError(f"unknown comparison {op!r}")


def _value_key(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip()):
        return "(missing)"
    return str(v).strip() if isinstance(v, str) else str(v)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice in one mapping (plain YAML keeps the last one)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)):
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


class _Checker:
    """Walks the parsed YAML, collecting every error as ``"<file>: <key>: <problem>"``."""

    def __init__(self, label: str, base: Path):
        self.label = label
        self.base = base
        self.errors: list[str] = []
        self.dataset_names: list[str] = []  # every well-formed name, even of datasets with other errors
        self._columns: dict[Path, list[str] | None] = {}
        self.task = "classification"
        self.known_metrics: tuple[str, ...] = METRICS
        self.default_metrics: tuple[str, ...] = DEFAULT_METRICS

    def columns(self, file: Path) -> list[str] | None:
        if file not in self._columns:
            self._columns[file] = _table_columns(file)
        return self._columns[file]

    def error(self, key: str, problem: str) -> None:
        self.errors.append(f"{self.label}: {key}: {problem}" if key else f"{self.label}: {problem}")

    def suite(self, raw: Any, path: Path) -> Suite | None:
        if raw is None:
            self.error("", "the file is empty; a suite needs at least 'name' and 'datasets'")
            return None
        if not isinstance(raw, dict):
            self.error("", f"expected a mapping with keys {', '.join(_TOP_KEYS)} (got a {type(raw).__name__})")
            return None
        self._unknown_keys("", raw, _TOP_KEYS)
        name = raw.get("name")
        if name is None:
            self.error("name", "missing; give the suite a name, e.g. 'name: banking-regression'")
        elif not isinstance(name, str) or not name.strip() or "\n" in name:
            self.error("name", f"must be a one-line text (got {name!r})")
        self._task(raw.get("task", "classification"))
        metrics = self._metrics(raw.get("metrics", list(self.default_metrics)))
        datasets = self._datasets(raw.get("datasets"))
        slices = self._slices(raw.get("slices", []), datasets)
        gates = self._gates(raw.get("gates", []), metrics, slices)
        if self.errors:
            return None
        return Suite(name=name.strip(), datasets=tuple(datasets), metrics=tuple(metrics), slices=tuple(slices),
                     gates=tuple(gates), path=path, task=self.task)

    def _task(self, raw: Any) -> None:
        from ..tasks import TASKS

        if raw not in TASKS:
            self.error("task", f"unknown task {raw!r}; choose from {', '.join(TASKS)}.{did_you_mean(str(raw), TASKS)}")
            return
        self.task = raw
        if raw != "classification":
            task = TASKS[raw]
            self.known_metrics = tuple(m.name for m in task.metrics)
            self.default_metrics = task.compared

    def _unknown_keys(self, where: str, mapping: dict, allowed: tuple[str, ...]) -> None:
        for key in mapping:
            if key not in allowed:
                prefix = f"{where}." if where else ""
                self.error(f"{prefix}{key}", f"unknown key; allowed keys are {', '.join(allowed)}.{did_you_mean(str(key), allowed)}")

    def _optional_text(self, where: str, value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            self.error(where, f"must be a non-empty text (got {value!r})")
            return None
        return value.strip()

    def _metrics(self, raw: Any) -> list[str]:
        if not isinstance(raw, list) or not raw:
            self.error("metrics", f"must be a non-empty list, e.g. [accuracy, macro_f1] (got {raw!r})")
            return list(DEFAULT_METRICS)
        out: list[str] = []
        known = self.known_metrics
        for i, m in enumerate(raw):
            if not isinstance(m, str) or m not in known:
                hint = did_you_mean(str(m), known)
                self.error(f"metrics[{i}]", f"unknown metric {m!r}; choose from {', '.join(known)}.{hint}")
            elif m in out:
                self.error(f"metrics[{i}]", f"{m!r} is listed twice")
            else:
                out.append(m)
        return out

    def _datasets(self, raw: Any) -> list[SuiteDataset]:
        if raw is None:
            self.error("datasets", "missing; list at least one, e.g. '- {name: test, path: data/test.csv}'")
            return []
        if not isinstance(raw, list) or not raw:
            self.error("datasets", f"must be a non-empty list of datasets (got {raw!r})")
            return []
        out: list[SuiteDataset] = []
        names: set[str] = set()
        for i, entry in enumerate(raw):
            where = f"datasets[{i}]"
            if not isinstance(entry, dict):
                self.error(where, f"must be a mapping with keys name and path (got {entry!r})")
                continue
            self._unknown_keys(where, entry, _DATASET_KEYS)
            name = entry.get("name")
            if not isinstance(name, str) or not name.strip():
                self.error(f"{where}.name", "missing; every dataset needs a name" if name is None else f"must be a non-empty text (got {name!r})")
                name = None
            elif name.strip() in names:
                self.error(f"{where}.name", f"{name.strip()!r} is used by an earlier dataset; names must be unique")
            else:
                name = name.strip()
                names.add(name)
                self.dataset_names.append(name)
            text_col = self._optional_text(f"{where}.text_col", entry.get("text_col"))
            label_col = self._optional_text(f"{where}.label_col", entry.get("label_col"))
            split = self._optional_text(f"{where}.split", entry.get("split"))
            source = entry.get("path")
            if not isinstance(source, str) or not source.strip():
                self.error(f"{where}.path", "missing; give a table file or hf:<dataset name>" if source is None else f"must be a text (got {source!r})")
                continue
            source = source.strip()
            if source.startswith("hf:"):
                hub = source[3:].strip()
                if not hub:
                    self.error(f"{where}.path", "'hf:' needs a hub dataset name, e.g. 'hf:banking77'")
                    continue
                if name is not None:
                    out.append(SuiteDataset(name, source, None, hub, text_col, label_col, split))
                continue
            if split is not None:
                self.error(f"{where}.split", "applies to hf: datasets only; a local file is used whole")
            if self.task != "classification":  # a collection folder, a SQuAD .json or a pairs table
                given = Path(source).expanduser()
                found = given if given.is_absolute() else self.base / given
                if not found.exists():
                    self.error(f"{where}.path", f"no such file or folder {source}" + ("" if given.is_absolute() else f" (looked for {found})"))
                elif name is not None:
                    out.append(SuiteDataset(name, source, found.resolve(), None, text_col, label_col, split))
                continue
            file = self._local_file(f"{where}.path", source)
            if file is None or name is None:
                continue
            columns = self.columns(file)
            for key, col in (("text_col", text_col), ("label_col", label_col)):
                if col is not None and columns is not None and col not in columns:
                    self.error(f"{where}.{key}", f"{col!r} is not a column of {source}; columns are "
                               f"{', '.join(map(repr, columns))}.{did_you_mean(col, columns)}")
            out.append(SuiteDataset(name, source, file, None, text_col, label_col, split))
        return out

    def _local_file(self, where: str, source: str) -> Path | None:
        given = Path(source).expanduser()
        file = given if given.is_absolute() else self.base / given
        if not file.exists():
            self.error(where, f"no such file {source}" + ("" if given.is_absolute() else f" (looked for {file})"))
            return None
        if file.is_dir():
            self.error(where, f"{source} is a folder; give a table file (.csv, .tsv, .jsonl or .parquet)")
            return None
        if file.suffix.lower() not in TABLE_FORMATS:
            self.error(where, f"{source}: unknown format {file.suffix or '(no extension)'!r}; use .csv, .tsv, .jsonl or .parquet")
            return None
        return file.resolve()

    def _slices(self, raw: Any, datasets: list[SuiteDataset]) -> list[Slice]:
        if raw is None:
            return []
        if not isinstance(raw, list):
            self.error("slices", f"must be a list, e.g. ['label', {{column: language}}] (got {raw!r})")
            return []
        out: list[Slice] = []
        if raw and self.task != "classification":
            self.error("slices", f"a {self.task} suite has no slices yet (its examples are queries, not labelled rows); "
                       "remove the slices list")
            return []
        for i, entry in enumerate(raw):
            where = f"slices[{i}]"
            if isinstance(entry, str):
                if entry.strip() != "label":
                    self.error(where, f"unknown slice {entry!r}; use '- label' or '- column: <name>'.{did_you_mean(entry, ['label', 'column'])}")
                    continue
                s = Slice("label")
            elif isinstance(entry, dict):
                self._unknown_keys(where, entry, ("column",))
                column = entry.get("column")
                if not isinstance(column, str) or not column.strip():
                    self.error(f"{where}.column", f"must name a column of the datasets (got {column!r})")
                    continue
                if column.strip() == "label":
                    self.error(f"{where}.column", "slice keys 'label=...' are taken by per-label slices; use '- label' for those")
                    continue
                s = Slice("column", column.strip())
            else:
                self.error(where, f"must be 'label' or a mapping '{{column: <name>}}' (got {entry!r})")
                continue
            if s in out:
                self.error(where, f"slice {s.prefix!r} is listed twice")
                continue
            for d in datasets if s.kind == "column" else ():
                columns = self.columns(d.path) if d.path is not None else None  # hf: checked when downloaded
                if columns is not None and s.column not in columns:
                    self.error(f"{where}.column", f"{s.column!r} is not a column of dataset {d.name!r} ({d.source}); "
                               f"columns are {', '.join(map(repr, columns))}.{did_you_mean(str(s.column), columns)}")
            out.append(s)
        return out

    def _gates(self, raw: Any, metrics: list[str], slices: list[Slice]) -> list[Gate]:
        if raw is None:
            return []
        if not isinstance(raw, list):
            self.error("gates", f"must be a list, e.g. ['accuracy >= 0.85'] (got {raw!r})")
            return []
        out: list[Gate] = []
        dataset_names = self.dataset_names
        prefixes = [s.prefix for s in slices]
        for i, entry in enumerate(raw):
            where = f"gates[{i}]"
            dataset, slice_key = None, ALL
            if isinstance(entry, dict):
                self._unknown_keys(where, entry, _GATE_KEYS)
                text = entry.get("gate")
                dataset = entry.get("dataset")
                slice_key = entry.get("slice", ALL)
                if dataset is not None and (not isinstance(dataset, str) or dataset not in dataset_names):
                    self.error(f"{where}.dataset", f"no dataset {dataset!r} in this suite; datasets are "
                               f"{', '.join(map(repr, dataset_names)) or '(none valid)'}.{did_you_mean(str(dataset), dataset_names)}")
                if not isinstance(slice_key, str) or not self._known_slice(slice_key, prefixes):
                    self.error(f"{where}.slice", f"{slice_key!r} is not a slice of this suite; use 'all' or '<slice>=<value>' "
                               f"with <slice> one of {', '.join(map(repr, prefixes)) or '(none: add a slices list)'}")
                if text is None:
                    self.error(f"{where}.gate", f"missing; {_GATE_HELP}")
                    continue
            else:
                text = entry
            if not isinstance(text, str):
                self.error(where, f"{text!r} is not a gate; {_GATE_HELP}")
                continue
            parsed = self._parse_gate(where, text, metrics, slice_key if isinstance(slice_key, str) else ALL)
            if parsed is not None:
                metric, op, threshold, relative = parsed
                out.append(Gate(metric, op, threshold, relative, dataset, slice_key, text.strip(), where,
                                higher_is_better=self._higher_is_better(metric)))
        return out

    def _higher_is_better(self, metric: str) -> bool:
        from ..tasks import TASKS

        task = TASKS.get(self.task)
        return True if task is None else next((m.higher_is_better for m in task.metrics if m.name == metric), True)

    def _bounds(self, metric: str) -> tuple[float, float]:
        """The metric's range from its task's MetricSpec ((0, 1) when the task does not say)."""
        from ..tasks import TASKS

        task = TASKS.get(self.task)
        spec = None if task is None else next((m for m in task.metrics if m.name == metric), None)
        return (0.0, 1.0) if spec is None else (float(spec.bounds[0]), float(spec.bounds[1]))

    @staticmethod
    def _known_slice(key: str, prefixes: list[str]) -> bool:
        if key == ALL:
            return True
        prefix, eq, value = key.partition("=")
        return bool(eq) and prefix in prefixes and bool(value)

    def _parse_gate(self, where: str, text: str, metrics: list[str], slice_key: str = ALL) -> tuple[str, str, float, bool] | None:
        """``(metric, op, threshold, relative)`` of a gate expression on ``slice_key``, or None after
        recording errors."""
        relative = re.search(r"\bdrop\b", text) is not None
        match = (_RELATIVE_RE if relative else _ABSOLUTE_RE).match(text)
        if match is None:
            self.error(where, f"{text!r}: not a gate; {_GATE_HELP}")
            return None
        metric, op, threshold = match["metric"], match["op"], float(match["value"])
        ok = True
        if slice_key.startswith(LABEL_PREFIX):
            choices = (*LABEL_METRICS, "accuracy")
            if metric == "macro_f1":
                self.error(where, f"{text!r}: macro-F1 inside slice {slice_key!r} means nothing (every example there has that true "
                           f"label); gate on 'recall' (accuracy within the slice) or 'precision' of the label, e.g. "
                           f"'{text.replace('macro_f1', 'recall', 1).strip()}'")
                ok = False
            elif metric not in choices:
                self.error(where, f"{text!r}: unknown metric {metric!r} for a per-label slice; choose from "
                           f"{', '.join(choices)}.{did_you_mean(metric, choices)}")
                ok = False
        elif metric in LABEL_METRICS:
            self.error(where, f"{text!r}: {metric!r} is reported per label; give the gate a slice 'label=<value>' "
                       "(with '- label' under slices), or use accuracy / macro_f1 on the whole dataset")
            ok = False
        elif metric not in self.known_metrics:
            known = self.known_metrics
            self.error(where, f"{text!r}: unknown metric {metric!r}; choose from {', '.join(known)}.{did_you_mean(metric, known)}")
            ok = False
        elif metric not in metrics:
            self.error(where, f"{text!r}: {metric!r} is not in this suite's metrics ({', '.join(metrics)}); add it there")
            ok = False
        if relative:
            if match["unit"] not in _DROP_UNITS:
                self.error(where, f"{text!r}: give the allowed drop in percentage points, e.g. '{metric} drop {op} {threshold:g} pt'"
                           + (f" (got unit {match['unit']!r})" if match["unit"] else ""))
                ok = False
            elif not 0 <= threshold <= 100:
                self.error(where, f"{text!r}: the allowed drop must be between 0 and 100 points (got {threshold:g})")
                ok = False
        elif self._bounds(metric)[1] == 1.0 and not 0 <= threshold <= 1:
            hint = f"; for {threshold:g}% write {threshold / 100:g}" if 1 < threshold <= 100 else ""
            self.error(where, f"{text!r}: metric values are fractions between 0 and 1 (got {threshold:g}){hint}")
        elif not self._bounds(metric)[0] <= threshold <= self._bounds(metric)[1]:
            low, high = self._bounds(metric)
            self.error(where, f"{text!r}: {metric} lies between {low:g} and {high:g} (got {threshold:g})")
            ok = False
        return (metric, op, threshold, relative) if ok else None


def _table_columns(path: Path) -> list[str] | None:
    """Column names of a table file, read cheaply; ``None`` when that fails (the data reader
    reports the problem when the data is loaded)."""
    kind = TABLE_FORMATS.get(path.suffix.lower())
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
        with path.open(encoding="utf-8-sig", newline="") as f:
            if kind == "jsonl":
                names: list[str] = []
                for line in f:
                    if line.strip():
                        row = json.loads(line)
                        if not isinstance(row, dict):
                            return None
                        names.extend(k for k in row if k not in names)
                return names or None
            if kind in ("csv", "tsv"):
                reader = csv.reader(f, delimiter="," if kind == "csv" else "\t")
                for header in reader:
                    if any(h.strip() for h in header):
                        return [h.strip() for h in header]
    except Exception:  # noqa: BLE001 - any unreadable file is left to the data reader
        return None
    return None
