"""The quality-vs-cost picture of a comparison (``frontier.png``) and the Pareto frontier behind it.

:func:`pareto_frontier` marks the rows no other beats on both quality and cost (``compare`` uses
it for the table's ``*`` too); :func:`plot_frontier` writes the PNG; :func:`frontier_figure` is
the matplotlib Figure itself (tests read its artists by gid).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .compare_table import fmt_training


def pareto_frontier(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points (cost, quality) that no other point beats on both, cheapest first.

    A point is dominated when another has cost <= and quality >= with at least one strict; ties
    (same cost and quality) all stay on the frontier.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    frontier: list[int] = []
    best = -math.inf
    best_cost = math.nan
    for i in order:
        cost, quality = points[i]
        if quality > best or (quality == best and cost == best_cost):
            frontier.append(i)
            if quality > best:
                best, best_cost = quality, cost
    return frontier




PLOT_DPI = 110
PANELS = (("wall_s", "wall time (s, log scale)"), ("trainable_pct", "trainable parameters (% of all, log scale)"))


def plot_frontier(rows: list[dict[str, Any]], path: Path, *, title: str = "",
                  metric: tuple[str, str] = ("accuracy", "accuracy"), higher_is_better: bool = True) -> bool:
    """Draw accuracy (with its interval) vs wall time and vs trainable %, frontiers joined by a line.

    Returns False (with a warning) when matplotlib is not installed: the table and JSON are the
    result; the picture is a convenience that must not throw away finished runs.
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        warnings.warn("frontier.png not drawn: matplotlib is not installed (pip install matplotlib)", stacklevel=2)
        return False
    frontier_figure(rows, title=title, metric=metric, higher_is_better=higher_is_better).savefig(path, dpi=PLOT_DPI)
    return True


def frontier_figure(rows: list[dict[str, Any]], *, title: str = "", metric: tuple[str, str] = ("accuracy", "accuracy"),
                    higher_is_better: bool = True) -> Any:
    """The matplotlib Figure behind ``frontier.png`` (see :func:`plot_frontier`).

    What a reader needs from it, each a past complaint: a row has one colour (its method) and one
    marker (its backbone) in both panels and in the legend below them, which names every row by
    its number in the table (and says when the budget stopped it: hollow marker); the labels
    beside the points never overprint each other (:func:`_place_labels`, falling back to the
    row's number where the full name does not fit); the axes hold every error bar whole, with a
    margin. Each row's error bar carries the gid ``row-<number>``, its marker ``point-<number>``,
    its label ``label-<number>`` (tests find them by these). ``metric`` is the row key plotted
    upwards and its label (the task's primary metric; ``<key>_low``/``<key>_high`` its interval).
    """
    y_key, y_label = metric
    lo_key, hi_key = f"{y_key}_low", f"{y_key}_high"
    import matplotlib
    import matplotlib.ticker
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    methods = list(dict.fromkeys(r["method"] for r in rows))
    backbones = list(dict.fromkeys(r["backbone_label"] for r in rows))
    colours = {m: matplotlib.colormaps["tab10"](i % 10) for i, m in enumerate(methods)}
    markers = {b: "osD^vPX*"[i % 8] for i, b in enumerate(backbones)}
    numbered = list(enumerate(rows, start=1))  # numbers as the table's row order

    def style(r: dict[str, Any]) -> dict[str, Any]:
        colour = colours[r["method"]]
        return {"color": colour, "marker": markers[r["backbone_label"]], "markersize": 7, "markeredgecolor": colour,
                "markerfacecolor": "none" if r.get("stopped_by") == "budget" else colour}

    # The Agg canvas directly, not pyplot: drawing must not switch the backend of a notebook user.
    fig = Figure(figsize=(12, 5.2 + 0.25 * math.ceil(len(rows) / 3)), dpi=PLOT_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    labels: list[tuple[Any, list[tuple[float, float, float | None, float | None, str, str]]]] = []
    for ax, (key, xlabel) in zip(axes, PANELS, strict=True):
        shown = [(n, r) for n, r in numbered if r.get(key) is not None and r[key] > 0]
        for n, r in shown:
            low, high = r[lo_key], r[hi_key]
            yerr = None if low is None or high is None else [[max(0.0, r[y_key] - low)], [max(0.0, high - r[y_key])]]
            bars = ax.errorbar(r[key], r[y_key], yerr=yerr, linestyle="none", capsize=3, **style(r))
            for artist in bars.get_children():
                artist.set_gid(f"row-{n}")
            bars.lines[0].set_gid(f"point-{n}")  # the marker itself
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"test {y_label} (95% bootstrap interval)")
        ax.grid(True, which="both", alpha=0.3)
        if not shown:
            ax.text(0.5, 0.5, "not reported by these methods", ha="center", va="center", transform=ax.transAxes)
            continue
        points = [(r[key], r[y_key]) for _, r in shown]
        sign = 1.0 if higher_is_better else -1.0  # WER: lower is better
        front = [shown[i][1] for i in pareto_frontier([(x, sign * y) for x, y in points])]
        ax.plot([r[key] for r in front], [r[y_key] for r in front], "-", color="0.35", linewidth=1.2, zorder=0)
        ax.set_xscale("log")
        ax.set_xlim(*_log_limits([x for x, _ in points]))
        ax.set_ylim(*_limits([v for _, r in shown for v in (r[y_key], r[lo_key], r[hi_key]) if v is not None]))
        plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
        ax.xaxis.set_major_formatter(plain)
        lo, hi = ax.get_xlim()
        # few decades shown: label the minor ticks too (within one decade all of them, else 2 and 5)
        some = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else "")
        ax.xaxis.set_minor_formatter(plain if hi < 10 * lo else some if hi < 1000 * lo else matplotlib.ticker.NullFormatter())
        labels.append((ax, [(r[key], r[y_key], r[lo_key], r[hi_key], _point_label(r), str(n)) for n, r in shown]))

    handles = [Line2D([], [], linestyle="none", **style(r)) for _, r in numbered]
    names = [f"{n}  {r['method']} / {r['backbone_label']}" + (f"  ({fmt_training(r)})" if r.get("stopped_by") == "budget" else "")
             for n, r in numbered]
    handles.append(Line2D([], [], color="0.35", linewidth=1.2))
    names.append("Pareto frontier")
    if any(r.get("stopped_by") == "budget" for r in rows):
        handles.append(Line2D([], [], linestyle="none", marker="o", color="0.35", markerfacecolor="none"))
        names.append("hollow: stopped by --budget")
    fig.legend(handles, names, loc="outside lower center", ncols=min(3, len(names)), fontsize=8, frameon=False)
    if title:
        fig.suptitle(f"quality vs cost: {title}", fontsize=10)

    fig.canvas.draw()  # the layout engine places the axes once; labels are placed in that frame
    fig.set_layout_engine("none")
    renderer = fig.canvas.get_renderer()
    for ax, items in labels:
        _place_labels(ax, items, renderer)
    return fig


def _point_label(row: dict[str, Any]) -> str:
    text = f"{row['method']} / {row['backbone_label']}"
    if row.get("stopped_by") == "budget":
        text += f" ({fmt_training(row)})"
    return text.replace("$", r"\$")  # not mathtext


def _limits(values: list[float], *, margin: float = 0.08, least: float = 0.02) -> tuple[float, float]:
    """Axis limits holding every value with ``margin`` of the span (at least ``least``) on each side."""
    lo, hi = min(values), max(values)
    pad = margin * max(hi - lo, least)
    return lo - pad, hi + pad


def _log_limits(values: list[float]) -> tuple[float, float]:
    """As :func:`_limits` on a log axis: the margin in decades (at least a 0.3-decade span)."""
    lo, hi = _limits([math.log10(v) for v in values], margin=0.12, least=0.3)
    return 10**lo, 10**hi


# Where a label may go: (dx, dy) in pixels from its point, and its alignment. NEAR: beside the
# point; RINGS: further out, joined to the point by a thin leader line (only for the short label:
# a full name far from its point reads as another point's).
NEAR = [(8, 6, "left", "bottom"), (8, -6, "left", "top"), (-8, 6, "right", "bottom"), (-8, -6, "right", "top"),
        (0, 12, "center", "bottom"), (0, -12, "center", "top")]
RINGS = [
    (round(r * math.cos(a)), round(r * math.sin(a)), "left" if math.cos(a) > 0.3 else "right" if math.cos(a) < -0.3 else "center",
     "bottom" if math.sin(a) > 0.3 else "top" if math.sin(a) < -0.3 else "center")
    for r in (28, 48, 72) for a in (math.radians(d) for d in (30, -30, 150, -150, 90, -90, 0, 180))
]
# (label, spots, keep off the error bars), tried in this order
TRIES = (("full", NEAR, True), ("short", NEAR, True), ("short", RINGS, True), ("short", NEAR, False), ("short", RINGS, False))
LEADER_PX = 20  # a label further than this from its point gets a leader line


def _place_labels(ax: Any, items: list[tuple[float, float, float | None, float | None, str, str]], renderer: Any) -> None:
    """Label every point without overprinting: a simple deterministic collision avoidance.

    ``items``: (x, y, interval low, high, full label, short label). Points are taken left to
    right; each label goes to the first free spot of :data:`TRIES`: inside the axes, over no
    label placed before and no marker, and (at first) no error bar. The full name is tried only
    beside its point or just past its error bar's caps; then the short label (the row's number, which the legend names) beside it,
    on rings further out with a leader line, then over error bars. A label that fits nowhere
    takes the first spot.
    """
    from matplotlib.transforms import Bbox

    frame = ax.get_window_extent(renderer)
    pixels = [ax.transData.transform((x, y)) for x, y, *_ in items]
    markers = [Bbox.from_bounds(px - 5, py - 5, 10, 10) for px, py in pixels]
    bars, ends = [], []
    for (x, _, low, high, _, _), (px, py) in zip(items, pixels, strict=True):
        if low is not None and high is not None:
            y0, y1 = ax.transData.transform((x, low))[1], ax.transData.transform((x, high))[1]
            bars.append(Bbox.from_extents(px - 4, y0, px + 4, y1))  # the bar and its caps
            ends.append([(0, round(y1 - py) + 3, "center", "bottom"), (0, round(y0 - py) - 3, "center", "top")])
        else:
            ends.append([])
    placed: list[Any] = []

    def free(box: Any, avoid_bars: bool) -> bool:
        inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
        obstacles = placed + markers + (bars if avoid_bars else [])
        return inside and not any(box.overlaps(o) for o in obstacles)

    for i in sorted(range(len(items)), key=lambda i: (pixels[i][0], pixels[i][1])):
        x, y, _, _, full, short = items[i]
        text = ax.annotate(full, (x, y), textcoords="offset pixels", xytext=NEAR[0][:2], fontsize=8, annotation_clip=False,
                           ha=NEAR[0][2], va=NEAR[0][3])
        spot = None
        for which, spots, avoid_bars in TRIES:
            text.set_text(full if which == "full" else short)
            for dx, dy, ha, va in spots + (ends[i] if spots is NEAR else []):  # NEAR: also just past the bar's caps
                text.set_position((dx, dy))
                text.set_ha(ha)
                text.set_va(va)
                if free(text.get_window_extent(renderer), avoid_bars):
                    spot = (dx, dy, ha, va)
                    break
            if spot:
                break
        if spot is None:
            text.set_text(short)
        dx, dy, ha, va = spot or NEAR[0]
        text.set_position((dx, dy))
        text.set_ha(ha)
        text.set_va(va)
        if math.hypot(dx, dy) > LEADER_PX:
            ax.annotate("", (x, y), xytext=(dx, dy), textcoords="offset pixels", annotation_clip=False,
                        arrowprops={"arrowstyle": "-", "color": "0.5", "linewidth": 0.6, "shrinkA": 0, "shrinkB": 4})
        text.set_gid(f"label-{short}")
        placed.append(text.get_window_extent(renderer))
