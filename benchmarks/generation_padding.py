"""Why the generation task does not pack examples (issue 15): padding left by length-bucketed
batches against random batches and against first-fit-decreasing packing into full rows.

alpaca_en_demo (``../shared/data/llamafactory_demo``), SmolLM2's chat template and tokenizer, each
example as the task encodes it (``Generation.encode_set``). For batch sizes 4, 8, 16: tokens fed /
real tokens with the trainer's own ``bucketed_batches`` (seed 0), with a random order, and with
packing into ``max_length``-token rows. Tokenizer only: no model runs.

    python benchmarks/generation_padding.py      # ~1 min once SmolLM2 is converted
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HEADSTART_PROGRESS", "0")
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "llamafactory_demo" / "data" / "alpaca_en_demo.json"


def main() -> int:
    import numpy as np

    from headstart.backbones import open_backbone
    from headstart.data.chat import load_chat
    from headstart.tasks.generation import Generation, GenerationOptions
    from headstart.train.trainer import bucketed_batches

    if not DATA.is_file():
        print(f"missing {DATA} (../shared/data beside the repository)", file=sys.stderr)
        return 2
    bb, _ = open_backbone("smollm2-135m-instruct")
    data = load_chat(DATA)
    for max_length in (512, 1024):
        rows, counts = Generation().encode_set(bb, data, GenerationOptions(max_length=max_length))
        lengths = np.array([len(r.ids) for r in rows])
        print(f"max_length {max_length}: {counts['examples']} examples, {counts['truncated']} truncated; tokens per example "
              f"median {int(np.median(lengths))}, p90 {int(np.percentile(lengths, 90))}, max {lengths.max()}")
        real = lengths.sum()
        bins: list[int] = []
        for n in sorted(lengths.tolist(), reverse=True):  # first-fit decreasing
            for k, used in enumerate(bins):
                if used + n <= max_length:
                    bins[k] += n
                    break
            else:
                bins.append(n)
        for batch in (4, 8, 16):
            bucketed = sum(len(b) * lengths[b].max() for b in bucketed_batches(lengths.tolist(), batch, np.random.default_rng(0)))
            perm = np.random.default_rng(0).permutation(len(lengths))
            shuffled = sum(len(perm[i:i + batch]) * lengths[perm[i:i + batch]].max() for i in range(0, len(perm), batch))
            print(f"  batch {batch:>2}: bucketed {bucketed / real:.3f}  random {shuffled / real:.3f}  "
                  f"packed {len(bins)} x {max_length} = {len(bins) * max_length / real:.3f}  (tokens fed / real tokens)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
