"""Drift: re-adapt a run's recipe on a new base and test, against noise, whether it got worse.

``drift(run, base)``:

1. checks, before any compute, that the new base can run the recipe (a method that trains the
   body cannot run on a frozen-features-only ONNX build), that the training data is the one the
   run recorded (content fingerprint), and loads the evaluation data (a suite, or the run's own
   test set);
2. re-runs the recorded recipe (data, method options, seed, split fractions, precision) on the
   new base; the new run records which run it was re-adapted from;
3. optionally re-adapts the *old* base with ``seeds`` other seeds: the largest change those
   re-runs show on a metric is its noise floor (a difference must exceed it to count);
4. compares old and new on exactly the same examples, per dataset, slice and metric: accuracy
   with the exact McNemar test, other metrics with the paired bootstrap; p-values are
   Holm-adjusted within each family (the primary whole-set checks together; each dataset x
   metric x slice kind) so that checking 77 labels does not raise 77 chances of a false alarm;
5. writes a report (Markdown + HTML + plot) and records the verdict in the store.

The overall verdict comes from the primary checks (every dataset's whole-set accuracy and
macro-F1, Holm-adjusted together): "regression" when any is a significant regression, else
"improvement" when any is a significant improvement, else "no significant change". Slice checks
are secondary: each gets its own verdict and is listed, but they decide the overall verdict only
with ``strict_slices``. Why: re-adapting the *same* base with another seed can move one class's
decision boundary (another regularisation strength chosen on validation), which shows as a
significant per-label recall change traded against the other classes, while nothing changed
overall (benchmarks/README.md, TweetEval emotion: 4 of 20 re-seeds).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._util import home, status
from ..backbones import family_trains
from ..catalog import resolve
from ..errors import BadInput
from .bootstrap import MacroF1, accuracy
from .metrics import classification_metrics
from .harness import EvalSet, class_indices, predict_indices, recipe_of, run_test_set, suite_sets
from .stats import IMPROVEMENT, NO_CHANGE, REGRESSION, PairedResult, accuracy_test, decide, paired_bootstrap

DEFAULT_ALPHA = 0.01
"""Significance level after Holm adjustment. 0.01 rather than 0.05: a drift check runs on every
release, and a false alarm that blocks a deploy costs more than a small, real change found a
release later."""

METRICS = ("accuracy", "macro_f1")


@dataclass
class DriftResult:
    result: dict
    report: dict[str, Path]
    old_run: object
    new_run: object

    @property
    def verdict(self) -> str:
        return self.result["verdict"]


def check_recipe_runs_on(run, base: str) -> None:
    """Refuse a new base that cannot run the run's recipe (raises BadInput; loads nothing heavy)."""
    from ..methods import get_method

    spec = resolve(base)
    method = get_method(run.manifest["method"]["name"])
    if spec.family != "hf-auto" and spec.modality != run.manifest["modality"]:
        raise BadInput(f"--base {base}: takes {spec.modality} but run {run.id} was adapted on {run.manifest['modality']}")
    if method.trains_backbone and not family_trains(spec):
        raise BadInput(
            f"--base {base} gives frozen features only, but run {run.id} used {method.name!r}, which trains the backbone's "
            f"weights: the recipe cannot run on that base. Drift a linear-probe run instead "
            f"(headstart adapt DATA --method linear-probe --backbone {run.manifest['backbone']['name']}, then drift it)"
        )


def drift(run: str | Path, base: str, *, suite: str | Path | None = None, seeds: int = 0, alpha: float = DEFAULT_ALPHA,
          n_resamples: int = 4000, out: str | Path | None = None, store: str | Path | None = None,
          report: str | Path | None = None, flips: int = 20, seed: int | None = None,
          strict_slices: bool = False) -> DriftResult:
    """Re-adapt ``run``'s recipe on ``base`` and decide whether the new base is worse, better or the same.

    ``seed`` re-adapts with another seed than the recorded one (same base + new seed measures
    what re-running alone changes)."""
    from ..api import adapt_recipe, load

    if not isinstance(seeds, int) or seeds < 0:
        raise BadInput(f"--seeds must be an integer >= 0 (got {seeds!r})")
    if not 0 < alpha < 1:
        raise BadInput(f"--alpha must be in (0, 1) (got {alpha!r})")
    old = load(run, store=store)
    check_recipe_runs_on(old, base)
    recipe = recipe_of(old.manifest)
    per_query = not old.task.predicts  # e.g. retrieval: per-query metric values, not labels
    if per_query and suite is not None:
        from .suite import load_suite

        suite_obj, sets = load_suite(suite), []
        if suite_obj.task != old.task.name:
            raise BadInput(f"--suite {suite}: the suite checks {suite_obj.task} runs, but run {old.id} is a {old.task.name} "
                           f"run; give a suite with task: {old.task.name}")
    else:
        suite_obj, sets = (None, []) if per_query else _eval_sets(old, suite)
    old_preds = {es.name: predict_indices(old, es) for es in sets}

    # Per-query tasks compare the runs' recorded per-query values, so every re-run keeps the
    # recorded split (the same test queries) and only the training seed changes.
    keep_split = {"split_seed": recipe.seed_of_split} if per_query else {}

    def readapt(backbone: str, seed: int, reason: str):
        return adapt_recipe(recipe.replace(backbone=backbone, seed=seed, **keep_split), out=out, store=store, t_start=time.perf_counter(),
                            run_id=None, on_step=None, lineage={"parent": old.id, "reason": reason, "base": backbone})

    status(f"re-adapting run {old.id} ({recipe.method}) on the new base {base} ...")
    if seed is not None:
        recipe.replace(seed=seed).validate()  # a bad --seed is refused before anything re-adapts
    new = readapt(base, recipe.seed if seed is None else seed, "drift")
    # The spread of re-adapting with other seeds is measured on the old base; when that base is
    # gone (its weights changed in place, the case `watch` finds), on the new one.
    old_base_here = all(src == "live" for _, src in old_preds.values())
    noise_base = old.manifest["backbone"]["name"] if old_base_here else base
    noise_runs = []
    for k in range(1, seeds + 1):
        status(f"noise floor: re-adapting {noise_base} with seed {recipe.seed + k} ({k}/{seeds}) ...")
        noise_runs.append(readapt(noise_base, recipe.seed + k, "noise-floor"))

    checks, per_class, flipped, sources = [], [], [], {}
    noise_values: dict[str, list[float]] = {}
    if per_query and suite_obj is not None:
        checks = _suite_query_checks(old, new, noise_runs, suite_obj, n_resamples, noise_values)
        sources.update({d.name: "live" for d in suite_obj.datasets})
    elif per_query:
        checks, flipped = _query_checks(old, new, noise_runs, n_resamples, noise_values, flips)
        sources["test"] = "recorded"
    for es in sets:
        y = class_indices(es.data.labels, old.classes, str(es.data.source))
        p_old, sources[es.name] = old_preds[es.name]
        p_new = new.predict(es.data).indices
        p_seeds = [r.predict(es.data).indices for r in noise_runs]
        slices = _slices(es, suite_obj, old.classes)
        p_ref = p_old if old_base_here else p_new
        checks += _checks(es.name, y, p_old, p_new, p_ref, p_seeds, slices, old.classes, n_resamples, noise_values)
        per_class += _per_class(es.name, y, p_old, p_new, old.classes)
        flipped += _flips(es, y, p_old, p_new, old.classes, flips)
    _holm(checks)
    directions = {m.name: m.higher_is_better for m in old.task.metrics}
    for c in checks:  # a rise is an improvement where higher is better, a regression for WER
        c["verdict"] = decide(_as_result(c), alpha=alpha, noise_floor=c["noise_floor"],
                              higher_is_better=directions.get(c["metric"], True))
    deciding = checks if strict_slices else [c for c in checks if c["slice"] == "all"]
    verdict = REGRESSION if any(c["verdict"] == REGRESSION for c in deciding) else \
        IMPROVEMENT if any(c["verdict"] == IMPROVEMENT for c in deciding) else NO_CHANGE
    slice_flags = {v: sum(c["slice"] != "all" and c["verdict"] == v for c in checks) for v in (REGRESSION, IMPROVEMENT)}
    result = {
        "verdict": verdict,
        "old_run": old.id, "new_run": new.id,
        "old_base": {"name": old.manifest["backbone"]["name"], "sha256": old.manifest["backbone"]["sha256"]},
        "new_base": {"name": new.manifest["backbone"]["name"], "sha256": new.manifest["backbone"]["sha256"]},
        "method": recipe.method,
        "task": old.task.name,
        "config": {"old": old.manifest["method"]["config"], "new": new.manifest["method"]["config"]},
        "suite": {"name": suite_obj.name, "sha256": suite_obj.sha256} if suite_obj else {"name": "the run's test set", "sha256": None},
        "old_predictions": sources,
        "alpha": alpha,
        "strict_slices": strict_slices,
        "slice_regressions": slice_flags[REGRESSION], "slice_improvements": slice_flags[IMPROVEMENT],
        "seeds": None if not seeds else {
            "k": seeds, "base": noise_base, "runs": [r.id for r in noise_runs],
            "values": noise_values,
            "noise_floor": {k: next(c["noise_floor"] for c in checks if f"{c['dataset']}/{c['metric']}" == k and c["slice"] == "all")
                            for k in noise_values},
        },
        "checks": checks, "per_class": per_class, "flips": flipped,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    drift_id = f"{time.strftime('%Y%m%d-%H%M%S')}-drift-{secrets.token_hex(3)}"
    result = {"id": drift_id, **result}
    from ..report import write_drift_report

    folder = Path(report).expanduser() if report else home() / "drift" / drift_id
    paths = write_drift_report(result, folder)
    new.store.add_drift(drift_id, result["created_at"], old.id, new.id, verdict, folder, result)
    return DriftResult(result, paths, old, new)


def _eval_sets(run, suite) -> tuple[object | None, list[EvalSet]]:
    if suite is None:
        return None, [run_test_set(run)]
    from .suite import load_suite

    suite_obj = load_suite(suite)
    return suite_obj, suite_sets(suite_obj, run)


def _slices(es: EvalSet, suite_obj, classes: list[str]) -> dict[str, tuple[str, np.ndarray]]:
    """{slice key: (family, mask)}; 'all' always, per label (default without a suite), and the
    suite's column slices."""
    out = {"all": ("all", np.ones(len(es.data), dtype=bool))}
    labels = np.array(es.data.labels)
    wanted = getattr(suite_obj, "slices", None)
    if suite_obj is None or any(s.kind == "label" for s in wanted):
        for c in classes:
            mask = labels == c
            if mask.any():
                out[f"label={c}"] = ("label", mask)
    if suite_obj is not None:
        from .suite import slice_masks

        for s in wanted:
            if s.kind == "label":
                continue
            for key, mask in slice_masks(s, list(es.data.labels), es.columns).items():
                out[key] = (f"column:{s.column}", np.asarray(mask, dtype=bool))
    return out


def _checks(dataset, y, p_old, p_new, p_ref, p_seeds, slices, classes, n_resamples, noise_values) -> list[dict]:
    out = []
    for key, (family, mask) in slices.items():
        n = int(mask.sum())
        # Macro-F1 inside one label's slice is degenerate (one true class): accuracy there is the
        # class's recall, the number that matters.
        metrics = ("accuracy",) if family == "label" else METRICS
        for metric in metrics:
            if metric == "accuracy":
                r = accuracy_test(y[mask], p_old[mask], p_new[mask], n_resamples=n_resamples)
                test = "exact McNemar"
            else:
                r = paired_bootstrap(y[mask], p_old[mask], p_new[mask], MacroF1(len(classes)), n_resamples=n_resamples)
                test = "paired bootstrap"
            floor, values = _noise_floor(metric, y[mask], p_ref[mask], [p[mask] for p in p_seeds], len(classes))
            if values and key == "all":
                noise_values[f"{dataset}/{metric}"] = values
            holm_family = "primary" if key == "all" else f"{dataset}|{metric}|{family}"
            out.append({"dataset": dataset, "slice": key, "family": holm_family, "metric": metric, "n": n,
                        "old": r.old, "new": r.new, "delta": r.delta, "ci": list(r.ci), "p_raw": r.p, "test": test,
                        "noise_floor": floor})
    return out


def _query_checks(old, new, noise_runs, n_resamples, noise_values, limit) -> tuple[list[dict], list[dict]]:
    """For tasks without labels (retrieval, similarity): the paired bootstrap over the same test
    examples (queries, pairs) of each compared metric, from what the two runs recorded in
    ``predictions.csv`` (:meth:`Task.run_values`); the re-seeded runs give the noise floor. For
    retrieval also the queries whose primary metric moved most each way (as "flips")."""
    task = old.task
    metrics = task.drifted or task.compared
    runs = [old, new, *noise_runs]
    values = [task.run_values(r.path, r.manifest) for r in runs]
    for r, v in zip(runs, values, strict=True):
        if v is None:
            raise BadInput(f"drift: run {r.id}'s predictions.csv lacks the per-example values drift compares; re-adapt it")
        same = r.manifest["data"]["test"]["fingerprint"] == old.manifest["data"]["test"]["fingerprint"]
        if not same or any(not np.array_equal(v[m][0], values[0][m][0]) for m in metrics):
            raise BadInput(f"drift: run {r.id} was tested on other examples than run {old.id} (the split or test file "
                           "changed); re-adapt both on the same data")
    checks = [_paired_check("test", metric, values, task.unit, n_resamples, noise_values) for metric in metrics]
    flipped: list[dict] = []
    import csv

    with open(old.path / "predictions.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    named = [task.moved_example(r) for r in rows]  # the examples whose primary metric moved most
    if rows and named[0] is not None:
        primary = task.compared[0]
        before, after = values[0][primary][1], values[1][primary][1]
        delta = after - before
        for direction, order in (("broke", np.argsort(delta, kind="stable")), ("fixed", np.argsort(-delta, kind="stable"))):
            for i in order[:limit]:
                if (delta[i] < 0) if direction == "broke" else (delta[i] > 0):
                    flipped.append({"dataset": "test", "input": named[i][0], "label": f"{named[i][1]} ({primary})",
                                    "old": f"{before[i]:.3f}", "new": f"{after[i]:.3f}", "direction": direction})
    return checks, flipped


def _suite_query_checks(old, new, noise_runs, suite_obj, n_resamples, noise_values) -> list[dict]:
    """For tasks without labels, on every dataset of a suite: the paired bootstrap over the same
    examples (queries) of each of the suite's metrics, each run scoring the data itself
    (:meth:`Task.example_values`); the re-seeded runs give the noise floor."""
    task = old.task
    checks = []
    for ds in suite_obj.datasets:
        if ds.path is None:
            raise BadInput(f"drift --suite: dataset {ds.name!r} is a hub dataset; {task.name} suites for drift take local "
                           "files or folders")
        values = [task.example_values(r, ds.path, tuple(suite_obj.metrics))[0] for r in (old, new, *noise_runs)]
        checks += [_paired_check(ds.name, metric, values, task.unit, n_resamples, noise_values) for metric in suite_obj.metrics]
    return checks


def _paired_check(dataset: str, metric: str, values: list[dict], unit: str, n_resamples: int, noise_values: dict) -> dict:
    """One whole-set check of ``metric`` from per-example ``values`` of [old, new, *re-seeded runs]
    (each ``{metric: (y, values, statistic)}``): the paired bootstrap of new against old, and the
    largest re-seeded change on the same examples as its noise floor (None without re-seeded runs)."""
    y, p_old, statistic = values[0][metric]
    p_new = values[1][metric][1]
    res = paired_bootstrap(y, p_old, p_new, statistic, n_resamples=n_resamples)
    floor = None
    if len(values) > 2:
        seeded = [float(statistic(y, v[metric][1])) for v in values[2:]]
        noise_values[f"{dataset}/{metric}"] = seeded
        floor = max(abs(s - float(statistic(y, p_old))) for s in seeded)
    return {"dataset": dataset, "slice": "all", "family": "primary", "metric": metric, "n": len(y), "old": res.old,
            "new": res.new, "delta": res.delta, "ci": list(res.ci), "p_raw": res.p, "test": f"paired bootstrap over {unit}",
            "noise_floor": floor}


def _metric(metric: str, y: np.ndarray, p: np.ndarray, k: int) -> float:
    return float(accuracy(y, p)) if metric == "accuracy" else float(MacroF1(k)(y, p))


def _noise_floor(metric, y, p_ref, p_seeds, k) -> tuple[float | None, list[float]]:
    """The largest |metric(re-seeded run) - metric(run with the recipe's seed)| on the same base."""
    if not p_seeds:
        return None, []
    base = _metric(metric, y, p_ref, k)
    values = [_metric(metric, y, p, k) for p in p_seeds]
    return max(abs(v - base) for v in values), values


def _holm(checks: list[dict]) -> None:
    """Holm's step-down adjustment (Holm 1979) within each family: p_(i) * (m - i + 1), made
    monotone; controls the family-wise error rate at alpha."""
    families: dict[str, list[dict]] = {}
    for c in checks:
        families.setdefault(c["family"], []).append(c)
    for members in families.values():
        ordered = sorted(members, key=lambda c: c["p_raw"])
        m, running = len(ordered), 0.0
        for i, c in enumerate(ordered):
            running = max(running, min(1.0, (m - i) * c["p_raw"]))
            c["p"] = running


def _as_result(c: dict) -> PairedResult:
    return PairedResult(old=c["old"], new=c["new"], delta=c["delta"], ci=tuple(c["ci"]), p=c["p"], n=c["n"])


def _per_class(dataset, y, p_old, p_new, classes) -> list[dict]:
    old, new = classification_metrics(y, p_old, classes)["per_class"], classification_metrics(y, p_new, classes)["per_class"]
    return [{"dataset": dataset, "class": c, "n": old[c]["support"], "old_f1": old[c]["f1"], "new_f1": new[c]["f1"],
             "delta": new[c]["f1"] - old[c]["f1"]} for c in classes if old[c]["support"]]


def _flips(es: EvalSet, y, p_old, p_new, classes, limit: int) -> list[dict]:
    out = []
    for direction, mask in (("broke", (p_old == y) & (p_new != y)), ("fixed", (p_old != y) & (p_new == y))):
        for i in np.flatnonzero(mask)[:limit]:
            out.append({"dataset": es.name, "input": str(es.data.inputs[i]), "label": classes[y[i]],
                        "old": classes[p_old[i]], "new": classes[p_new[i]], "direction": direction})
    return out
