"""Measured batch sizes for inputs of uniform cost (images).

A text backbone batches by a token budget (padding makes cost per batch the thing to bound); an
image always costs the same, and the fastest batch size is a property of the machine, not of the
data. Measured on the packaged EfficientNet-Lite0 at 224 px: on a 2-core AMD EPYC in fp32, a
forward-only probe had batches of 4 at 1.5-1.8x the rate of 16 and 32 slowest (activations of
small batches stay in cache), while on a 2-core Xeon in bf16 16 beat 64; end to end with the
folded batch norms ``benchmarks/probe_speed.py`` measured 1.13x (size 8 chosen). So the first time a
backbone embeds enough images on a machine, :func:`plan_batches` times a few batches of each
candidate size (on the real inputs, whose features are kept) and uses the fastest for the rest;
the choice is stored per (backbone, device, threads, precision) in ``<cache>/batch_sizes.json``
and reused from then on, so later runs on the machine batch the same way (features can differ in
the last float digits between batch sizes, ~1e-5). ``HEADSTART_IMAGE_BATCH=N`` fixes the size.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, field

import torch

from .._util import cache_dir, canonical_json, status
from ..errors import BadInput

BATCH_ENV = "HEADSTART_IMAGE_BATCH"
CACHE_FILE = "batch_sizes.json"
CACHE_VERSION = 1
TRIALS = 3
"""Batches timed per candidate size; the first of each builds the kernels for its shape and is not counted."""
TUNE_FACTOR = 3
"""Measure only when the inputs hold this many times the images the trials take."""

CPU_CANDIDATES = (2, 4, 8, 16, 32)
CUDA_CANDIDATES = (16, 32, 64, 128, 256)


def fixed_batch_size() -> int | None:
    """``HEADSTART_IMAGE_BATCH`` as a batch size, or None when unset."""
    return positive_int_env(BATCH_ENV, "give a batch size >= 1, or unset it to use the measured one")


def positive_int_env(name: str, advice: str) -> int | None:
    """The environment variable ``name`` as an integer >= 1; None when unset or empty; else a
    one-line error saying ``advice``."""
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise BadInput(f"{name}={value!r}: {advice}")
    return n


def candidates_for(device: torch.device) -> tuple[int, ...]:
    return CUDA_CANDIDATES if device.type == "cuda" else CPU_CANDIDATES


def cache_key(signature: dict, device: torch.device, precision: str) -> str:
    threads = torch.get_num_threads() if device.type == "cpu" else 0
    return f"v{CACHE_VERSION}|{canonical_json(signature)}|{device.type}|{threads}|{precision}"


def _read_cache() -> dict:
    try:
        found = json.loads((cache_dir() / CACHE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def cached_size(key: str) -> int | None:
    entry = _read_cache().get(key)
    size = entry.get("batch_size") if isinstance(entry, dict) else None
    return size if isinstance(size, int) and size >= 1 else None


def store_size(key: str, size: int, rates: dict[int, float]) -> None:
    """Add the measurement to the cache file (atomically; another process may have added some)."""
    entry = {"batch_size": size, "images_per_s": {str(k): round(v, 2) for k, v in sorted(rates.items())},
             "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    path = cache_dir() / CACHE_FILE
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({**_read_cache(), key: entry}, indent=1))
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        print(f"headstart: note: could not store the measured batch size in {path} ({e.strerror or e}); "
              "it will be measured again next time", file=sys.stderr)


@dataclass
class BatchPlan:
    """How :meth:`Backbone._embed` batches ``n`` uniform-cost inputs: first the timed trial
    batches (empty when the size is known), then :meth:`rest` at the chosen size."""

    n: int
    size: int | None
    """The batch size for the rest; None until the trials have been timed."""
    key: str
    trials: list[list[int]] = field(default_factory=list)
    timings: dict[int, list[float]] = field(default_factory=dict)

    def record(self, batch: list[int], seconds: float) -> None:
        self.timings.setdefault(len(batch), []).append(seconds)

    def done(self) -> int:
        """Inputs the trials covered (they come first, in order)."""
        return sum(len(b) for b in self.trials[: sum(len(v) for v in self.timings.values())])

    def choose(self) -> int:
        """The fastest size timed (images per second of its best counted batch), stored for next time."""
        rates = {s: s / min(t[1:]) for s, t in self.timings.items() if len(t) > 1 and min(t[1:]) > 0}
        if not rates:  # nothing timed twice (the first size ran out of memory): the smallest timed, else 1
            self.size = min(self.timings, default=1)
            return self.size
        self.size = max(rates, key=rates.__getitem__)
        store_size(self.key, self.size, rates)
        shown = ", ".join(f"{s}: {r:.1f}" for s, r in sorted(rates.items()))
        status(f"batch size {self.size} measured fastest here (images/s by batch size: {shown}); stored for later runs")
        return self.size

    def rest(self) -> list[list[int]]:
        start = self.done()
        size = self.size or self.choose()
        return [list(range(i, min(i + size, self.n))) for i in range(start, self.n, size)]


def plan_batches(n: int, signature: dict, device: torch.device, precision: str, default: int) -> BatchPlan:
    """The batching of ``n`` uniform-cost inputs: ``HEADSTART_IMAGE_BATCH``, else the size measured
    here before, else (with enough inputs to measure on) trials of each candidate size, else
    ``default``."""
    key = cache_key(signature, device, precision)
    size = fixed_batch_size() or cached_size(key)
    if size is not None:
        return BatchPlan(n, size, key)
    candidates = candidates_for(device)
    if n < TUNE_FACTOR * TRIALS * sum(candidates):
        return BatchPlan(n, default, key)
    trials, start = [], 0
    for s in candidates:
        for _ in range(TRIALS):
            trials.append(list(range(start, start + s)))
            start += s
    return BatchPlan(n, None, key, trials)
