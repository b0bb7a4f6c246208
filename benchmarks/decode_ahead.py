"""Decode-ahead: image decoding overlapped with the forward pass, against decoding in turn.

``Backbone.embed`` (the linear probe's features, the image-text task's tower features, eval)
collates the next batch -- decoding and resizing its JPEGs -- in a background thread while the
model runs the current one (:func:`headstart.backbones.base.collated_ahead`). The peer is the same
code with collating in turn (the behaviour before), swapped in for the measurement. Both embed the
same images with EfficientNet-Lite0 at 224 px, 1 torch thread, alternating, best of ``--reps``:

* CIFAR-10 test JPEGs as they are (32 px: decoding is a small share of the work);
* the same images re-encoded as 1024 x 768 JPEGs (photo-sized: decoding and resizing cost what
  they cost for real photos; written to a temporary folder, never into the repository).

    python benchmarks/decode_ahead.py                 # 320 images each, 3 repetitions (~6 min on 2 cores)
    python benchmarks/decode_ahead.py --images 160 --reps 2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data" / "cifar10_jpg" / "test"


def in_turn(batches, collate, prepared):
    """The peer: each batch collated when it is needed (no overlap)."""
    for idx in batches:
        yield idx, collate([prepared[i] for i in idx])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--images", type=int, default=320)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"no data at {args.data}", file=sys.stderr)
        return 2
    import torch
    from PIL import Image

    torch.set_num_threads(args.threads)
    import headstart.backbones.base as base
    from headstart.backbones import open_backbone

    files = sorted(args.data.rglob("*.jpg"))[: args.images]
    bb, _ = open_backbone("efficientnet-lite0")
    bb.module  # noqa: B018 - load once, outside the timings
    ahead = base.collated_ahead
    results = {"images": len(files), "threads": args.threads, "reps": args.reps, "sets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        large = []
        for i, f in enumerate(files):
            out = Path(tmp) / f"{i:05d}.jpg"
            with Image.open(f) as im:
                im.convert("RGB").resize((1024, 768), Image.Resampling.BICUBIC).save(out, quality=90)
            large.append(out)
        for name, paths in (("cifar 32 px", files), ("1024x768 JPEG", large)):
            inputs = [str(p) for p in paths]
            times = {"in turn": [], "ahead": []}
            for _ in range(args.reps):
                for mode, fn in (("in turn", in_turn), ("ahead", ahead)):
                    base.collated_ahead = fn
                    t0 = time.perf_counter()
                    bb.embed(inputs, desc=f"{name} {mode}")
                    times[mode].append(time.perf_counter() - t0)
            base.collated_ahead = ahead
            best = {m: min(v) for m, v in times.items()}
            results["sets"][name] = {"seconds": times, "images_per_s": {m: round(len(inputs) / t, 2) for m, t in best.items()},
                                     "ratio": round(best["in turn"] / best["ahead"], 3)}
    print(f"EfficientNet-Lite0, {len(files)} images, {args.threads} torch thread(s), best of {args.reps}")
    print("| images | in turn img/s | decode-ahead img/s | ratio |")
    print("|---|---|---|---|")
    for name, r in results["sets"].items():
        print(f"| {name} | {r['images_per_s']['in turn']} | {r['images_per_s']['ahead']} | {r['ratio']:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
