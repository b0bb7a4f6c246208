"""Peak memory of the linear probe on tables of 100k, 1M (and 10M) rows: streamed vs in memory.

Synthetic Parquet tables (short texts of 4-8 words, 4 labels, each label favouring its own words)
are written into a temporary folder, then each configuration adapts one table with the linear
probe in a fresh subprocess (its own HEADSTART_HOME and feature cache, one torch thread), which
reports its own peak RSS (VmHWM in /proc/self/status: the kernel's high-water mark of that process,
everything from interpreter start to the saved run):

- ``streamed``: ``--task-set streaming=true`` (headstart.data.large): Arrow batches, features
  written to a .npy chunk by chunk, the head fitted over the file a block at a time;
- ``in memory`` (the peer: the path every table took before): the whole table as Python
  strings, the SQLite feature cache, the features as one tensor (``streaming=false``).

The backbone is the tiny random BERT of ``headstart.backbones.testing.tiny_text_model`` (2
layers, 32 dimensions): it makes 10M rows feasible on 2 CPU cores, so the benchmark measures the
data path's memory and time, not a real model's accuracy (the accuracy printed is of random
features). Both paths fit with the same fixed head options (C=1, max_iter=30), so they run the
same number of passes over the features.

    python benchmarks/large_table.py                       # 100k and 1M, both paths
    python benchmarks/large_table.py --rows 10000000 --peer-max 0   # 10M, streamed only

Estimate first: the encode rate of the tiny BERT is printed per run (rows / encode_s).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")


def write_table(path: Path, rows: int, seed: int = 0, batch: int = 200_000) -> None:
    """``rows`` short texts over the tiny BERT's vocabulary in 4 classes, written in batches."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from headstart.backbones.testing import VOCAB

    words = np.array([w for w in VOCAB if not w.startswith("[")], dtype=object)
    labels = np.array(["billing", "delivery", "login", "other"], dtype=object)
    rng = np.random.default_rng(seed)
    schema = pa.schema([("text", pa.string()), ("label", pa.string())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, batch):
            m = min(batch, rows - start)
            y = rng.integers(0, len(labels), m)
            length = rng.integers(4, 9, m)
            own = (y[:, None] * 10 + rng.integers(0, 10, (m, 8))) % len(words)  # each label's own words
            anywhere = rng.integers(0, len(words), (m, 8))
            ids = np.where(rng.random((m, 8)) < 0.5, own, anywhere)
            texts = [" ".join(words[ids[i, : length[i]]]) for i in range(m)]
            writer.write_table(pa.table({"text": texts, "label": labels[y]}, schema=schema))


def child(args) -> None:
    """One adaptation (run in its own process); prints a JSON line of what it measured."""
    import torch

    torch.set_num_threads(1)
    importlib.import_module("transformers")  # before the baseline: the run imports it anyway

    from headstart import api

    base = _status_kb("VmRSS")
    t0 = time.perf_counter()
    run = api.adapt(args.data, backbone=args.backbone, method="linear-probe", out=Path(args.home) / "runs",
                    method_options={"C": 1.0, "max_iter": 30}, task_options={"streaming": args.mode == "streamed"})
    wall = time.perf_counter() - t0
    fit = run.manifest["method"]["fit"]
    hwm = _status_kb("VmHWM")
    features = fit.get("streamed", {}).get("features")
    print(json.dumps({"wall_s": round(wall, 1), "encode_s": fit["encode_s"], "fit_s": fit["fit_s"],
                      "timings": run.manifest["timings"], "accuracy": run.metrics["test"]["summary"]["accuracy"],
                      "vmhwm_mb": round(hwm / 1024), "base_mb": round(base / 1024), "features_mb": round(Path(features).stat().st_size / 1e6) if features else None,
                      "predictions_mb": round((run.path / "predictions.csv").stat().st_size / 1e6)}))


def _status_kb(field: str) -> int:
    status = Path("/proc/self/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith(f"{field}:"))


def measure(data: Path, mode: str, backbone: Path, work: Path) -> dict:
    home = Path(tempfile.mkdtemp(prefix=f"{mode}-", dir=work))
    env = dict(os.environ, HEADSTART_HOME=str(home), HEADSTART_PROGRESS="0")
    env.pop("HEADSTART_CACHE", None)
    env.pop("HEADSTART_STORE", None)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--child", "--data", str(data), "--mode", mode, "--backbone",
                             str(backbone), "--home", str(home)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{mode} on {data.name} failed:\n{err.decode()[-2000:]}")
    result = json.loads(out.decode().strip().splitlines()[-1])
    result["process_s"] = round(wall, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--peer-max", type=int, default=1_000_000, help="run the in-memory peer up to this many rows")
    parser.add_argument("--keep", type=Path, default=None, help="folder for the tables (default: a temporary one, removed)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--backbone", help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    import shutil

    from headstart.backbones.testing import tiny_text_model

    work = Path(tempfile.mkdtemp(prefix="headstart-large-")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    try:
        backbone = tiny_text_model(work / "tiny-bert")
        print("| rows | Parquet file (MB) | path | peak RSS (MB) | above start (MB) | wall (s) | encode (s) | head fit (s) | "
              "features file (MB) | test accuracy |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for rows in args.rows:
            data = work / f"table-{rows}.parquet"
            if not data.is_file():
                write_table(data, rows)
            size = data.stat().st_size / 1e6
            modes = ["streamed"] + (["in memory"] if rows <= args.peer_max else [])
            for mode in modes:
                r = measure(data, "streamed" if mode == "streamed" else "memory", backbone, work)
                feats = r["features_mb"] if r["features_mb"] is not None else "- (SQLite)"
                print(f"| {rows:,} | {size:.1f} | {mode} | {r['vmhwm_mb']:,} | {r['vmhwm_mb'] - r['base_mb']:,} | {r['wall_s']} | {r['encode_s']} | {r['fit_s']} | "
                      f"{feats} | {r['accuracy']:.4f} |", flush=True)
                print(f"<!-- {mode} {rows}: {json.dumps(r)} -->", file=sys.stderr, flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
