"""The drift report: what changed when a run moved from one pretrained base to another.

:func:`write_drift_report` turns the result dict of ``headstart drift`` into three files::

    <out_dir>/
      report.md     verdict and why, summary, the overall checks (slice 'all'), seed noise note,
                    the plot; then the detail: per-slice checks and per-class deltas (30 worst
                    of each), flipped examples
      report.html   the same, in the same order, self-contained: inline CSS, the plot embedded as
                    a base64 PNG, every piece of user text HTML-escaped, all per-slice and
                    per-class rows, each detail table collapsed (``<details>``); tables fit the
                    page width (long cells wrap)
      deltas.png    per-class F1 deltas (worst at top) and the overall per-metric deltas with
                    their intervals, 0 and the +-noise floor marked

Both documents are rendered from one prepared :class:`_Report` (sections of paragraphs and
tables of already formatted cells), so the Markdown and the HTML cannot disagree. Deltas are
shown in points (a delta of 0.058 in accuracy is 5.8 points).

Why this order: a reader opens the report to learn the verdict and what decided it. With the
default per-label slices a 77-class test set gives ~80 slice checks and 77 per-class rows; put
first they push the verdict's evidence off the screen, so they come last and collapsed.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BadInput

FILES = {"markdown": "report.md", "html": "report.html", "plot": "deltas.png"}
REQUIRED = ("verdict", "old_base", "new_base", "checks")
MD_CLASSES = 30  # per-class rows in report.md (report.html has them all)
MD_SLICES = 30  # per-slice check rows in report.md (report.html has them all)
MAX_FLIPS = 20  # per direction
MAX_TEXT = 200  # characters of a flipped example's input
PLOT_CLASSES = 40
LONG_WORD = 20  # characters: an HTML cell with a longer word may break it anywhere
SHORT_SHA = 12
TONES = {"regression": "bad", "improvement": "good"}  # any other verdict is neutral
COLOURS = {"bad": "#c0392b", "good": "#27ae60", "neutral": "0.55"}


# -- the prepared report -----------------------------------------------------------------------


@dataclass
class _Table:
    """Formatted cells; ``numeric[i]``: column i is right-aligned; ``tones``: one per row."""

    head: list[str]
    rows: list[list[str]]
    numeric: list[bool]
    tones: list[str] = field(default_factory=list)
    md_limit: int | None = None
    md_note: str = ""  # said under the Markdown table when md_limit cut it


@dataclass
class _Section:
    title: str
    level: int = 2
    paragraphs: list[str] = field(default_factory=list)  # before the table
    table: _Table | None = None
    notes: list[str] = field(default_factory=list)  # after the table
    plot: bool = False
    collapsed: bool = False  # HTML: the table inside a closed <details>
    id: str = ""  # HTML: the section's element id (default: from the title)

    @property
    def anchor(self) -> str:
        return self.id or "-".join("".join(ch if ch.isalnum() else " " for ch in self.title.lower()).split())


@dataclass
class _Bar:
    """One overall check on the right panel of the plot, in points."""

    label: str
    delta: float
    low: float | None
    high: float | None
    noise: float | None
    tone: str


@dataclass
class _Report:
    title: str
    verdict: str
    tone: str
    reasons: list[str]  # what decided the verdict, said right under it
    sections: list[_Section]
    class_deltas: list[tuple[str, float]]  # (label, delta in points), worst first, finite only
    bars: list[_Bar]


# -- the API -----------------------------------------------------------------------------------


def write_drift_report(result: dict, out_dir: Path) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and ``deltas.png`` for a ``headstart drift`` result.

    ``out_dir`` is created if needed; files already there with these names are replaced. All
    three are rendered in memory first, written under temporary names, then moved into place
    with :func:`os.replace`, so a failure never leaves a half-written file. Returns the paths
    as ``{"markdown": ..., "html": ..., "plot": ...}``. Raises :class:`~headstart.errors.BadInput`
    naming every missing key when ``result`` lacks one of ``verdict``, ``old_base``,
    ``new_base``, ``checks``.
    """
    _check_result(result)
    report = _prepare(result)
    png = _plot_png(report)
    contents = {
        "markdown": _to_markdown(report).encode("utf-8"),
        "html": _to_html(report, png).encode("utf-8"),
        "plot": png,
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return _write_all(out_dir, contents)


def _check_result(result: dict) -> None:
    missing = [k for k in REQUIRED if k not in result]
    if missing:
        raise BadInput(f"drift result lacks {', '.join(missing)} (has: {', '.join(sorted(result)) or 'nothing'}); "
                       "pass the dict that `headstart drift` produced")


def _write_all(out_dir: Path, contents: dict[str, bytes]) -> dict[str, Path]:
    temps: list[Path] = []
    try:
        for key, data in contents.items():
            tmp = out_dir / f".{FILES[key]}.tmp-{os.getpid()}"
            temps.append(tmp)
            tmp.write_bytes(data)
        paths = {}
        for key, tmp in zip(contents, temps, strict=True):
            paths[key] = out_dir / FILES[key]
            os.replace(tmp, paths[key])
        return paths
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)


# -- preparation: everything both formats show, formatted once ---------------------------------


def _prepare(result: dict) -> _Report:
    verdict = str(result["verdict"])
    checks = list(result["checks"] or [])
    per_class = sorted(result.get("per_class") or [], key=lambda r: _sort_key(r.get("delta")))
    flips = list(result.get("flips") or [])
    overall = [c for c in checks if c.get("slice") == "all"]
    slices = sorted((c for c in checks if c.get("slice") != "all"), key=_slice_order)
    per_query = result.get("task", "classification") != "classification"
    from ..tasks import TASKS

    task = TASKS.get(result.get("task", "classification"))
    unit = task.unit if task is not None else "examples"
    moved = ((f"Worse {unit} (the primary metric moved most the wrong way)", f"Better {unit} (the primary metric moved most the right way)")
             if per_query else ("Broke (old prediction right, new wrong)", "Fixed (old prediction wrong, new right)"))
    sections = [  # summaries first, then the detail (collapsed in HTML): see the module docstring
        _summary_section(result),
        _checks_section(overall, result.get("seeds")),
        _Section("Deltas", paragraphs=["Left: per-class F1 delta, worst at top. Right: overall deltas with their "
                                       "intervals; dashed: +- noise floor."], plot=True),
        _slices_section(slices, bool(result.get("strict_slices"))),
        _per_class_section(per_class),
        _Section("Queries that moved" if per_query else "Flipped examples", paragraphs=[_flip_summary(flips)]),
        _flips_section(flips, "broke", moved[0]),
        _flips_section(flips, "fixed", moved[1]),
    ]
    return _Report(
        title=f"Drift report: {verdict}",
        verdict=verdict,
        tone=_tone(verdict),
        reasons=_reasons(overall, slices, bool(result.get("strict_slices"))),
        sections=sections,
        class_deltas=_class_deltas(per_class),
        bars=_bars(checks),
    )


def _summary_section(result: dict) -> _Section:
    old, new = result["old_base"], result["new_base"]
    table = _Table(
        head=["", "old", "new"],
        rows=[
            ["base", str(old.get("name", "?")), str(new.get("name", "?"))],
            ["base sha256", _short_sha(old.get("sha256")), _short_sha(new.get("sha256"))],
            ["run", str(result.get("old_run") or "n/a"), str(result.get("new_run") or "n/a")],
        ],
        numeric=[False, False, False],
    )
    suite = result.get("suite") or {}
    facts = [f"method {result.get('method') or 'n/a'}"]
    if suite:
        facts.append(f"suite {suite.get('name', '?')} (sha256 {_short_sha(suite.get('sha256'))})")
    facts.append(f"alpha {result['alpha']:g}" if _finite(result.get("alpha")) else "alpha n/a")
    facts.append(f"created {result.get('created_at') or 'n/a'}")
    headline = (f"{old.get('name', '?')} ({_short_sha(old.get('sha256'))}) -> "
                f"{new.get('name', '?')} ({_short_sha(new.get('sha256'))})")
    return _Section("Summary", paragraphs=[headline, "; ".join(facts) + "."], table=table)


def _reasons(overall: list[dict], slices: list[dict], strict: bool) -> list[str]:
    """What decided the verdict, in two sentences: the deciding checks, then the slices."""
    several = len({c.get("dataset") for c in overall}) > 1
    said = [f"{c.get('dataset')}/{c.get('metric')}" if several else str(c.get("metric")) for c in overall]
    listed = ", ".join(f"{name} {_fmt_delta(c.get('delta'), None)} pts ({c.get('verdict', 'n/a')})"
                       for name, c in zip(said, overall, strict=True))
    first = f"Overall (slice 'all'): {listed}." if overall else "No overall checks."
    if not slices:
        return [first]
    bad = sum(c.get("verdict") == "regression" for c in slices)
    good = sum(c.get("verdict") == "improvement" for c in slices)
    role = "they decide the verdict too (strict slices)" if strict else "secondary: they decide the verdict only with strict slices"
    counts = f"{_count(len(slices), 'slice check')}: {_count(bad, 'regression')}, {_count(good, 'improvement')}"
    return [first, f"{counts}; {role}. Listed under Per-slice checks."]


_HEAD = ["dataset", "slice", "metric", "n", "old", "new", "delta, pts [95% CI]", "p (Holm)", "test", "noise floor, pts", "verdict"]
_NUMERIC = [False, False, False, True, True, True, True, True, False, True, False]


def _check_table(checks: list[dict], md_limit: int | None = None, md_note: str = "") -> _Table:
    rows = [[
        str(c.get("dataset", "")), str(c.get("slice", "")), str(c.get("metric", "")), _fmt_int(c.get("n")),
        _fmt_value(c.get("old")), _fmt_value(c.get("new")), _fmt_delta(c.get("delta"), c.get("ci")),
        _fmt_p(c.get("p")), str(c.get("test") or "n/a"), _fmt_points(c.get("noise_floor")), str(c.get("verdict", "")),
    ] for c in checks]
    return _Table(list(_HEAD), rows, list(_NUMERIC), tones=[_tone(str(c.get("verdict", ""))) for c in checks],
                  md_limit=md_limit, md_note=md_note)


def _checks_section(checks: list[dict], seeds: dict | None) -> _Section:
    """The overall checks (slice 'all'): the ones that decide the verdict."""
    table = _check_table(checks) if checks else None
    paragraphs = [] if checks else ["none"]
    return _Section("Checks", paragraphs=paragraphs, table=table, notes=_noise_note(seeds))


def _slice_order(check: dict) -> tuple[int, float]:
    """Flagged slices first (regressions, then improvements), then by delta, worst first."""
    rank = {"regression": 0, "improvement": 1}.get(str(check.get("verdict", "")), 2)
    return rank, _sort_key(check.get("delta"))


def _slices_section(slices: list[dict], strict: bool) -> _Section:
    if not slices:
        return _Section("Per-slice checks", paragraphs=["none"])
    note = f"The first {MD_SLICES} of {len(slices)} slice checks; report.html lists all."
    table = _check_table(slices, md_limit=MD_SLICES, md_note=note)
    decide = "They decide the verdict too (strict slices)." if strict else "They decide the verdict only with strict slices."
    return _Section("Per-slice checks", paragraphs=[f"Flagged first, then by delta, worst first. {decide}"], table=table,
                    collapsed=True)


def _noise_note(seeds: dict | None) -> list[str]:
    if not seeds:
        return ["Seeds: not repeated, so no noise floor was estimated."]
    values = seeds.get("values") or {}
    floors = seeds.get("noise_floor") or {}
    notes = [f"Noise floor: the run was repeated with K = {seeds.get('k', len(next(iter(values.values()), [])))} seeds. "
             "A change smaller than the noise floor is within seed-to-seed variation."]
    for metric in dict.fromkeys([*values, *floors]):
        vals = [v for v in values.get(metric, []) if _finite(v)]
        spread = f"range {_fmt_points(max(vals) - min(vals))} pts" if vals else "no values"
        listed = ", ".join(_fmt_value(v) for v in vals) or "none"
        notes.append(f"{metric}: {listed} ({spread}; noise floor {_fmt_points(floors.get(metric))} pts).")
    return notes


def _per_class_section(per_class: list[dict]) -> _Section:
    if not per_class:
        return _Section("Per-class F1", paragraphs=["none"])
    rows = [[str(r.get("dataset", "")), str(r.get("class", "")), _fmt_int(r.get("n")), _fmt_value(r.get("old_f1")),
             _fmt_value(r.get("new_f1")), _fmt_delta(r.get("delta"), None)] for r in per_class]
    table = _Table(
        head=["dataset", "class", "n", "old F1", "new F1", "delta, pts"],
        rows=rows,
        numeric=[False, False, True, True, True, True],
        tones=[_tone_of_delta(r.get("delta")) for r in per_class],
        md_limit=MD_CLASSES,
        md_note=f"The {MD_CLASSES} worst of {len(rows)} classes; report.html lists all.",
    )
    return _Section("Per-class F1", paragraphs=["Sorted by delta, worst first."], table=table, collapsed=True)


def _flip_summary(flips: list[dict]) -> str:
    if not flips:
        return "none"
    broke = sum(f.get("direction") == "broke" for f in flips)
    fixed = sum(f.get("direction") == "fixed" for f in flips)
    return (f"{broke} examples the old base got right and the new one gets wrong, {fixed} the other way round "
            f"(at most {MAX_FLIPS} of each shown, inputs cut to {MAX_TEXT} characters).")


def _flips_section(flips: list[dict], direction: str, title: str) -> _Section:
    chosen = [f for f in flips if f.get("direction") == direction]
    if not chosen:
        return _Section(title, level=3, paragraphs=["none"])
    rows = [[str(f.get("dataset", "")), _truncate(str(f.get("input", ""))), str(f.get("label", "")),
             str(f.get("old", "")), str(f.get("new", ""))] for f in chosen[:MAX_FLIPS]]
    table = _Table(["dataset", "input", "label", "old", "new"], rows, [False] * 5)
    shown = [] if len(chosen) <= MAX_FLIPS else [f"{MAX_FLIPS} of {len(chosen)} shown."]
    return _Section(title, level=3, paragraphs=shown, table=table, collapsed=True, id=f"flips-{direction}")


def _class_deltas(per_class: list[dict]) -> list[tuple[str, float]]:
    several = len({r.get("dataset") for r in per_class}) > 1
    return [(f"{r.get('dataset')}: {r.get('class')}" if several else str(r.get("class")), 100 * r["delta"])
            for r in per_class if _finite(r.get("delta"))]


def _bars(checks: list[dict]) -> list[_Bar]:
    """The checks on slice ``all``: the overall per-metric deltas, in points."""
    overall = [c for c in checks if c.get("slice") == "all" and _finite(c.get("delta"))]
    several = len({c.get("dataset") for c in overall}) > 1
    bars = []
    for c in overall:
        ci = c.get("ci") or (None, None)
        low, high = (100 * ci[0], 100 * ci[1]) if all(_finite(v) for v in ci) else (None, None)
        label = f"{c.get('dataset')}: {c.get('metric')}" if several else str(c.get("metric"))
        noise = 100 * c["noise_floor"] if _finite(c.get("noise_floor")) else None
        bars.append(_Bar(label, 100 * c["delta"], low, high, noise, _tone(str(c.get("verdict", "")))))
    return bars


# -- rendering: Markdown -----------------------------------------------------------------------


def _to_markdown(report: _Report) -> str:
    out = [f"# {_md(report.title)}", "", f"**Verdict: {_md(report.verdict)}**", ""]
    for p in report.reasons:
        out += [_md(p), ""]
    for s in report.sections:
        out += [f"{'#' * s.level} {_md(s.title)}", ""]
        for p in s.paragraphs:
            out += [_md(p), ""]
        if s.table is not None:
            out += _md_table(s.table)
        for p in s.notes:
            out += [_md(p), ""]
        if s.plot:
            out += [f"![per-class and overall deltas]({FILES['plot']})", ""]
    return "\n".join(out)


def _md_table(table: _Table) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(_md(c) for c in cells) + " |"

    rows = table.rows if table.md_limit is None else table.rows[: table.md_limit]
    align = "| " + " | ".join("---:" if n else "---" for n in table.numeric) + " |"
    out = [line(table.head), align, *(line(r) for r in rows), ""]
    if len(rows) < len(table.rows):
        out += [_md(table.md_note), ""]
    return out


def _md(text: str) -> str:
    """One line of Markdown-safe text: no raw HTML, no table-breaking pipes or newlines."""
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "\\<")
    return " ".join(text.splitlines())


# -- rendering: HTML ---------------------------------------------------------------------------

CSS = """
*, *::before, *::after { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 72rem;
       padding: 0 1rem; color: #222; line-height: 1.4; }
p, summary { overflow-wrap: anywhere; }
h1 { font-size: 1.6rem; } h2 { margin-top: 2rem; border-bottom: 1px solid #ddd; } h3 { font-size: 1.05rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.9rem; width: 100%; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.long { overflow-wrap: anywhere; }
tr.bad td { background: #fdecea; } tr.good td { background: #e9f7ef; }
.verdict { font-size: 1.2rem; font-weight: bold; padding: 0.5rem 0.75rem; border-radius: 4px; display: inline-block; }
.verdict.bad { background: #fdecea; color: #a93226; } .verdict.good { background: #e9f7ef; color: #1e8449; }
.verdict.neutral { background: #f4f4f4; color: #444; }
details > summary { cursor: pointer; color: #1a5490; margin: 0.25rem 0; }
img { max-width: 100%; height: auto; }
"""


def _to_html(report: _Report, png: bytes) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">', f"<title>{e(report.title)}</title>",
           f"<style>{CSS}</style>", "</head>", "<body>", f"<h1>{e(report.title)}</h1>",
           f'<p id="verdict" class="verdict {report.tone}">Verdict: {e(report.verdict)}</p>']
    out += [f'<p class="reason">{e(p)}</p>' for p in report.reasons]
    for s in report.sections:
        out.append(f'<section id="{e(s.anchor)}">')
        out.append(f"<h{s.level}>{e(s.title)}</h{s.level}>")
        out += [f"<p>{e(p)}</p>" for p in s.paragraphs]
        if s.table is not None:
            if s.collapsed:
                n = len(s.table.rows)
                out.append(f"<details>\n<summary>show the {n} row{'s' if n != 1 else ''}</summary>")
            out.append(_html_table(s.table))
            if s.collapsed:
                out.append("</details>")
        out += [f"<p>{e(p)}</p>" for p in s.notes]
        if s.plot:
            data = base64.b64encode(png).decode("ascii")
            out.append(f'<img alt="per-class and overall deltas" src="data:image/png;base64,{data}">')
        out.append("</section>")
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


def _html_table(table: _Table) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in table.head)
    rows = []
    for i, cells in enumerate(table.rows):
        tone = table.tones[i] if i < len(table.tones) else "neutral"
        tds = "".join(_html_cell(c, num) for c, num in zip(cells, table.numeric, strict=True))
        rows.append(f'<tr class="{tone}">{tds}</tr>')
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>"


def _html_cell(text: str, numeric: bool) -> str:
    """A cell; one holding a word longer than LONG_WORD may break anywhere (class ``long``).

    Why not let every cell break anywhere: a table then squeezes all its columns alike and splits
    "accuracy" and "1.000" too; breaking only the long words (paths, run ids, label names) is
    what makes a wide table fit the page.
    """
    classes = (["num"] if numeric else []) + (["long"] if max(map(len, text.split()), default=0) > LONG_WORD else [])
    attr = f' class="{" ".join(classes)}"' if classes else ""
    return f"<td{attr}>{html.escape(text)}</td>"


# -- the plot ----------------------------------------------------------------------------------


def _plot_png(report: _Report) -> bytes:
    """Both panels as PNG bytes, drawn on the Agg canvas (not pyplot: never switch a notebook's backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = _plot_classes(report.class_deltas)
    rows = max(len(shown), len(report.bars), 1)
    fig = Figure(figsize=(12, max(3.5, 1.5 + 0.25 * rows)), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2, width_ratios=(3, 2))
    _draw_classes(left, shown, total=len(report.class_deltas))
    _draw_bars(right, report.bars)
    fig.suptitle(_plot_text(report.title), fontsize=11)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _plot_classes(deltas: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """The PLOT_CLASSES largest changes (by size), still sorted worst first."""
    if len(deltas) <= PLOT_CLASSES:
        return deltas
    keep = sorted(range(len(deltas)), key=lambda i: -abs(deltas[i][1]))[:PLOT_CLASSES]
    return [deltas[i] for i in sorted(keep)]


def _draw_classes(ax: Any, shown: list[tuple[str, float]], total: int) -> None:
    if not shown:
        _empty(ax, "no per-class results")
    else:
        ys = range(len(shown))
        colours = [COLOURS[_tone_of_delta(d / 100)] for _, d in shown]
        ax.barh(ys, [d for _, d in shown], color=colours)
        ax.set_yticks(list(ys), [_plot_text(label, 40) for label, _ in shown], fontsize=8)
        ax.invert_yaxis()  # the first (worst) at the top
        ax.axvline(0, color="black", linewidth=0.8)
    which = f"{len(shown)} largest changes of {total} classes" if len(shown) < total else f"{total} classes"
    ax.set_title(f"per-class F1 delta ({which})", fontsize=10)
    ax.set_xlabel("F1 delta (points)")
    ax.grid(True, axis="x", alpha=0.3)


def _draw_bars(ax: Any, bars: list[_Bar]) -> None:
    if not bars:
        _empty(ax, "no checks on slice 'all'")
    noise_labelled = False
    for i, b in enumerate(bars):
        xerr = None if b.low is None else [[max(0.0, b.delta - b.low)], [max(0.0, b.high - b.delta)]]
        ax.errorbar(b.delta, i, xerr=xerr, fmt="o", color=COLOURS[b.tone], capsize=4, markersize=6)
        if b.noise is not None:
            ax.vlines([-b.noise, b.noise], i - 0.35, i + 0.35, colors="0.4", linestyles="dashed", linewidth=1,
                      label=None if noise_labelled else "+- noise floor")
            noise_labelled = True
    if bars:
        ax.set_yticks(range(len(bars)), [_plot_text(b.label, 30) for b in bars], fontsize=9)
        ax.set_ylim(len(bars) - 0.5, -0.5)  # first at the top
    ax.axvline(0, color="black", linewidth=0.8)
    if noise_labelled:
        ax.legend(loc="best", fontsize=8)
    ax.set_title("overall delta (slice 'all') with CI", fontsize=10)
    ax.set_xlabel("delta (points)")
    ax.grid(True, axis="x", alpha=0.3)


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_yticks([])


def _plot_text(text: str, limit: int | None = None) -> str:
    """A label matplotlib draws as given: cut to ``limit`` characters, ``$`` not read as mathtext."""
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "\u2026"
    return text.replace("$", r"\$")


# -- formatting --------------------------------------------------------------------------------


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _sort_key(delta: Any) -> float:
    return delta if _finite(delta) else math.inf  # unknown deltas last


def _tone(verdict: str) -> str:
    return TONES.get(verdict, "neutral")


def _tone_of_delta(delta: Any) -> str:
    if not _finite(delta) or delta == 0:
        return "neutral"
    return "bad" if delta < 0 else "good"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _short_sha(sha: Any) -> str:
    return str(sha)[:SHORT_SHA] if sha else "n/a"


def _truncate(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _fmt_int(n: Any) -> str:
    return f"{int(n):,}" if _finite(n) else "n/a"


def _fmt_value(v: Any) -> str:
    return f"{v:.3f}" if _finite(v) else "n/a"


def _fmt_points(v: Any) -> str:
    """A difference of proportions in points, unsigned: 0.004 -> "0.4"."""
    return f"{100 * v:.1f}" if _finite(v) else "n/a"


def _fmt_delta(delta: Any, ci: Any) -> str:
    """-0.058, [-0.066, -0.050] -> "-5.8 [-6.6, -5.0]" (points)."""
    if not _finite(delta):
        return "n/a"
    text = f"{100 * delta:+.1f}"
    if ci and len(ci) == 2 and all(_finite(v) for v in ci):
        text += f" [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"
    return text


def _fmt_p(p: Any) -> str:
    """3.1e-05 below 0.001, else three decimals (0.214)."""
    if not _finite(p):
        return "n/a"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"
