"""``compare``: several methods (x backbones) on the same split of the same data, side by side.

Why: "which adaptation method should I use?" is a trade-off between quality and cost, and a
trade-off can only be read off numbers measured the same way. ``compare`` runs every
method x backbone through :func:`headstart.api.adapt` with the same data, seed and split
fractions (the split is deterministic given data + seed, and this module checks that every run
really saw the same train / validation / test sizes and the same test examples), then reports
per run: test accuracy and macro-F1 with 95% percentile-bootstrap intervals over the test
examples, trainable parameters (count and share of all parameters), wall time and peak memory.

It writes a comparison folder, whole or not at all (temporary name, then rename)::

    <out>/<comparison id>/
      comparison.json   inputs, data and split, rows (with run ids), frontier
      table.md          the table in Markdown, headed by data, split sizes, seed and date
      frontier.png      accuracy vs wall time and vs trainable %, Pareto frontier drawn

and records it in the store (table ``comparisons``). The runs themselves are ordinary runs in the
store. If one run fails, no comparison is written; the runs that finished before it stay.

Caveats, also printed under the table: peak memory is the peak resident memory of this process
during each run (runs share one process, so memory the allocator keeps from an earlier run can
show up in a later one); a later linear probe on the same backbone may reuse cached features and
so report less wall time than a cold one.

The table is rendered by :mod:`headstart.report.compare_table`, the plot and the Pareto frontier
by :mod:`headstart.report.frontier`; the ``headstart compare`` command is in :mod:`headstart.cli`.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._util import home, parse_duration, peak_rss, status
from .errors import BadInput, HeadstartError
from .report import compare_table
from .tasks import get_task
from .report.frontier import frontier_figure, pareto_frontier, plot_frontier
from .recipe import Recipe

__all__ = ["FORMAT", "Comparison", "SplitMismatch", "compare", "frontier_figure", "pareto_frontier", "parse_set_options", "plot_frontier"]

FORMAT = "headstart.comparison/1"
N_RESAMPLES = 1000
LEVEL = 0.95


class SplitMismatch(HeadstartError):
    """Two runs of one comparison did not see the same train / validation / test split."""


# -- results -----------------------------------------------------------------------------------


@dataclass
class Comparison:
    """The result of :func:`compare`: one row per method x backbone, and where it was saved.

    Each row holds ``method``, ``backbone`` (as given), ``run_id``, ``run_path``, ``accuracy``,
    ``accuracy_low``/``accuracy_high`` (95% bootstrap interval), ``macro_f1`` (+ ``_low``/``_high``),
    ``trainable_params``, ``total_params`` and ``trainable_pct`` (None when the method did not
    report them), ``wall_s``, ``peak_rss_mb`` (+ ``peak_rss_how``), ``peak_gpu_mb`` (None without
    CUDA), ``on_frontier``, and the training's ``stopped_by`` (``"budget"``, ``"epochs"``,
    ``"early-stopping"``, ``"steps"``), ``steps`` and ``planned_steps`` (None for methods that take
    no steps, such as the linear probe).
    """

    id: str
    path: Path
    created_at: str
    rows: list[dict[str, Any]]
    data: dict[str, Any]
    inputs: dict[str, Any]
    bootstrap: dict[str, Any] = field(default_factory=lambda: {"n_resamples": N_RESAMPLES, "level": LEVEL})
    plot: str | None = "frontier.png"

    @property
    def frontier(self) -> list[dict[str, Any]]:
        """Rows not beaten on both the primary metric (in its direction) and wall time (lower), fastest first."""
        return sorted((r for r in self.rows if r["on_frontier"]), key=lambda r: r["wall_s"])

    @property
    def metrics(self) -> list[list[str]]:
        """The two compared metrics as ``[name, label]``, the primary (the frontier's) first."""
        return self.data.get("metrics") or [["accuracy", "accuracy"], ["macro_f1", "macro-F1"]]

    @property
    def run_ids(self) -> list[str]:
        return [r["run_id"] for r in self.rows]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "id": self.id,
            "path": str(self.path),
            "created_at": self.created_at,
            "inputs": self.inputs,
            "data": self.data,
            "bootstrap": self.bootstrap,
            "rows": self.rows,
            "frontier": [r["run_id"] for r in self.frontier],
            "files": {"table": "table.md", "plot": self.plot, "json": "comparison.json"},
        }

    def header(self) -> str:
        """One line: data, classes, split sizes, test source, seed and date."""
        return compare_table.header(self)

    def legend(self) -> str:
        """What the table's intervals, marks and n/a mean."""
        return compare_table.legend(self)

    def to_markdown(self) -> str:
        """The table as Markdown, headed by the data, split sizes, seed and date."""
        return compare_table.to_markdown(self)

    def to_text(self) -> str:
        """An aligned plain-text table for a terminal, with the folder it was saved to."""
        return compare_table.to_text(self)

# -- the API -----------------------------------------------------------------------------------


def compare(
    data: str | Path,
    *,
    methods: Sequence[str],
    backbones: Sequence[str] = ("minilm-l6",),
    test: str | Path | None = None,
    seed: int = 0,
    method_options: dict[str, dict[str, Any]] | None = None,
    out: str | Path | None = None,
    runs_out: str | Path | None = None,
    store: str | Path | None = None,
    text_col: str | None = None,
    label_col: str | None = None,
    fmt: str | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    precision: str = "auto",
    budget: float | str | None = None,
    task: str = "classification",
    task_options: dict[str, Any] | None = None,
    language: str | None = None,
    _problems: list[str] | None = None,
) -> Comparison:
    """Adapt every backbone x method on the same split of ``data`` and tabulate quality vs cost.

    Everything is validated before the first run (method and backbone names, duplicates,
    ``method_options`` keyed by method name, data, split, folders); all problems are reported in
    one :class:`~headstart.errors.BadInput`. ``method_options`` maps a method name to that
    method's options (as ``adapt(method_options=)``). ``out`` is the parent of the comparison
    folder (default ``<headstart home>/comparisons``); ``runs_out`` the parent of the run folders
    (``adapt(out=)``). ``budget`` (seconds, or a duration such as ``"10m"``) is passed to each
    ``adapt(budget=)``: each run's training stops cleanly at that time. ``task`` is the
    registered task every run adapts for; the table shows its two compared metrics (classification:
    accuracy and macro-F1; retrieval: nDCG@10 and MRR@10) and the frontier is drawn on the first.
    ``task_options`` (the task's own, as ``adapt(task_options=)``) and ``language`` (asr) apply to
    every run.

    Runs go backbone by backbone, methods in the order given; each is an ordinary run in the
    store. Raises :class:`SplitMismatch` if the runs did not all see the same split, and the
    failing run's error (naming method and backbone) if one fails; in both cases no comparison
    is written and the finished runs stay. (``_problems``: errors the CLI already found while
    parsing its options, reported together with these.)
    """
    from . import api
    from .runs.store import Store

    plan = _validate(
        data, methods=methods, backbones=backbones, test=test, seed=seed, method_options=method_options, out=out,
        runs_out=runs_out, text_col=text_col, label_col=label_col, fmt=fmt, val_fraction=val_fraction,
        test_fraction=test_fraction, precision=precision, budget=budget, problems=list(_problems or []), task=task,
        task_options=task_options, language=language,
    )
    task_obj = get_task(task)
    store_obj = Store(store)
    _warm_up(plan.backbones)
    runs: list[Any] = []
    rows: list[dict[str, Any]] = []
    labels: list[str] = []
    total = len(plan.backbones) * len(plan.methods)
    for backbone in plan.backbones:
        for method in plan.methods:
            label = f"{method} on {_backbone_label(backbone)}"
            status(f"compare [{len(runs) + 1}/{total}]: {label}")
            gpu = _GpuPeak()
            t0 = time.perf_counter()
            try:
                with peak_rss() as mem:
                    run = api.adapt(
                        data, test=test, backbone=backbone, method=method, method_options=plan.options.get(method),
                        out=runs_out, seed=seed, text_col=text_col, label_col=label_col, fmt=fmt,
                        val_fraction=val_fraction, test_fraction=test_fraction, precision=precision, store=store, budget=plan.budget_s,
                        task=task, task_options=task_options, language=language,
                    )
            except HeadstartError as e:
                raise _failed(e, label, runs, labels) from e
            except Exception as e:  # a crash (e.g. out of memory): keep its traceback, say what was kept
                e.add_note(f"compare: {label} failed; {_kept(runs, labels)}")
                raise
            wall = time.perf_counter() - t0
            runs.append(run)
            labels.append(label)
            rows.append(_row(run, method, backbone, wall, mem.peak_mb, mem.how, gpu.read(), seed))

    _check_same_split(runs, labels)
    _mark_frontier(rows, task_obj.compared[0], higher_is_better=task_obj.metric(task_obj.compared[0]).higher_is_better)

    first = runs[0].manifest
    created = time.strftime("%Y-%m-%dT%H:%M:%S%z")  # as run manifests
    comparison = Comparison(
        id=f"{time.strftime('%Y%m%d-%H%M%S')}-compare-{secrets.token_hex(3)}",
        path=plan.out_dir,  # replaced below by the final folder
        created_at=created,
        rows=rows,
        data={
            "source": first["data"]["train"]["source"],
            "fingerprint": first["data"]["train"]["fingerprint"],
            "modality": first["modality"],
            "task": task_obj.name,
            "metrics": [[name, task_obj.shown.get(name, name)] for name in task_obj.compared],
            **({"classes": first["classes"]} if "classes" in first else {}),
            "test_source": first["data"]["test"]["source"],
            "test_fingerprint": first["data"]["test"]["fingerprint"],
            "split": {k: first["data"]["split"][k] for k in ("train", "val", "test")},
        },
        inputs={
            "data": str(data), "test": None if test is None else str(test), "methods": plan.methods, "backbones": plan.backbones,
            "seed": seed, "method_options": {m: _jsonable(o) for m, o in plan.options.items()}, "val_fraction": val_fraction,
            "test_fraction": test_fraction, "precision": precision, "budget_s": plan.budget_s, "text_col": text_col,
            "label_col": label_col, "format": fmt, "task": task,
            "task_options": _jsonable(dict(task_options or {})), "language": language, "runs_out": None if runs_out is None else str(runs_out),
            "store": str(store_obj.path),
        },
        bootstrap={"n_resamples": N_RESAMPLES, "level": LEVEL, "seed": seed, "method": "percentile (Efron & Tibshirani 1993)"},
    )
    comparison.path = _write_folder(comparison, plan.out_dir)
    try:
        store_obj.add_comparison(
            comparison.id, comparison.path, comparison.created_at, comparison.data["fingerprint"], comparison.run_ids, comparison.rows
        )
    except BaseException:
        shutil.rmtree(comparison.path, ignore_errors=True)
        raise
    return comparison


@dataclass
class _Plan:
    methods: list[str]
    backbones: list[str]
    options: dict[str, dict[str, Any]]
    out_dir: Path
    budget_s: float | None


def _validate(
    data: str | Path,
    *,
    methods: Sequence[str],
    backbones: Sequence[str],
    test: str | Path | None,
    seed: int,
    method_options: dict[str, dict[str, Any]] | None,
    out: str | Path | None,
    runs_out: str | Path | None,
    text_col: str | None,
    label_col: str | None,
    fmt: str | None,
    val_fraction: float,
    test_fraction: float,
    precision: str,
    budget: float | str | None,
    problems: list[str],
    task: str = "classification",
    task_options: dict[str, Any] | None = None,
    language: str | None = None,
) -> _Plan:
    """Check every input that can be checked without training; raise one BadInput naming them all."""
    from .backbones import check_modality, family_class
    from .catalog import CATALOG, resolve
    from .methods import METHODS, get_method

    problems = list(problems)
    try:
        task_obj = get_task(task)
    except BadInput as e:
        problems.append(f"--task: {e}")
        task_obj = None
    method_list = _names(methods, "--methods", problems, f"e.g. --methods linear-probe; available: {', '.join(METHODS)}")
    backbone_list = _names(backbones, "--backbones", problems, f"e.g. --backbones minilm-l6; catalog: {', '.join(CATALOG)}")

    for name in method_list:
        try:
            cls = get_method(name)
        except BadInput as e:
            problems.append(f"--methods: {e}")
            continue
        if task_obj is not None and not cls.supports(task_obj):
            fits = [m for m, c in METHODS.items() if c.supports(task_obj)]
            problems.append(f"--methods: {name!r} does not adapt for the task {task_obj.name!r}; for {task_obj.name} "
                            f"choose among {', '.join(fits)}")

    specs = []
    for name in backbone_list:
        try:
            specs.append(resolve(name))
        except BadInput as e:
            problems.append(f"--backbones: {e}")

    options: dict[str, dict[str, Any]] = {}
    if method_options is not None and not isinstance(method_options, dict):
        problems.append(f"method_options must map a method name to its options, e.g. {{'linear-probe': {{'C': 0.5}}}} (got {method_options!r})")
        method_options = None
    for name, opts in (method_options or {}).items():
        if name not in method_list:
            problems.append(f"--set {name}.*: {name!r} is not among --methods ({', '.join(method_list) or 'none'}); add it or drop the option")
            continue
        if opts is not None and not isinstance(opts, dict):
            problems.append(f"--set {name}.*: options must be a mapping KEY -> VALUE (got {opts!r})")
            continue
        try:
            get_method(name).from_options(opts)
        except (BadInput, TypeError, ValueError) as e:  # TypeError/ValueError: a config class rejecting a value
            problems.append(f"--set {name}.*: {e}")
        options[name] = dict(opts or {})

    # The run-wide checks every adapt makes (precision, seed, split fractions), once for all runs.
    shared = Recipe(data=str(data), test=None if test is None else str(test), seed=seed, precision=precision,
                    val_fraction=val_fraction, test_fraction=test_fraction, language=language).field_problems()
    if task_obj is not None:
        try:
            task_obj.options(task_options)
        except (BadInput, TypeError) as e:
            problems.append(f"--task-set: {e}")
    problems += shared
    fields_ok = not shared  # the split below needs a valid seed and fractions

    budget_s: float | None = None
    if budget is not None:
        if isinstance(budget, str):
            try:
                budget_s = parse_duration(budget)
            except BadInput as e:
                problems.append(str(e))
        elif isinstance(budget, (int, float)) and not isinstance(budget, bool) and math.isfinite(budget) and budget > 0:
            budget_s = float(budget)
        else:
            problems.append(f"--budget {budget!r}: use a number with s, m or h, e.g. 10m")

    out_dir = Path(out).expanduser() if out else home() / "comparisons"
    for option, folder in (("--out", out_dir), ("--runs-out", Path(runs_out).expanduser() if runs_out else None)):
        if folder is not None and folder.exists() and not folder.is_dir():
            problems.append(f"{option} {folder} is a file; give a folder (it is created if missing)")

    if test is not None and not Path(test).expanduser().exists():
        problems.append(f"--test {Path(test).expanduser()}: no such file or folder; check the path")
    if task_obj is not None and fields_ok:  # the task reads and splits the data as each adapt will
        recipe = Recipe(data=str(data), test=None if test is None else str(test), seed=seed, precision=precision,
                        val_fraction=val_fraction, test_fraction=test_fraction, text_col=text_col, label_col=label_col,
                        fmt=fmt, task=task_obj.name, task_options=dict(task_options or {}))
        try:
            td = task_obj.read(recipe)
        except BadInput as e:
            problems.append(str(e))
        else:
            for spec in specs:
                if spec.family != "hf-auto":
                    try:
                        check_modality(spec, td.modality, td.train_record["source"])
                        task_obj.check_backbone(spec, family_class(spec))
                    except BadInput as e:
                        problems.append(f"--backbones: {e}")

    if problems:
        raise BadInput("; ".join(" ".join(p.split()).rstrip(".") for p in problems))
    return _Plan(methods=method_list, backbones=backbone_list, options=options, out_dir=out_dir, budget_s=budget_s)


def _warm_up(backbones: list[str]) -> None:
    """Pay, before the clock starts, the once-per-process costs that would otherwise all land on
    whichever run comes first: importing the model architecture's code (seconds for transformers
    models) and hashing the weight files (cached afterwards). Loads no weights.

    Best effort: any failure is left for ``adapt`` to report properly, with its one-line message.
    """
    from .backbones import open_backbone

    for name in backbones:
        try:
            bb, _ = open_backbone(name)
            if bb.spec.family.startswith("hf"):
                from transformers import AutoConfig
                from transformers.models.auto.modeling_auto import MODEL_MAPPING

                MODEL_MAPPING[type(AutoConfig.from_pretrained(bb.path))]  # imports the architecture's module
            elif bb.spec.family == "efficientnet-lite":
                import efficientnet_lite_pytorch  # noqa: F401
        except Exception:  # noqa: BLE001 - a warm-up must never be the thing that fails
            continue


def _names(values: Sequence[str] | str, option: str, problems: list[str], example: str) -> list[str]:
    """A clean list of names from a list or a comma-separated string; empties and repeats are problems."""
    items = values.split(",") if isinstance(values, str) else list(values or [])
    names = [str(v).strip() for v in items if str(v).strip()]
    if not names:
        problems.append(f"{option} is empty: name at least one ({example})")
        return []
    seen: set[str] = set()
    for n in names:
        if n in seen:
            problems.append(f"{option} lists {n!r} twice; give each once")
        seen.add(n)
    return list(dict.fromkeys(names))


def _failed(error: HeadstartError, label: str, runs: list[Any], labels: list[str]) -> HeadstartError:
    """The error of a failed run, renamed to say which run failed and what was kept."""
    message = " ".join(str(error).split()).rstrip(".") + ". " + _kept(runs, labels)
    try:
        return type(error)(f"compare: {label} failed: {message}")
    except TypeError:  # an error class with another constructor
        return HeadstartError(f"compare: {label} failed: {message}")


def _kept(runs: list[Any], labels: list[str]) -> str:
    if not runs:
        return "No run had finished; no comparison was written"
    kept = ", ".join(f"{r.id} ({lab})" for r, lab in zip(runs, labels, strict=True))
    return f"The {len(runs)} run(s) finished before it stay in the store: {kept}; no comparison was written"


def _check_same_split(runs: list[Any], labels: list[str]) -> None:
    """Every run must have seen the same data, split sizes and test examples; else the table lies."""

    def key(run: Any) -> dict[str, Any]:
        d = run.manifest["data"]
        return {"split": d["split"], "train fingerprint": d["train"]["fingerprint"], "test fingerprint": d["test"]["fingerprint"]}

    ref = key(runs[0])
    for run, label in zip(runs[1:], labels[1:], strict=True):
        got = key(run)
        if got != ref:
            what = next(k for k in ref if ref[k] != got[k])
            kept = ", ".join(r.id for r in runs)
            raise SplitMismatch(
                f"compare: {label} (run {run.id}) saw a different {what} than {labels[0]} (run {runs[0].id}): "
                f"{_short(got[what])} vs {_short(ref[what])}; was the data edited while comparing? Re-run compare. "
                f"The runs stay in the store ({kept}); no comparison was written"
            )


def _short(value: Any) -> str:
    return value[:12] + "..." if isinstance(value, str) and len(value) > 12 else json.dumps(value)


class _GpuPeak:
    """Peak CUDA memory allocated by torch during a run (None without CUDA)."""

    def __init__(self) -> None:
        torch = sys.modules.get("torch")
        self.on = bool(torch is not None and torch.cuda.is_available())
        if self.on:
            torch.cuda.reset_peak_memory_stats()

    def read(self) -> float | None:
        if not self.on:
            return None
        import torch

        return torch.cuda.max_memory_allocated() / (1024.0 * 1024.0)


def _row(run: Any, method: str, backbone: str, wall_s: float, peak_mb: float, peak_how: str, peak_gpu_mb: float | None, seed: int) -> dict:
    """One table row from a finished run: the task's two compared metrics with intervals over the
    test examples (queries), parameter counts and costs."""
    from .evaluate.bootstrap import bootstrap_ci

    m = run.manifest
    summary = m["metrics"]["test"]["summary"]
    fit = m["method"].get("fit") or {}
    trainable = _int_or_none(fit.get("trainable_params"))
    total = _int_or_none(fit.get("total_params"))
    frozen = _int_or_none(fit.get("frozen_params"))
    if total is None and trainable is not None and frozen is None:
        frozen = _backbone_params(m["backbone"]["spec"])  # e.g. a linear probe served from the feature cache
    if total is None and trainable is not None and frozen is not None:
        total = trainable + frozen
    pct = 100.0 * trainable / total if trainable is not None and total else None

    task = run.task
    values = task.run_values(run.path, m)
    metrics: dict[str, Any] = {}
    for name in task.compared:
        low = high = None
        if values is not None:
            y_true, y_pred, statistic = values[name]
            _, low, high = bootstrap_ci(y_true, y_pred, statistic, n_resamples=N_RESAMPLES, level=LEVEL, seed=seed)
        metrics.update({name: float(summary[name]), f"{name}_low": low, f"{name}_high": high})
    return {
        "method": method,
        "backbone": backbone,
        "backbone_label": _backbone_label(backbone),
        "run_id": run.id,
        "run_path": str(run.path),
        **metrics,
        "n_test": int(summary.get("n", summary.get("queries", m["data"]["test"]["examples"]))),
        "trainable_params": trainable,
        "total_params": total,
        "trainable_pct": pct,
        "wall_s": round(wall_s, 3),
        "peak_rss_mb": round(peak_mb, 1),
        "peak_rss_how": peak_how,
        "peak_gpu_mb": None if peak_gpu_mb is None else round(peak_gpu_mb, 1),
        "on_frontier": False,
        "stopped_by": fit.get("stopped_by"),
        "steps": _int_or_none(fit.get("steps")),
        "planned_steps": _planned_steps(m),
    }


def _planned_steps(manifest: dict[str, Any]) -> int | None:
    """How many optimizer steps the run's recipe asked for; None for methods that take no steps.

    The trainer's count (``headstart.train.trainer.Trainer.fit``): ceil(ceil(train / batch_size)
    x epochs), at least 1, over the training split; contrastive tuning asks for ``steps``.
    """
    config = manifest["method"].get("config") or {}
    epochs, batch = config.get("epochs"), _int_or_none(config.get("batch_size"))
    train = _int_or_none(manifest["data"]["split"].get("train"))
    if isinstance(epochs, (int, float)) and batch and train:
        return max(1, math.ceil(math.ceil(train / batch) * epochs))
    return _int_or_none(config.get("steps"))


def _backbone_params(spec_dict: dict[str, Any]) -> int | None:
    """Parameters of a backbone without loading it: the catalog's count, else the sum of the tensor
    shapes in its safetensors files (what the loaded module counts). None when neither is known.

    Why: a method that never loaded the backbone (a linear probe whose features were cached)
    cannot count its parameters, yet the table's trainable % needs the total.
    """
    from .catalog import BackboneSpec, locate

    try:
        spec = BackboneSpec.from_dict(spec_dict)
        if spec.params:
            return int(spec.params)
        if spec.source_kind != "local":  # never download just to count
            return None
        path = locate(spec)
        files = [path] if path.is_file() else sorted(path.glob("*.safetensors"))
        files = [f for f in files if f.suffix == ".safetensors"]
        if not files:
            return None
        from safetensors import safe_open

        total = 0
        for f in files:
            with safe_open(str(f), framework="pt") as st:
                total += sum(math.prod(st.get_slice(k).get_shape()) for k in st.keys())  # noqa: SIM118
        return total
    except Exception:  # noqa: BLE001 - a best-effort count; "n/a" in the table is the honest fallback
        return None


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def _mark_frontier(rows: list[dict[str, Any]], metric: str = "accuracy", *, higher_is_better: bool = True) -> None:
    sign = 1.0 if higher_is_better else -1.0
    for i in pareto_frontier([(r["wall_s"], sign * r[metric]) for r in rows]):
        rows[i]["on_frontier"] = True


# -- the comparison folder ---------------------------------------------------------------------


def _write_folder(comparison: Comparison, out_dir: Path) -> Path:
    """Write comparison.json, table.md and frontier.png under a temporary name, then rename."""
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / comparison.id
    if final.exists():
        raise BadInput(f"{final} already exists; choose another --out or remove it")
    tmp = out_dir / f".tmp-{comparison.id}-{os.getpid()}"
    try:
        tmp.mkdir()
        task = get_task(comparison.data.get("task", "classification"))
        primary = comparison.metrics[0][0]
        comparison.plot = "frontier.png" if plot_frontier(comparison.rows, tmp / "frontier.png", title=comparison.id,
                                                              metric=tuple(comparison.metrics[0]),
                                                              higher_is_better=task.metric(primary).higher_is_better) else None
        comparison.path = final
        (tmp / "table.md").write_text(comparison.to_markdown(), encoding="utf-8")
        (tmp / "comparison.json").write_text(json.dumps(comparison.to_dict(), indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


# -- formatting --------------------------------------------------------------------------------


def _backbone_label(name: str) -> str:
    """Short display name: catalog and hf: names as given, folders by their last component."""
    if name.startswith("hf:") or "/" not in name and os.sep not in name:
        return name
    return Path(name).name or name


def _jsonable(options: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}


# -- method options from text -------------------------------------------------------------


def parse_set_options(items: Sequence[str], problems: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """``["lora.rank=8", "linear-probe.C=0.5"]`` -> ``{"lora": {"rank": 8}, "linear-probe": {"C": 0.5}}``.

    Values are read as JSON when they parse (numbers, true/false, lists -> tuples), else kept as
    text, as ``adapt --set`` does. A malformed item raises BadInput, or is appended to
    ``problems`` when a list is given (so the CLI can report every problem at once).
    """
    out: dict[str, dict[str, Any]] = {}
    found: list[str] = []
    for item in items:
        target, sep, value = item.partition("=")
        method, dot, key = target.partition(".")
        method, key = method.strip(), key.strip()
        if not sep or not dot or not method or not key:
            found.append(f"--set {item!r}: expected METHOD.KEY=VALUE, e.g. --set linear-probe.C=0.5")
            continue
        try:
            parsed: Any = json.loads(value)
        except ValueError:
            parsed = value
        out.setdefault(method, {})[key] = tuple(parsed) if isinstance(parsed, list) else parsed
    if found and problems is None:
        raise BadInput("; ".join(found))
    if problems is not None:
        problems.extend(found)
    return out
