"""Every HTML report headstart writes, opened in a real headless Chromium at a 1280 x 800
viewport: what a reader sees first.

The only HTML report is the drift report (``report.html``, also what ``watch`` writes per
changed run). It is built here from a real ``drift`` of a tiny random BERT onto a deliberately
broken copy, on 12 labels with long names (long cells: the case that made the checks table wider
than the page), then checked in the browser: no horizontal scrolling, the verdict in the first
viewport, summaries before the per-slice detail, the detail collapsed. A screenshot of each view
is saved in the test's tmp folder (paths printed; ``pytest -s`` shows them).

Needs Debian's ``chromium`` (``/usr/bin/chromium``) and the ``playwright`` package (its own
browser download is not used). Without them the test skips, unless ``CI`` is set: CI installs
chromium, so there a missing browser is a failure.
"""

from __future__ import annotations

import csv
import os
import random
import shutil
from pathlib import Path

import pytest

from headstart.backbones.testing import break_token_embeddings

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1280, "height": 800}
LABELS = [f"customer_request_category_{i:02d}_with_a_long_name" for i in range(12)]


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must install it (apt-get install -y chromium; pip install playwright)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        _missing(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed (pip install playwright; no `playwright install` needed)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport=VIEWPORT)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def drift_report(tmp_path, tiny_bert) -> Path:
    """report.html of a real drift (linear probe, 12 labels, one key word each) onto a broken base."""
    import headstart as hs
    from headstart.backbones.testing import VOCAB
    from headstart.evaluate.drift import drift

    words = [w for w in VOCAB if not w.startswith("[")]
    filler, keys = words[:19], words[19:19 + len(LABELS)]
    rng = random.Random(0)
    data = tmp_path / "train.csv"
    with open(data, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for i in range(30 * len(LABELS)):
            writer.writerow([" ".join([*rng.sample(filler, 3), keys[i % len(LABELS)]]), LABELS[i % len(LABELS)]])
    base = Path(shutil.copytree(tiny_bert, tmp_path / "base"))
    broken = Path(shutil.copytree(tiny_bert, tmp_path / "broken"))
    break_token_embeddings(broken)
    run = hs.adapt(data, backbone=str(base), out=tmp_path / "runs")
    res = drift(run.id, str(broken), out=tmp_path / "runs", report=tmp_path / "report")
    assert res.verdict == "regression"
    assert sum(c["slice"].startswith("label=") for c in res.result["checks"]) == len(LABELS)
    return res.report["html"]


def _box(page, selector: str) -> dict:
    box = page.locator(selector).first.bounding_box()
    assert box is not None, f"{selector} is not rendered"
    return box


def _no_horizontal_scroll(page) -> None:
    width, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width <= inner == VIEWPORT["width"], f"page is {width}px wide in a {inner}px viewport"


def test_drift_report_in_a_browser(page, drift_report, tmp_path):
    page.goto(drift_report.resolve().as_uri())
    assert page.title() == "Drift report: regression"

    # The first screen: the verdict, whole and inside the viewport, without scrolling either way.
    _no_horizontal_scroll(page)
    verdict = page.locator("#verdict")
    assert verdict.is_visible() and verdict.inner_text() == "Verdict: regression"
    box = _box(page, "#verdict")
    assert box["x"] >= 0 and box["y"] >= 0
    assert box["x"] + box["width"] <= VIEWPORT["width"] and box["y"] + box["height"] <= VIEWPORT["height"]
    assert "Overall (slice 'all'): accuracy" in page.locator("p.reason").first.inner_text()

    # Sections in reading order: summaries first, then the detail.
    order = ["#verdict", "#summary", "#checks", "#deltas", "#per-slice-checks", "#per-class-f1", "#flipped-examples"]
    tops = [_box(page, s)["y"] for s in order]
    assert tops == sorted(tops), dict(zip(order, tops, strict=True))

    # The checks table's verdict column is on the page, and the overall rows say regression.
    last_head = page.locator("#checks th").last
    assert last_head.inner_text() == "verdict"
    head_box = _box(page, "#checks th:last-child")
    assert head_box["x"] + head_box["width"] <= VIEWPORT["width"]
    assert page.locator("#checks tbody tr td:last-child").all_inner_texts() == ["regression", "regression"]

    # The per-label detail is collapsed: its rows are in the page but not shown until asked for.
    assert page.locator("#per-slice-checks details").count() == 1
    assert not page.locator("#per-slice-checks table").is_visible()
    assert not page.locator("#per-class-f1 table").is_visible()
    assert page.locator("#per-slice-checks summary").inner_text() == f"show the {len(LABELS)} rows"
    first = tmp_path / "report-first-screen.png"
    page.screenshot(path=str(first))
    print(f"screenshot: {first}")

    # Opened, the long label names wrap inside the table: still no horizontal scrolling.
    page.locator("#per-slice-checks summary").click()
    assert page.locator("#per-slice-checks table").is_visible()
    for details in page.locator("details").all():
        details.evaluate("d => d.open = true")
    _no_horizontal_scroll(page)
    for section in ("#per-slice-checks", "#per-class-f1"):
        last = _box(page, f"{section} th:last-child")
        assert last["x"] + last["width"] <= VIEWPORT["width"], section
    assert page.locator("#per-slice-checks tbody tr").count() == len(LABELS)
    full = tmp_path / "report-expanded.png"
    page.screenshot(path=str(full), full_page=True)
    print(f"screenshot: {full}")
    assert first.stat().st_size > 10_000 and full.stat().st_size > first.stat().st_size
