"""The comparison table: one row per method x backbone, as Markdown (``table.md``) or aligned text.

:class:`headstart.compare.Comparison` renders itself through these functions
(``Comparison.to_markdown()``, ``.to_text()``, ``.header()``, ``.legend()``); the frontier plot
(:mod:`headstart.report.frontier`) shares :func:`fmt_training` so both name a budget-stopped run alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..compare import Comparison


def header(comparison: Comparison) -> str:
    """One line: the data (and fingerprint), classes, split sizes, test source, seed and date."""
    d = comparison.data
    split = d["split"]
    return (
        f"Data {d['source']} (fingerprint {d['fingerprint'][:12]}), "
        + (f"{len(d['classes'])} classes; " if d.get("classes") else f"task {d.get('task', 'classification')}; ") +
        f"split {split['train']} train / {split['val']} validation / {split['test']} test "
        f"(test: {d['test_source']}); seed {comparison.inputs['seed']}; {comparison.created_at}"
    )

def legend(comparison: Comparison) -> str:
    """What the intervals, the frontier mark, peak memory, n/a and (when a run was stopped) budget mean."""
    n = comparison.data["split"]["test"]
    pct = f"{comparison.bootstrap['level']:.0%}"
    from ..tasks import TASKS

    task = TASKS.get(comparison.data.get("task", "classification"))
    unit = task.unit if task is not None else "examples"
    text = (
        f"[low, high]: {pct} percentile-bootstrap interval over the {n} test {unit} ({comparison.bootstrap['n_resamples']} resamples). "
        f"* on the Pareto frontier of {comparison.metrics[0][1]} vs wall time. Peak memory: peak resident memory of the process during the run "
        "(runs share one process). n/a: the method did not report it."
    )
    if any(r.get("stopped_by") == "budget" for r in comparison.rows):
        text += (" budget: N/M steps: --budget stopped the training after N of its M planned steps, so the row shows an "
                 "unfinished run, not what the method reaches.")
    return text

def _cells(comparison: Comparison) -> tuple[list[str], list[list[str]], int]:
    """Header, body and how many leading columns are text (left-aligned; the rest are numbers)."""
    pct = f"{comparison.bootstrap['level']:.0%}"
    gpu = any(r.get("peak_gpu_mb") is not None for r in comparison.rows)
    budget = any(r.get("stopped_by") == "budget" for r in comparison.rows)
    head = ["", "method", "backbone"] + (["training"] if budget else [])
    text_columns = len(head)
    (first, first_label), (second, second_label) = comparison.metrics
    head += [f"test {first_label} [{pct}]", f"{second_label} [{pct}]", "trainable", "trainable %", "wall time", "peak memory"]
    if gpu:
        head.append("peak GPU")
    body = []
    for r in comparison.rows:
        cells = ["*" if r["on_frontier"] else "", r["method"], r["backbone_label"]]
        if budget:
            cells.append(fmt_training(r))
        cells += [
            _fmt_ci(r[first], r[f"{first}_low"], r[f"{first}_high"]),
            _fmt_ci(r[second], r[f"{second}_low"], r[f"{second}_high"]),
            _fmt_count(r["trainable_params"]),
            _fmt_pct(r["trainable_pct"]),
            _fmt_seconds(r["wall_s"]),
            _fmt_mb(r["peak_rss_mb"]),
        ]
        if gpu:
            cells.append(_fmt_mb(r.get("peak_gpu_mb")))
        body.append(cells)
    return head, body, text_columns

def to_markdown(comparison: Comparison) -> str:
    """The table as Markdown, headed by the data, split sizes, seed and date."""
    head, body, text_columns = _cells(comparison)

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    align = ["---" if i < text_columns else "---:" for i in range(len(head))]
    out = [f"# Comparison {comparison.id}", "", header(comparison), "", line(head), "| " + " | ".join(align) + " |"]
    out += [line(cells) for cells in body]
    out += ["", legend(comparison), ""]
    return "\n".join(out)

def to_text(comparison: Comparison) -> str:
    """An aligned plain-text table for a terminal, with the folder it was saved to."""
    head, body, text_columns = _cells(comparison)
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < text_columns else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    out = [f"comparison {comparison.id}", f"  {header(comparison)}", line(head)] + [line(cells) for cells in body]
    out.append(f"  {legend(comparison)}")
    files = "table.md, comparison.json" + (f", {comparison.plot}" if comparison.plot else "")
    out.append(f"saved to {comparison.path} ({files})")
    return "\n".join(out)


# -- cells ------------------------------------------------------------------------------------


def fmt_training(row: dict[str, Any]) -> str:
    """How a row's training ended (the table's "training" column and the plot's legend): ``budget: 3/30 steps``, ``30/30 steps``, ``early stop: 12/30 steps``; ``-`` without steps."""
    steps, planned, why = row.get("steps"), row.get("planned_steps"), row.get("stopped_by")
    if steps is None:
        return "budget" if why == "budget" else "-"
    count = f"{steps}/{planned} steps" if planned else f"{steps} steps"
    return {"budget": f"budget: {count}", "early-stopping": f"early stop: {count}"}.get(str(why), count)


def _fmt_ci(value: float, low: float | None, high: float | None) -> str:
    return f"{value:.3f}" if low is None or high is None else f"{value:.3f} [{low:.3f}, {high:.3f}]"


def _fmt_count(n: int | None) -> str:
    if n is None:
        return "n/a"
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.1f}{suffix}"
    return str(n)


def _fmt_pct(p: float | None) -> str:
    if p is None:
        return "n/a"
    return f"{p:.2g}%" if p < 0.01 else f"{p:.2f}%"


def _fmt_seconds(s: float) -> str:
    if s < 10:
        return f"{s:.2f}s"
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{int(s // 60)}m {int(s % 60):02d}s"
    return f"{int(s // 3600)}h {int(s % 3600 // 60):02d}m"


def _fmt_mb(mb: float | None) -> str:
    return "n/a" if mb is None else f"{mb:,.0f} MB"
