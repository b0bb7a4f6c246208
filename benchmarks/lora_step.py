"""Where a LoRA training step's time goes on the CPU: the ablations behind two trainer defaults.

One MiniLM-L6 LoRA model (r=8 on all 36 linear layers of the blocks, bf16 autocast, frozen linears
cast to bf16 once, as headstart's trainer does), 2,048 banking77 sentences in length-sorted
batches of 32, the same 40 timed steps (after 5 warm-up steps) per configuration:

- LoRA dropout 0.1 vs 0 (the preset's ``lora_dropout``): the cost of the Bernoulli masks;
- AdamW per-tensor loop vs ``fused=True`` (the trainer's optimizer).

Also times ``F.dropout`` alone on one (32, 16, 384) activation.

    python benchmarks/lora_step.py [--data ../shared/data/banking77/banking_data]
"""

from __future__ import annotations

import argparse
import csv
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "banking77" / "banking_data"


def examples_per_s(texts: list[str], lora_dropout: float, fused: bool) -> float:
    from headstart.backbones import open_backbone
    from headstart.methods import get_method
    from headstart.methods.base import FitContext
    from headstart.methods.trained import TaskModel
    from headstart.train.trainer import frozen_linears_in_bf16

    torch.manual_seed(0)
    method = get_method("lora").from_options({"rank": 8, "alpha": 16.0, "lora_dropout": lora_dropout})
    method.resolved_ = method.config
    bb, bb_hash = open_backbone("minilm-l6")
    model = TaskModel(bb, 77, 0.0)
    method.prepare(model, FitContext(bb_hash, "bf16", 0, [str(i) for i in range(77)]))
    prepared = bb.prepare(texts)
    order = sorted(range(len(prepared)), key=lambda i: len(prepared[i]))
    batches = [order[i : i + 32] for i in range(0, len(order), 32)]
    random.Random(0).shuffle(batches)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=fused)
    labels = torch.randint(0, 77, (32,))
    model.train()

    def step(idx: list[int]) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(bb.collate([prepared[i] for i in idx]))
        F.cross_entropy(logits.float(), labels[: len(idx)]).backward()
        opt.step()
        opt.zero_grad()

    with frozen_linears_in_bf16(model, True):
        for idx in batches[:5]:
            step(idx)
        t0 = time.perf_counter()
        n = 0
        for idx in batches[5:45]:
            step(idx)
            n += len(idx)
    return n / (time.perf_counter() - t0)


def dropout_us(shape=(32, 16, 384), repeats: int = 200) -> float:
    x = torch.randn(*shape)
    for _ in range(10):
        F.dropout(x, 0.1, True)
    t0 = time.perf_counter()
    for _ in range(repeats):
        F.dropout(x, 0.1, True)
    return (time.perf_counter() - t0) / repeats * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = ap.parse_args()
    with open(args.data / "train.csv", newline="", encoding="utf-8") as f:
        texts = [r["text"] for r in csv.DictReader(f)][:2048]
    print(f"F.dropout(p=0.1) on a (32, 16, 384) fp32 activation: {dropout_us():.0f} us")
    print("| LoRA dropout | AdamW | train examples/s |\n|---|---|---|")
    for lora_dropout, fused in ((0.1, False), (0.1, True), (0.0, True)):
        print(f"| {lora_dropout} | {'fused' if fused else 'per-tensor loop'} | {examples_per_s(texts, lora_dropout, fused):.1f} |", flush=True)


if __name__ == "__main__":
    main()
