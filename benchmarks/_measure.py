"""Shared measurement helpers for benchmark scripts: wall time and peak resident memory, and what
was measured on (the commit and the CPU)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


@dataclass
class Measurement:
    wall_s: float = 0.0
    peak_rss_mb: float = 0.0
    """Highest resident memory of the process during the phase."""
    peak_extra_mb: float = 0.0
    """Peak minus the resident memory at the start of the phase (what the phase itself added)."""


@contextmanager
def measure(interval_s: float = 0.01):
    """Time a block and sample the process's RSS every ``interval_s`` on a side thread."""
    m = Measurement()
    start_rss = rss_bytes()
    peak = [start_rss]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_bytes())
            stop.wait(interval_s)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    t0 = time.perf_counter()
    try:
        yield m
    finally:
        m.wall_s = time.perf_counter() - t0
        stop.set()
        t.join()
        peak[0] = max(peak[0], rss_bytes())
        m.peak_rss_mb = peak[0] / 2**20
        m.peak_extra_mb = (peak[0] - start_rss) / 2**20


def instrument_trainer(around=None) -> tuple[list[float], dict]:
    """Patch headstart's ``Trainer`` in this (child) process: every validation pass is timed (the
    list of seconds returned, to subtract from ``train_s``) and ``fit`` is measured (``["m"]`` of
    the dict returned: a :class:`Measurement`); ``around()``, a context manager, wraps each fit
    (a token counter switched on for training only)."""
    from contextlib import nullcontext

    from headstart.train import trainer as trainer_mod

    evals: list[float] = []
    fit_measure: dict = {}
    original_eval, original_fit = trainer_mod.Trainer.evaluate, trainer_mod.Trainer.fit

    def timed_evaluate(self, objective):
        t0 = time.perf_counter()
        try:
            return original_eval(self, objective)
        finally:
            evals.append(time.perf_counter() - t0)

    def measured_fit(self, **kwargs):
        with around() if around is not None else nullcontext(), measure() as m:
            result = original_fit(self, **kwargs)
        fit_measure["m"] = m
        return result

    trainer_mod.Trainer.evaluate = timed_evaluate
    trainer_mod.Trainer.fit = measured_fit
    return evals, fit_measure


def code_state(repo: Path) -> dict:
    """The commit measured, and whether src/ had uncommitted changes (shared work trees)."""
    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=repo, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "HEAD"), "src_changes": git("diff", "--stat", "HEAD", "--", "src")}


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"
