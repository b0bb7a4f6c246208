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
from ..recipe import Recipe


@dataclass
class EvalSet:
    name: str
    data: Dataset
    columns: dict[str, list] = field(default_factory=dict)
    """Raw columns of the source table (empty for image folders), row-aligned with ``data``."""


def load_eval_set(name: str, path: str | Path, *, text_col: str | None = None, label_col: str | None = None,
                  hint: dict | None = None, where: str = "", header: bool | None = None) -> EvalSet:
    """A labelled table file or image folder. ``hint`` holds the training column names, used when
    the file has them and no column was named."""
    from ..data.readers import read_with_hint

    p = Path(path).expanduser()
    if p.is_dir() or not p.exists():
        data = load_dataset(p, text_col=text_col, label_col=label_col, header=header)
        data.require_labels()
        return EvalSet(name, data)
    data, columns = read_with_hint(p, hint or {}, labels_required=True, text_col=text_col, label_col=label_col, header=header)
    if data.labels is None:
        raise BadInput(f"{where or p}: no label column; name it (label_col) so the data can be scored")
    return EvalSet(name, data, {k: list(v) for k, v in columns.items()})


def run_test_set(run) -> EvalSet:
    """The examples the run was tested on: its --test file, or its held-out split re-made from
    the recorded data, fractions and seed (checked against the recorded fingerprint)."""
    m = run.manifest
    recipe = recipe_of(m)
    hint = m["data"]["train"].get("columns", {})
    if recipe.test:
        es = load_eval_set("test", recipe.test, text_col=recipe.text_col, label_col=recipe.label_col, hint=hint,
                           header=recipe.header)
    else:
        full = _training_data(run)
        split = stratified_split(full, val_fraction=recipe.val_fraction, test_fraction=recipe.test_fraction, seed=recipe.seed_of_split)
        columns = {}
        src = Path(recipe.data)
        if src.is_file():
            from ..data.readers import read_table

            raw, _ = read_table(src, fmt=recipe.fmt, header=recipe.header)
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
    full = load_dataset(recipe.data, text_col=recipe.text_col, label_col=recipe.label_col, fmt=recipe.fmt,
                        header=recipe.header)
    if full.fingerprint != run.manifest["data"]["train"]["fingerprint"]:
        raise BadInput(f"run {run.id}: its training data {recipe.data} changed since the run was made (fingerprint differs); "
                       "the recipe cannot be re-run on the same data")
    return full


def recipe_of(manifest: dict) -> Recipe:
    """The recorded recipe (runs from headstart >= 0.3), or one rebuilt from an older manifest."""
    if manifest.get("recipe"):
        return Recipe.from_dict(manifest["recipe"])
    data, split = manifest["data"], manifest["data"]["split"]
    cols = data["train"].get("columns", {})
    test_src = data["test"]["source"]
    return Recipe(
        data=data["train"]["source"], test=None if test_src == "held out from train" else test_src,
        backbone=manifest["backbone"]["name"], method=manifest["method"]["name"], method_options={},
        seed=manifest["seed"], text_col=cols.get("text"), label_col=cols.get("label"), fmt=None,
        val_fraction=split["val_fraction"], test_fraction=split["test_fraction"],
        precision=manifest["precision"]["requested"], budget=manifest.get("budget_s"),
    )


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


def suite_sets(suite_obj, run) -> list[EvalSet]:
    """Load every dataset of a validated suite, with the run's column names as hints."""
    hint = run.manifest["data"]["train"].get("columns", {})
    sets = []
    for d in suite_obj.datasets:
        where = f"suite {suite_obj.name}, dataset {d.name}"
        if d.hf_name is not None:
            sets.append(_hub_eval_set(d, hint, where))
        else:
            sets.append(load_eval_set(d.name, d.path, text_col=d.text_col, label_col=d.label_col, hint=hint, where=where))
    return sets


def _hub_eval_set(d, hint: dict, where: str) -> EvalSet:
    """A Hugging Face dataset by name (needs the `datasets` package and a network the first time),
    its class-label integers mapped to their names."""
    try:
        import datasets as hf_datasets
    except ImportError:
        raise BadInput(f"{where}: hf:{d.hf_name} needs the `datasets` package: pip install datasets") from None
    try:
        table = hf_datasets.load_dataset(d.hf_name, split=d.split or "test")
    except Exception as e:  # noqa: BLE001 - any hub failure becomes one actionable line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise BadInput(f"{where}: could not load hf:{d.hf_name} ({first[:160]}); check the name, split and network, "
                       "or download it and point path at the file") from None
    columns = {name: list(table[name]) for name in table.column_names}
    for name, feature in table.features.items():
        if getattr(feature, "names", None):
            columns[name] = [feature.names[i] if isinstance(i, int) and i >= 0 else None for i in columns[name]]
    columns = {k: [v if v is None or isinstance(v, str) else str(v) for v in vals] for k, vals in columns.items()}
    from ..data.readers import select_columns

    text_col = d.text_col or (hint.get("text") if hint.get("text") in columns else None)
    label_col = d.label_col or (hint.get("label") if hint.get("label") in columns else None)
    origin = [f"hf:{d.hf_name}[{d.split or 'test'}] row {i + 1}" for i in range(len(table))]
    data = select_columns(Path(f"hf:{d.hf_name}"), columns, origin, text_col=text_col, label_col=label_col, labels_required=True)
    return EvalSet(d.name, data, columns)


def evaluate_suite(run, suite: str | Path, *, baseline=None, n_resamples: int = 1000, seed: int = 0, record: bool = True) -> dict:
    """Metrics with 95% bootstrap intervals per dataset and slice, and every gate's outcome.

    Per-label slices report recall and precision of their label (see
    :func:`~.suite.evaluate_slices`); column slices the suite's metrics.

    ``baseline`` (a Run) is needed by relative gates ("macro_f1 drop <= 1.0 pt"); it is evaluated
    on the same examples. The result is recorded in the store (suite name and hash, data
    fingerprints, time, gate outcome)."""
    import hashlib
    import time

    from .suite import ALL, evaluate_slices, load_suite, slice_masks, slice_metric

    suite_obj = load_suite(suite)
    relative = [g for g in suite_obj.gates if g.relative]
    if relative and baseline is None:
        raise BadInput(f"suite {suite_obj.name}: {relative[0].where} {relative[0].text!r} compares with a baseline run; "
                       "give --baseline RUN")
    if suite_obj.task != run.task.name:
        raise BadInput(f"suite {suite_obj.name} checks {suite_obj.task} runs, but run {run.id} is a {run.task.name} run; "
                       f"use a suite with 'task: {run.task.name}'")
    if baseline is not None and (baseline.classes != run.classes or baseline.task.name != run.task.name):
        raise BadInput(f"--baseline {baseline.id} solves another task than run {run.id} (other task or classes); a baseline "
                       "must solve the same task")
    if not run.task.predicts:
        datasets, gates = _query_suite(run, suite_obj, baseline, n_resamples, seed)
        sets = []
    else:
        sets = suite_sets(suite_obj, run)
        datasets, gates = {}, []
    for es in sets:
        y = class_indices(es.data.labels, run.classes, str(es.data.source))
        masks = {}
        for s in suite_obj.slices:
            masks.update(slice_masks(s, list(es.data.labels), es.columns))
        scored = {"run": predict_indices(run, es)[0]}
        if baseline is not None:
            scored["baseline"] = predict_indices(baseline, es)[0]
        per = {who: evaluate_slices(y, p, run.classes, masks, suite_obj.metrics, n_resamples=n_resamples, seed=seed)
               for who, p in scored.items()}
        datasets[es.name] = {"source": str(es.data.source), "fingerprint": es.data.fingerprint, "n": len(es.data),
                             "slices": per["run"], **({"baseline_slices": per["baseline"]} if baseline is not None else {})}
        for g in suite_obj.gates:
            if not g.applies_to(es.name):
                continue
            if g.slice not in per["run"]:
                gates.append({"gate": g.text or g.canonical(), "dataset": es.name, "slice": g.slice, "passed": False,
                              "detail": f"slice {g.slice!r} has no examples in {es.name}"})
                continue
            metric = slice_metric(g.metric, g.slice)  # accuracy on a label slice is its recall
            value = per["run"][g.slice][metric]["value"]
            base_value = per["baseline"][g.slice][metric]["value"] if baseline is not None else None
            passed, detail = g.check(value, base_value if g.relative else None)
            gates.append({"gate": g.text or g.canonical(), "dataset": es.name, "slice": g.slice, "passed": passed,
                          "detail": detail, "value": value, "baseline": base_value})
    result = {
        "run": run.id, "baseline": None if baseline is None else baseline.id,
        "suite": {"name": suite_obj.name, "sha256": suite_obj.sha256, "path": str(suite_obj.path)},
        "datasets": datasets, "gates": gates, "passed": all(g["passed"] for g in gates),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if record:
        record_suite_result(run, result)
    return result


def _query_suite(run, suite_obj, baseline, n_resamples: int, seed: int) -> tuple[dict, list[dict]]:
    """A suite of a task without labels (retrieval: collections searched exactly; speech
    recognition: transcribed tables): each dataset scored by the task
    (:meth:`~headstart.tasks.Task.suite_cells`, every metric over the whole dataset with a
    bootstrap interval) for the run and the baseline; gates as for classification."""
    from .suite import ALL

    datasets, gates = {}, []
    for d in suite_obj.datasets:
        per, source, fingerprint = {}, d.source, ""
        for who, r in (("run", run), ("baseline", baseline)):
            if r is None:
                continue
            cells, found, fp = r.task.suite_cells(r, d.path, suite_obj.metrics, n_resamples=n_resamples, seed=seed)
            per[who] = {ALL: cells}
            if who == "run":
                source, fingerprint = found or d.source, fp
        datasets[d.name] = {"source": str(source), "fingerprint": fingerprint, "n": per["run"][ALL][suite_obj.metrics[0]]["n"],
                            "slices": per["run"], **({"baseline_slices": per["baseline"]} if baseline is not None else {})}
        for g in suite_obj.gates:
            if not g.applies_to(d.name):
                continue
            value = per["run"][ALL][g.metric]["value"]
            base_value = per["baseline"][ALL][g.metric]["value"] if baseline is not None else None
            passed, detail = g.check(value, base_value if g.relative else None)
            gates.append({"gate": g.text or g.canonical(), "dataset": d.name, "slice": ALL, "passed": passed,
                          "detail": detail, "value": value, "baseline": base_value})
    return datasets, gates


def record_suite_result(run, result: dict) -> None:
    """Store a suite result in the run's eval history (when the run is in the store). Callers
    that write other outputs (JUnit XML) evaluate with ``record=False``, write, then record, so
    a failed write leaves no eval row behind."""
    import hashlib

    from .suite import ALL

    if run.store.find(run.id) is None:
        return
    datasets = result["datasets"]
    first = next(iter(datasets.values()))
    summary = {m: v["value"] for m, v in first["slices"][ALL].items()}
    summary["n"] = first["n"]
    fingerprint = hashlib.sha256("".join(d["fingerprint"] for d in datasets.values()).encode()).hexdigest()
    suite = result["suite"]
    run.store.add_eval(run.id, suite["path"], fingerprint, summary, suite=suite["name"], suite_sha256=suite["sha256"],
                       passed=result["passed"] if result["gates"] else None, result=result)
