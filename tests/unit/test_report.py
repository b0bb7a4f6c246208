"""The drift report: report.md, a self-contained report.html and deltas.png from a synthetic
``headstart drift`` result, with and without seeds, with empty sections, user text escaped."""

from __future__ import annotations

import base64
import copy
import re
from html.parser import HTMLParser

import pytest

from headstart.errors import BadInput
from headstart.report import write_drift_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MALICIOUS = "<script>alert('x')</script> & more"
VOID = {"meta", "img", "br", "hr", "link", "input"}


def _check(dataset, slice_, metric, old, new, ci, p, verdict, noise=None):
    return {"dataset": dataset, "slice": slice_, "metric": metric, "n": 3080, "old": old, "new": new,
            "delta": new - old, "ci": ci, "p": p, "test": "exact McNemar", "noise_floor": noise, "verdict": verdict}


def _result(*, seeds: bool = False, flips: bool = True) -> dict:
    noise = 0.004 if seeds else None
    classes = [("card_arrival", -0.05), ("top_up_failed", 0.03), ("lost_card", -0.21), ("pin_blocked", 0.0)]
    classes += [(f"class_{i:02d}", (i - 25) / 1000) for i in range(50)]
    return {
        "verdict": "regression",
        "old_run": "20261127-101010-minilm-l6-linear-probe-ab12cd",
        "new_run": "20261127-111111-paraphrase-minilm-l3-linear-probe-ef34ab",
        "old_base": {"name": "minilm-l6", "sha256": "53aa" + "0" * 60},
        "new_base": {"name": "paraphrase-minilm-l3", "sha256": "9f1c" + "1" * 60},
        "method": "linear-probe",
        "suite": {"name": "banking", "sha256": "77" * 32},
        "alpha": 0.05,
        "seeds": {"k": 3, "values": {"accuracy": [0.91, 0.912, 0.909]}, "noise_floor": {"accuracy": 0.004}} if seeds else None,
        "checks": [
            _check("test", "all", "accuracy", 0.929, 0.871, [-0.066, -0.050], 1.2e-30, "regression", noise),
            _check("test", "all", "macro_f1", 0.90, 0.902, [-0.004, 0.008], 0.214, "no significant change", noise),
            _check("test", "short", "accuracy", 0.95, 0.96, None, 3.1e-05, "improvement", noise),
        ],
        "per_class": [{"dataset": "test", "class": c, "n": 40, "old_f1": 0.9, "new_f1": 0.9 + d, "delta": d} for c, d in classes],
        "flips": [
            {"dataset": "test", "input": MALICIOUS, "label": "card_arrival", "old": "card_arrival", "new": "lost_card", "direction": "broke"},
            {"dataset": "test", "input": "x" * 500, "label": "lost_card", "old": "pin_blocked", "new": "lost_card", "direction": "fixed"},
            *({"dataset": "test", "input": f"broken {i}", "label": "a", "old": "a", "new": "b", "direction": "broke"} for i in range(30)),
        ] if flips else [],
        "created_at": "2026-11-27T23:40:00+0000",
    }


class _Strict(HTMLParser):
    """Records tags; fails on a close tag that does not match the open one."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()


def _parse(text: str) -> _Strict:
    parser = _Strict()
    parser.feed(text)
    parser.close()
    assert parser.stack == []
    return parser


@pytest.mark.parametrize("seeds", [False, True])
def test_writes_three_files(tmp_path, seeds):
    paths = write_drift_report(_result(seeds=seeds), tmp_path / "report")
    assert set(paths) == {"markdown", "html", "plot"}
    assert {p.name for p in paths.values()} == {"report.md", "report.html", "deltas.png"}
    assert all(p.is_file() for p in paths.values())
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["deltas.png", "report.html", "report.md"]  # no temps left
    assert paths["plot"].read_bytes().startswith(PNG_MAGIC)
    md = paths["markdown"].read_text(encoding="utf-8")
    assert ("Noise floor: the run was repeated with K = 3 seeds" in md) is seeds
    if seeds:
        assert "accuracy: 0.910, 0.912, 0.909 (range 0.3 pts; noise floor 0.4 pts)" in md


def test_html_is_self_contained_and_escaped(tmp_path):
    paths = write_drift_report(_result(seeds=True), tmp_path)
    text = paths["html"].read_text(encoding="utf-8")
    parser = _parse(text)
    assert "Verdict: regression" in text
    imgs = [attrs["src"] for tag, attrs in parser.tags if tag == "img"]
    assert len(imgs) == 1 and imgs[0].startswith("data:image/png;base64,")
    assert base64.b64decode(imgs[0].split(",", 1)[1]) == paths["plot"].read_bytes()
    assert not [t for t, a in parser.tags if t in {"script", "link"} or "href" in a]  # nothing external, no script
    assert "<script>" not in text and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in text
    assert "class_00" in text and "class_49" in text  # every per-class row in the HTML


def test_markdown_tables(tmp_path):
    md = write_drift_report(_result(), tmp_path)["markdown"].read_text(encoding="utf-8")
    assert "# Drift report: regression" in md
    assert "minilm-l6 (53aa00000000) -> paraphrase-minilm-l3 (9f1c11111111)" in md
    header = "| dataset | slice | metric | n | old | new | delta, pts [95% CI] | p (Holm) | test | noise floor, pts | verdict |"
    assert header in md
    assert "| test | all | accuracy | 3,080 | 0.929 | 0.871 | -5.8 [-6.6, -5.0] | 1.2e-30 | exact McNemar | n/a | regression |" in md
    assert "| 0.214 |" in md and "| 3.1e-05 |" in md
    assert "Seeds: not repeated" in md
    rows = re.findall(r"^\| test \| (\w+) \| 40 \|", md, flags=re.M)
    assert rows[0] == "lost_card" and rows[1] == "card_arrival"  # worst first
    assert len(rows) == 30 and "The 30 worst of 54 classes" in md
    assert re.search(r"(?<!\\)<", md) is None and "\\<script>" in md  # no raw HTML in the Markdown
    assert "x" * 199 + "\u2026" in md and "x" * 200 not in md
    assert "20 of 31 shown." in md and "broken 18" in md and "broken 19" not in md  # the script one was first


def test_empty_sections_say_none(tmp_path):
    result = _result(flips=False)
    result.update(per_class=[], checks=[])
    paths = write_drift_report(result, tmp_path)
    md = paths["markdown"].read_text(encoding="utf-8")
    for title in ("## Checks", "## Per-class F1", "## Flipped examples", "### Broke", "### Fixed"):
        assert re.search(re.escape(title) + r"[^\n]*\n\nnone\n", md), title
    _parse(paths["html"].read_text(encoding="utf-8"))
    assert paths["plot"].read_bytes().startswith(PNG_MAGIC)


def test_rewrite_replaces_and_bad_input_names_missing_keys(tmp_path):
    write_drift_report(_result(), tmp_path)
    improved = copy.deepcopy(_result())
    improved["verdict"] = "improvement"
    md = write_drift_report(improved, tmp_path)["markdown"].read_text(encoding="utf-8")
    assert "# Drift report: improvement" in md
    with pytest.raises(BadInput, match="lacks verdict, checks"):
        write_drift_report({"old_base": {}, "new_base": {}}, tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()


def _sections(text: str, pattern: str) -> list[str]:
    return re.findall(pattern, text, flags=re.M)


def test_verdict_and_summaries_come_before_the_detail(tmp_path):
    paths = write_drift_report(_result(seeds=True), tmp_path)
    md = paths["markdown"].read_text(encoding="utf-8")
    order = ["Summary", "Checks", "Deltas", "Per-slice checks", "Per-class F1", "Flipped examples"]
    assert [t for t in _sections(md, r"^## (.+)$")] == order
    assert md.index("**Verdict: regression**") < md.index("## Summary")
    # what decided the verdict is said under it, before any table
    assert ("Overall (slice 'all'): accuracy -5.8 pts (regression), macro_f1 +0.2 pts (no significant change).\n\n"
            "1 slice check: 0 regressions, 1 improvement; secondary: they decide the verdict only with strict slices.") in md
    checks = md[md.index("## Checks"): md.index("## Deltas")]
    slices = md[md.index("## Per-slice checks"): md.index("## Per-class F1")]
    assert re.findall(r"^\| test \| (\w+) \|", checks, flags=re.M) == ["all", "all"]  # the overall checks only
    assert re.findall(r"^\| test \| (\w+) \|", slices, flags=re.M) == ["short"]

    text = paths["html"].read_text(encoding="utf-8")
    parser = _parse(text)
    ids = [a["id"] for t, a in parser.tags if t in ("p", "section") and "id" in a]
    assert ids == ["verdict", "summary", "checks", "deltas", "per-slice-checks", "per-class-f1", "flipped-examples",
                   "flips-broke", "flips-fixed"]
    # the detail tables sit in closed <details>, the summaries' tables do not
    sections = dict(re.findall(r'<section id="([\w-]+)">(.*?)</section>', text, flags=re.S))
    for name in ("per-slice-checks", "per-class-f1", "flips-broke", "flips-fixed"):
        assert re.search(r"<details>\s*<summary>show the \d+ rows?</summary>\s*<table>", sections[name]), name
        assert "<details open" not in sections[name]
    for name in ("summary", "checks"):
        assert "<table>" in sections[name] and "<details>" not in sections[name], name


def test_slice_checks_flagged_first_and_cut_in_markdown(tmp_path):
    result = _result()
    many = [_check("test", f"label=c{i:02d}", "accuracy", 0.9, 0.9 + (i - 20) / 100, None, 0.5, "no significant change")
            for i in range(40)]
    many.insert(25, _check("test", "label=flagged", "accuracy", 0.9, 0.95, None, 0.001, "improvement"))
    many.insert(30, _check("test", "label=broken", "accuracy", 0.9, 0.5, None, 0.001, "regression"))
    result["checks"] += many
    paths = write_drift_report(result, tmp_path)
    md = paths["markdown"].read_text(encoding="utf-8")
    slices = re.findall(r"^\| test \| ([\w=]+) \|", md[md.index("## Per-slice checks"): md.index("## Per-class F1")], flags=re.M)
    assert slices[:4] == ["label=broken", "short", "label=flagged", "label=c00"]  # flagged first, each by delta, worst first
    assert len(slices) == 30 and "The first 30 of 43 slice checks; report.html lists all." in md
    assert "label=c39" in paths["html"].read_text(encoding="utf-8")


def test_long_words_may_break_in_html_cells_short_ones_not(tmp_path):
    result = _result()
    result["per_class"][0]["class"] = "a_label_name_that_is_much_longer_than_any_column"
    text = write_drift_report(result, tmp_path)["html"].read_text(encoding="utf-8")
    assert '<td class="long">a_label_name_that_is_much_longer_than_any_column</td>' in text
    assert '<td class="num">0.929</td>' in text and "<td>accuracy</td>" in text
