"""Prometheus metrics of the server, in the text exposition format (``GET /metrics``).

- ``headstart_requests_total{route, status}``: requests answered, by route and HTTP status
- ``headstart_request_seconds{route}``: latency histogram, request in to response out
- ``headstart_batch_items{model, verb}``: items per model call (micro-batch sizes)
- ``headstart_batch_seconds{model, verb}``: time of one model call
- ``headstart_items_total{model, verb}``: items computed
- ``headstart_errors_total{route, kind}``: requests that failed (``bad_input``, ``busy``, ``model``, ...)
- ``headstart_queue_items{model}``: items waiting for the model (gauge)
- ``headstart_ready``: 1 when every model is loaded (gauge)
- ``process_resident_memory_bytes``: the server's RSS (gauge), for soak tests

Kept here (a few dozen lines) rather than a client library: the format is small and stable
(https://prometheus.io/docs/instrumenting/exposition_formats/) and the server needs no more.
"""

from __future__ import annotations

import bisect
import os
import threading
from collections import defaultdict
from collections.abc import Callable

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class _Histogram:
    def __init__(self, buckets: tuple) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple, int] = defaultdict(int)
        self.errors: dict[tuple, int] = defaultdict(int)
        self.items: dict[tuple, int] = defaultdict(int)
        self.latency: dict[tuple, _Histogram] = {}
        self.batch_items: dict[tuple, _Histogram] = {}
        self.batch_seconds: dict[tuple, _Histogram] = {}
        self.gauges: dict[str, tuple[str, Callable[[], list]]] = {}
        """name -> (help, read): ``read()`` gives (label pairs, value) rows at render time."""

    def request(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(route, str(status))] += 1
            self.latency.setdefault((route,), _Histogram(LATENCY_BUCKETS)).observe(seconds)

    def error(self, route: str, kind: str) -> None:
        with self._lock:
            self.errors[(route, kind)] += 1

    def batch(self, model: str, verb: str, items: int, seconds: float) -> None:
        with self._lock:
            self.items[(model, verb)] += items
            self.batch_items.setdefault((model, verb), _Histogram(BATCH_BUCKETS)).observe(items)
            self.batch_seconds.setdefault((model, verb), _Histogram(LATENCY_BUCKETS)).observe(seconds)

    def render(self) -> str:
        out: list[str] = []
        with self._lock:
            _counter(out, "headstart_requests_total", "Requests answered, by route and HTTP status.", ("route", "status"),
                     self.requests)
            _counter(out, "headstart_errors_total", "Requests that failed, by route and kind of failure.", ("route", "kind"),
                     self.errors)
            _counter(out, "headstart_items_total", "Items computed by a model, by model and verb.", ("model", "verb"), self.items)
            _histograms(out, "headstart_request_seconds", "Seconds from request to response.", ("route",), self.latency)
            _histograms(out, "headstart_batch_items", "Items per model call (micro-batch size).", ("model", "verb"),
                        self.batch_items)
            _histograms(out, "headstart_batch_seconds", "Seconds of one model call.", ("model", "verb"), self.batch_seconds)
            gauges = dict(self.gauges)
        for name, (help_text, read) in sorted(gauges.items()):
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} gauge")
            for labels, value in read():
                out.append(f"{name}{_labels(labels)} {_num(value)}")
        rss = resident_bytes()
        if rss is not None:
            out += ["# HELP process_resident_memory_bytes Resident memory size in bytes.",
                    "# TYPE process_resident_memory_bytes gauge", f"process_resident_memory_bytes {rss}"]
        return "\n".join(out) + "\n"


def resident_bytes() -> int | None:
    """This process's RSS from /proc (None where there is no /proc)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _labels(pairs) -> str:
    if not pairs:
        return ""
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return "{" + body + "}"


def _escape(value) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def _counter(out: list[str], name: str, help_text: str, names: tuple, values: dict) -> None:
    out += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
    for key, value in sorted(values.items()):
        out.append(f"{name}{_labels(zip(names, key, strict=True))} {value}")


def _histograms(out: list[str], name: str, help_text: str, names: tuple, hists: dict) -> None:
    out += [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
    for key, h in sorted(hists.items()):
        base = list(zip(names, key, strict=True))
        running = 0
        for bound, count in zip(h.buckets, h.counts, strict=False):
            running += count
            out.append(f"{name}_bucket{_labels(base + [('le', _num(bound))])} {running}")
        out.append(f"{name}_bucket{_labels(base + [('le', '+Inf')])} {h.count}")
        out.append(f"{name}_sum{_labels(base)} {_num(h.sum)}")
        out.append(f"{name}_count{_labels(base)} {h.count}")


__all__ = ["Metrics", "resident_bytes"]
