"""Linear-probe feature extraction: images/s before and after batch-norm folding + measured batch size.

The peer is headstart's own embedding path as it was (batches of 16, the batch norms run as
they are), swapped in within the same process and alternated with the current one, so both
see the same machine state. Both decode ahead in a background thread. Prints images/s of each
and the ratio; the features of the two agree to ~1e-5 (checked, printed).

    python benchmarks/probe_speed.py --images 1000 --reps 3 --threads 1 --json benchmarks/results/probe_speed.json
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10_jpg"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000, help="CIFAR-10 test JPEGs to embed per repetition")
    ap.add_argument("--reps", type=int, default=3, help="alternating repetitions (best of them is reported)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (both paths)")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    ap.add_argument("--data", type=Path, default=DATA, help="a folder of class subfolders of images")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()
    paths = sorted(glob.glob(str(args.data / "test" / "*" / "*.jpg")))
    if not paths:
        sys.exit(f"{args.data}/test holds no JPEGs: point --data at cifar10_jpg")
    paths = paths[:: max(1, len(paths) // args.images)][: args.images]
    os.environ["HEADSTART_CACHE"] = tempfile.mkdtemp(prefix="probe-speed-")  # a fresh batch-size measurement
    os.environ["HEADSTART_PROGRESS"] = "0"
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from headstart.backbones import open_backbone
    from headstart.backbones.batch_size import cached_size, cache_key
    from headstart.train.precision import resolve_precision

    bb, _ = open_backbone("efficientnet-lite0")
    precision = resolve_precision(args.precision, bb.spec)
    fold = type(bb).inference_module

    def old() -> np.ndarray:
        bb.inference_module = lambda module: module
        os.environ["HEADSTART_IMAGE_BATCH"] = "16"
        try:
            return bb.embed(paths, precision=precision)
        finally:
            del bb.inference_module
            del os.environ["HEADSTART_IMAGE_BATCH"]

    def new() -> np.ndarray:
        assert type(bb).inference_module is fold
        return bb.embed(paths, precision=precision)

    t0 = time.perf_counter()
    new()  # the first run measures and stores the batch size (its trials are part of this run)
    first_new = time.perf_counter() - t0
    chosen = cached_size(cache_key(bb.preprocessing_signature(), bb.device, precision))
    old()  # warm-up for the old path's shapes
    rates: dict[str, list[float]] = {"before": [], "after": []}
    feats = {}
    for _ in range(args.reps):
        for name, fn in (("before", old), ("after", new)):
            t = time.perf_counter()
            feats[name] = fn()
            rates[name].append(len(paths) / (time.perf_counter() - t))
    diff = float(np.abs(feats["before"] - feats["after"]).max())
    best = {k: max(v) for k, v in rates.items()}
    result = {
        "images": len(paths), "threads": args.threads, "precision": precision, "measured_batch_size": chosen,
        "first_run_with_measurement_images_per_s": round(len(paths) / first_new, 2),
        "images_per_s": {k: [round(x, 2) for x in v] for k, v in rates.items()},
        "best": {k: round(v, 2) for k, v in best.items()}, "ratio": round(best["after"] / best["before"], 3),
        "max_abs_feature_diff": diff, "cpu": open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(": ")
        if Path("/proc/cpuinfo").exists() else None,
    }
    print(f"EfficientNet-Lite0, {len(paths)} CIFAR-10 JPEGs, {precision}, {args.threads} thread(s)")
    print(f"  before (batches of 16, batch norms as they are): {best['before']:.1f} images/s  (each: {rates['before']})")
    print(f"  after  (measured batch size {chosen}, batch norms folded): {best['after']:.1f} images/s  (each: {rates['after']})")
    print(f"  ratio after/before: {result['ratio']:.2f}x; first run incl. the measurement: "
          f"{result['first_run_with_measurement_images_per_s']} images/s; max feature difference {diff:.2e}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
