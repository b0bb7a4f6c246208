"""Small helpers shared across the package: hashing, progress bars, home folder, time, peak memory,
durations."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def home() -> Path:
    """headstart's data folder: ``$HEADSTART_HOME`` or the platform's user data directory."""
    env = os.environ.get("HEADSTART_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("headstart", appauthor=False))


def cache_dir() -> Path:
    """Embedding and identity caches: ``$HEADSTART_CACHE`` or ``<home>/cache``."""
    env = os.environ.get("HEADSTART_CACHE")
    return Path(env).expanduser() if env else home() / "cache"


def progress_enabled() -> bool:
    return os.environ.get("HEADSTART_PROGRESS", "1") not in ("0", "false", "no")


def status(message: str) -> None:
    """One line on stderr for a step without a natural progress count (e.g. loading weights)."""
    if progress_enabled():
        print(message, file=sys.stderr, flush=True)


def progress(total: int, desc: str, unit: str = "it"):
    """A tqdm bar on stderr (silenced with HEADSTART_PROGRESS=0 or ``--quiet``)."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        disable=not progress_enabled(),
        dynamic_ncols=True,
        leave=False,
        mininterval=0.5,
    )


# -- peak memory -------------------------------------------------------------------------------


class PeakMemory:
    """What :func:`peak_rss` measured: resident memory (MB) at the start and at the peak of a block.

    ``how`` says how: ``"hwm"`` (the kernel's high-water mark, reset at the start: exact),
    ``"sampled"`` (RSS read every 10 ms: misses spikes shorter than that) or ``"lifetime"``
    (``getrusage``: the peak of the whole process so far, not only of the block).
    """

    def __init__(self, start_mb: float, how: str):
        self.start_mb = start_mb
        self.how = how
        self.peak_mb: float = start_mb
        self._running: float = start_mb

    @property
    def delta_mb(self) -> float:
        """How far the peak rose above the resident memory at the start of the block."""
        return max(0.0, self.peak_mb - self.start_mb)

    def __repr__(self) -> str:
        return f"PeakMemory(start_mb={self.start_mb:.1f}, peak_mb={self.peak_mb:.1f}, how={self.how!r})"


_MB = 1024.0 * 1024.0
_PEAK_LOCK = threading.Lock()
_ACTIVE_HWM: list[PeakMemory] = []


def _proc_status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def _statm_rss_mb() -> float | None:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / _MB
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) to the current RSS; False when not allowed."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _lifetime_peak_mb() -> float:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / _MB if sys.platform == "darwin" else peak / 1024.0  # bytes on macOS, kB elsewhere


@contextlib.contextmanager
def peak_rss(interval_s: float = 0.01) -> Iterator[PeakMemory]:
    """Measure the peak resident memory (MB) of this process while the ``with`` block runs.

    Why: "how much memory does this method need" is one of the numbers ``compare`` reports, and
    ``resource.getrusage`` only gives the peak of the whole process so far, so a second method
    measured in the same process would inherit the first one's peak.

    On Linux the kernel's high-water mark is reset by writing ``5`` to ``/proc/self/clear_refs``
    and ``VmHWM`` is read from ``/proc/self/status`` afterwards (exact; nested blocks stay
    correct). Where ``clear_refs`` cannot be written, a thread samples ``/proc/self/statm`` every
    ``interval_s`` seconds. Elsewhere (macOS, Windows without /proc) it falls back to
    ``getrusage``, a process-lifetime peak (``how == "lifetime"``)::

        with peak_rss() as mem:
            work()
        print(mem.peak_mb, mem.delta_mb)
    """
    start = _statm_rss_mb()
    if start is not None and _proc_status_mb("VmHWM") is not None:
        with _PEAK_LOCK:
            hwm_now = _proc_status_mb("VmHWM") or start
            for outer in _ACTIVE_HWM:  # keep what the enclosing blocks have seen before the reset
                outer._running = max(outer._running, hwm_now)
            reset = _reset_hwm()
            if reset:
                result = PeakMemory(start, "hwm")
                _ACTIVE_HWM.append(result)
        if reset:
            try:
                yield result
            finally:
                with _PEAK_LOCK:
                    peak = _proc_status_mb("VmHWM") or start
                    _ACTIVE_HWM.remove(result)
                    result.peak_mb = max(result._running, peak)
                    for outer in _ACTIVE_HWM:
                        outer._running = max(outer._running, result.peak_mb)
            return
    if start is not None:
        result = PeakMemory(start, "sampled")
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(interval_s):
                now = _statm_rss_mb()
                if now is not None and now > result._running:
                    result._running = now

        thread = threading.Thread(target=sample, name="headstart-peak-rss", daemon=True)
        thread.start()
        try:
            yield result
        finally:
            stop.set()
            thread.join()
            result.peak_mb = max(result._running, _statm_rss_mb() or 0.0)
        return
    result = PeakMemory(_lifetime_peak_mb(), "lifetime")
    try:
        yield result
    finally:
        result.peak_mb = _lifetime_peak_mb()


# -- durations ---------------------------------------------------------------------------------

_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str, option: str = "--budget") -> float:
    """Seconds in a duration such as ``90s``, ``10m``, ``1.5h`` (a number with a unit, > 0).

    The unit is required so that ``--budget 10`` cannot silently mean ten seconds to one user
    and ten minutes to another. Raises :class:`~headstart.errors.BadInput` naming ``option``.
    """
    import math
    import re

    from .errors import BadInput

    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh])\s*", str(text), flags=re.IGNORECASE)
    seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2).lower()] if m else math.nan
    if not m or not seconds > 0 or math.isinf(seconds):
        raise BadInput(f"{option} {text!r}: use a number with s, m or h, e.g. 10m")
    return seconds
