"""``compare``: every method x backbone on the same split, a table with intervals and costs, a
comparison folder written whole and recorded in the store; bad input is one line and leaves
nothing behind. Also the helpers it needs: peak memory, durations, the Pareto frontier."""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
from pathlib import Path

import pytest

from headstart import api
from headstart._util import parse_duration, peak_rss
from headstart.compare import Comparison, SplitMismatch, compare, frontier_figure, pareto_frontier, parse_set_options
from headstart.errors import BadInput
from headstart.runs import Store

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
COMPARISON_FILES = {"comparison.json", "table.md", "frontier.png"}


@pytest.fixture(scope="module")
def second_bert(tiny_bert, tmp_path_factory) -> Path:
    """The tiny BERT under another folder name: a second backbone at no build cost."""
    dest = tmp_path_factory.mktemp("backbones2") / "tiny-bert-copy"
    shutil.copytree(tiny_bert, dest)
    return dest


@pytest.fixture(scope="module")
def compared(tmp_path_factory, tiny_bert, second_bert, data_helpers):
    """One comparison of linear-probe on two backbones; read-only for the tests that use it."""
    sentiment_rows, write_table = data_helpers

    root = tmp_path_factory.mktemp("compare")
    data = write_table(root / "train.csv", sentiment_rows(40))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HEADSTART_HOME", str(root / "home"))
        mp.setenv("HEADSTART_PROGRESS", "0")
        mp.delenv("HEADSTART_STORE", raising=False)
        mp.delenv("HEADSTART_CACHE", raising=False)
        result = compare(
            data, methods=["linear-probe"], backbones=[str(tiny_bert), str(second_bert)],
            method_options={"linear-probe": {"Cs": [0.1, 1.0, 10.0]}}, out=root / "comparisons", runs_out=root / "runs",
            store=root / "store.sqlite3",
        )
    return result, root, data


# -- the result and its folder -----------------------------------------------------------------


def test_compare_returns_one_row_per_backbone_and_method(compared, tiny_bert, second_bert):
    from transformers import AutoModel

    body_params = sum(p.numel() for p in AutoModel.from_pretrained(tiny_bert).parameters())
    result, root, _ = compared
    assert isinstance(result, Comparison)
    assert [(r["method"], r["backbone"]) for r in result.rows] == [
        ("linear-probe", str(tiny_bert)), ("linear-probe", str(second_bert))
    ]
    for r in result.rows:
        assert Path(r["run_path"]).parent == root / "runs"
        manifest = json.loads((Path(r["run_path"]) / "manifest.json").read_text())
        assert manifest["id"] == r["run_id"]
        assert manifest["method"]["config"]["Cs"] == [0.1, 1.0, 10.0]  # the per-method options reached adapt
        assert r["accuracy"] == manifest["metrics"]["test"]["summary"]["accuracy"]
        assert r["macro_f1"] == manifest["metrics"]["test"]["summary"]["macro_f1"]
        assert 0.0 <= r["accuracy_low"] <= r["accuracy"] <= r["accuracy_high"] <= 1.0
        assert 0.0 <= r["macro_f1_low"] <= r["macro_f1"] <= r["macro_f1_high"] <= 1.0
        fit = manifest["method"]["fit"]
        assert r["trainable_params"] == fit["trainable_params"] == 2 * (32 + 1)
        # the second backbone has the first's weights, so its features came from the cache and the probe
        # never loaded it: compare then counts the frozen parameters from the weight files
        assert r["total_params"] == fit["trainable_params"] + (fit["frozen_params"] or body_params)
        assert r["trainable_pct"] == pytest.approx(100 * r["trainable_params"] / r["total_params"])
        assert r["wall_s"] > 0 and r["peak_rss_mb"] > 0
        assert r["n_test"] == manifest["data"]["split"]["test"] == 8
    assert result.frontier and all(r["on_frontier"] for r in result.frontier)


def test_comparison_folder_holds_table_plot_and_json(compared):
    result, root, data = compared
    assert result.path.parent == root / "comparisons"
    assert sorted(p.name for p in (root / "comparisons").iterdir()) == [result.id]  # no temporary folder left
    assert {p.name for p in result.path.iterdir()} == COMPARISON_FILES
    assert (result.path / "frontier.png").read_bytes()[:8] == PNG_MAGIC
    assert (result.path / "frontier.png").stat().st_size > 10_000

    saved = json.loads((result.path / "comparison.json").read_text())
    assert saved["id"] == result.id and saved["format"] == "headstart.comparison/1"
    assert saved["path"] == str(result.path)
    assert [r["run_id"] for r in saved["rows"]] == result.run_ids
    assert saved["inputs"]["methods"] == ["linear-probe"] and saved["inputs"]["seed"] == 0
    assert saved["data"]["split"] == {"train": 28, "val": 4, "test": 8}
    assert saved["frontier"] == [r["run_id"] for r in result.frontier]

    table = (result.path / "table.md").read_text()
    assert table == result.to_markdown()
    header = table.splitlines()[2]
    for needle in (str(data), "28 train / 4 validation / 8 test", "seed 0", time.strftime("%Y-")):
        assert needle in header, (needle, header)
    rows = [line for line in table.splitlines() if line.startswith("| ") and "linear-probe" in line]
    assert len(rows) == 2
    assert "tiny-bert" in rows[0] and "tiny-bert-copy" in rows[1]
    assert "%" in rows[0] and " MB" in rows[0] and "[" in rows[0]


def test_store_records_the_comparison(compared):
    result, root, _ = compared
    store = Store(root / "store.sqlite3")
    [row] = store.list_comparisons()
    assert row["id"] == result.id
    assert Path(row["path"]) == result.path.resolve()
    assert row["run_ids"] == result.run_ids
    assert [r["run_id"] for r in row["rows"]] == result.run_ids
    assert row["data_fingerprint"] == result.data["fingerprint"]
    assert store.find_comparison(result.id[:15])["id"] == result.id
    assert store.find_comparison("nope") is None
    assert {r["id"] for r in store.runs()} == set(result.run_ids)  # the runs are ordinary runs


def test_text_table_is_aligned(compared):
    result, _, _ = compared
    lines = result.to_text().splitlines()
    assert lines[0] == f"comparison {result.id}"
    table = lines[2:5]
    assert "method" in table[0] and "test accuracy" in table[0]
    assert len({len(line) for line in table}) <= 2  # right-aligned numeric columns end together
    assert table[1].index("linear-probe") == table[2].index("linear-probe")
    assert lines[-1].startswith(f"saved to {result.path}")


# -- the split every method sees ---------------------------------------------------------------


def _wrap_adapt(monkeypatch, change):
    """Replace api.adapt with one that lets ``change(call_number, options)`` alter or fail a call."""
    real = api.adapt
    calls = []

    def wrapped(data, **options):
        calls.append(options)
        change(len(calls), options)
        return real(data, **options)

    monkeypatch.setattr(api, "adapt", wrapped)
    return calls


def test_different_splits_are_refused(monkeypatch, tmp_path, tiny_bert, second_bert, train_csv):
    def second_sees_more_test(n, options):
        if n == 2:
            options["test_fraction"] = 0.3

    _wrap_adapt(monkeypatch, second_sees_more_test)
    with pytest.raises(SplitMismatch) as err:
        compare(train_csv, methods=["linear-probe"], backbones=[str(tiny_bert), str(second_bert)], out=tmp_path / "cmp")
    message = str(err.value)
    assert "\n" not in message
    assert "different split" in message and "tiny-bert-copy" in message and "stay in the store" in message
    assert not (tmp_path / "cmp").exists() or not any((tmp_path / "cmp").iterdir())
    assert Store().list_comparisons() == []
    assert len(Store().runs()) == 2


def test_a_failing_run_names_method_and_backbone_and_writes_no_comparison(monkeypatch, tmp_path, tiny_bert, second_bert, train_csv):
    def fail_second(n, options):
        if n == 2:
            raise BadInput("something about the data\nover two lines")

    _wrap_adapt(monkeypatch, fail_second)
    with pytest.raises(BadInput) as err:
        compare(train_csv, methods=["linear-probe"], backbones=[str(tiny_bert), str(second_bert)], out=tmp_path / "cmp")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("compare: linear-probe on tiny-bert-copy failed: something about the data over two lines")
    [kept] = Store().runs()
    assert kept["id"] in message and "stay in the store" in message and "no comparison was written" in message
    assert not (tmp_path / "cmp").exists() or not any((tmp_path / "cmp").iterdir())
    assert Store().list_comparisons() == []


def test_a_crash_keeps_its_traceback_and_says_what_was_kept(monkeypatch, tmp_path, tiny_bert, second_bert, train_csv):
    def crash_second(n, options):
        if n == 2:
            raise RuntimeError("CUDA out of memory")

    _wrap_adapt(monkeypatch, crash_second)
    with pytest.raises(RuntimeError, match="CUDA out of memory") as err:
        compare(train_csv, methods=["linear-probe"], backbones=[str(tiny_bert), str(second_bert)], out=tmp_path / "cmp")
    [note] = err.value.__notes__
    assert "linear-probe on tiny-bert-copy failed" in note and Store().runs()[0]["id"] in note
    assert Store().list_comparisons() == []


# -- bad input: one line, nothing written ------------------------------------------------------


def _bad(tmp_path, train_csv, **overrides) -> str:
    options = {"methods": ["linear-probe"], "backbones": ["minilm-l6"], "out": tmp_path / "cmp", "runs_out": tmp_path / "runs"}
    options.update(overrides)
    data = options.pop("data", train_csv)
    with pytest.raises(BadInput) as err:
        compare(data, **options)
    message = str(err.value)
    assert "\n" not in message
    for folder in ("cmp", "runs"):
        assert not (tmp_path / folder).exists()
    assert Store().runs() == [] and Store().list_comparisons() == []
    return message


def test_unknown_method_is_named_with_a_suggestion(tmp_path, train_csv, tiny_bert):
    message = _bad(tmp_path, train_csv, methods=["linear-prob"], backbones=[str(tiny_bert)])
    assert message.startswith("--methods: unknown method 'linear-prob'.")
    assert "Did you mean 'linear-probe'?" in message and "Available: " in message


def test_duplicates_and_empty_lists_are_refused(tmp_path, train_csv, tiny_bert):
    assert "--methods lists 'linear-probe' twice" in _bad(
        tmp_path, train_csv, methods=["linear-probe", "linear-probe"], backbones=[str(tiny_bert)]
    )
    assert "--backbones lists" in _bad(tmp_path, train_csv, backbones=[str(tiny_bert), str(tiny_bert)])
    assert "--methods is empty" in _bad(tmp_path, train_csv, methods=[])
    assert "--methods is empty" in _bad(tmp_path, train_csv, methods=" , ")


def test_every_problem_is_reported_at_once(tmp_path, train_csv, tiny_bert):
    message = _bad(
        tmp_path, train_csv, methods=["lora-ish", "linear-probe"], backbones=["minilm-l7", str(tiny_bert)],
        method_options={"linear-probe": {"CC": 1}, "finetune": {"lr": 1e-5}}, precision="fp16", seed=-1, budget="10x",
    )
    for needle in (
        "unknown method 'lora-ish'",
        "unknown backbone 'minilm-l7'",
        "no option 'CC'",
        "--set finetune.*: 'finetune' is not among --methods",
        "--precision 'fp16'",
        "--seed must be an integer from 0 to 2**63-1",
        "--budget '10x': use a number with s, m or h, e.g. 10m",
    ):
        assert needle in message, (needle, message)


def test_data_and_modality_problems_are_found_before_any_run(tmp_path, train_csv, tiny_vit, tiny_bert):
    assert "no such file or folder" in _bad(tmp_path, train_csv, data=tmp_path / "missing.csv", backbones=[str(tiny_bert)])
    message = _bad(tmp_path, train_csv, backbones=[str(tiny_bert), str(tiny_vit)])
    assert message.startswith("--backbones: backbone") and "takes image" in message
    assert "--test" in _bad(tmp_path, train_csv, backbones=[str(tiny_bert)], test=tmp_path / "nope.csv")


def test_budget_is_checked(tmp_path, train_csv, tiny_bert):
    assert "--budget '10x': use a number with s, m or h, e.g. 10m" in _bad(
        tmp_path, train_csv, backbones=[str(tiny_bert)], budget="10x"
    )


def test_budget_is_passed_to_adapt_when_given(monkeypatch, tmp_path, tiny_bert, train_csv):
    seen = []

    def fake_adapt(data, *, budget=None, **options):  # stands in for an adapt(budget=)
        seen.append(budget)
        raise BadInput("stop here")

    monkeypatch.setattr(api, "adapt", fake_adapt)
    with pytest.raises(BadInput, match="No run had finished"):
        compare(train_csv, methods=["linear-probe"], backbones=[str(tiny_bert)], budget="2m", out=tmp_path / "cmp")
    assert seen == [120.0]


# -- helpers -----------------------------------------------------------------------------------


def test_pareto_frontier():
    points = [(10.0, 0.80), (1.0, 0.70), (5.0, 0.90), (2.0, 0.60), (5.0, 0.90), (20.0, 0.85)]
    assert pareto_frontier(points) == [1, 2, 4]  # (2, .6) and the slower, worse ones are dominated; ties stay
    assert pareto_frontier([]) == []
    assert pareto_frontier([(3.0, 0.5)]) == [0]


def _resident_block(mb: int):
    """`mb` MiB of fresh pages the kernel has to map in: an anonymous mmap touched page by page. A numpy
    array is not enough late in a long test session, where the allocator hands back pages it already holds
    (CI saw a 200 MB np.ones leave RSS unchanged)."""
    import mmap

    block = mmap.mmap(-1, mb * 1024 * 1024)
    for offset in range(0, len(block), mmap.PAGESIZE):
        block[offset] = 1
    return block


def test_peak_rss_sees_a_200_mb_allocation():
    with peak_rss() as mem:
        block = _resident_block(200)
        block.close()
    assert mem.peak_mb - mem.start_mb >= 150, mem
    assert mem.delta_mb >= 150
    if sys.platform.startswith("linux"):
        assert mem.how in ("hwm", "sampled")


def test_peak_rss_nested_blocks_keep_the_outer_peak():
    with peak_rss() as outer:
        block = _resident_block(200)
        block.close()
        with peak_rss() as inner:  # on Linux this resets the kernel's counter
            pass
    assert inner.delta_mb < 100
    assert outer.delta_mb >= 150, outer


def test_peak_rss_falls_back_to_sampling(monkeypatch):
    import headstart._util as util

    if util._statm_rss_mb() is None:
        pytest.skip("no /proc/self/statm here")
    monkeypatch.setattr(util, "_reset_hwm", lambda: False)
    with peak_rss() as mem:
        block = _resident_block(200)
        time.sleep(0.05)  # the sampler reads every 10 ms
        block.close()
    assert mem.how == "sampled"
    assert mem.delta_mb >= 150, mem


def test_peak_rss_falls_back_to_the_process_lifetime_peak(monkeypatch):
    import headstart._util as util

    monkeypatch.setattr(util, "_statm_rss_mb", lambda: None)
    with peak_rss() as mem:
        pass
    assert mem.how == "lifetime" and mem.peak_mb > 0


@pytest.mark.parametrize("text, seconds", [("90s", 90.0), ("10m", 600.0), ("1h", 3600.0), ("1.5h", 5400.0), (" 2M ", 120.0), (".5m", 30.0)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["10x", "10", "", "m", "-5m", "0s", "1e3s", "10 minutes"])
def test_parse_duration_rejects_with_one_line(text):
    with pytest.raises(BadInput) as err:
        parse_duration(text)
    assert str(err.value) == f"--budget {text!r}: use a number with s, m or h, e.g. 10m"


def test_parse_set_options():
    assert parse_set_options(["linear-probe.C=0.5", "linear-probe.Cs=[1,10]", "lora.rank=8", "lora.targets=query"]) == {
        "linear-probe": {"C": 0.5, "Cs": (1, 10)}, "lora": {"rank": 8, "targets": "query"}
    }
    for bad in ("C=0.5", "linear-probe.C", ".C=1", "linear-probe.=1"):
        with pytest.raises(BadInput, match="expected METHOD.KEY=VALUE, e.g. --set linear-probe.C=0.5"):
            parse_set_options([bad])


# -- the command line --------------------------------------------------------------------------


@pytest.fixture
def compare_cli(cli):
    """``compare_cli(*argv)`` runs ``headstart compare ...`` through the real entry point."""

    def run(*argv):
        return cli("compare", *argv)

    return run


def test_cli_prints_the_table_and_the_folder(compare_cli, tmp_path, tiny_bert, train_csv):
    r = compare_cli(train_csv, "--backbones", tiny_bert, "--set", "linear-probe.C=1.0", "--out", tmp_path / "cmp",
                    "--store", tmp_path / "s.sqlite3")
    assert r.rc == 0, r
    lines = r.out.splitlines()
    assert lines[0].startswith("comparison ") and "linear-probe" in r.out and "tiny-bert" in r.out
    cid = lines[0].split()[1]
    assert lines[-1].startswith(f"saved to {tmp_path / 'cmp' / cid}")
    assert {p.name for p in (tmp_path / "cmp" / cid).iterdir()} == COMPARISON_FILES
    assert [c["id"] for c in Store(tmp_path / "s.sqlite3").list_comparisons()] == [cid]


def test_cli_json_is_one_object(compare_cli, tmp_path, tiny_bert, train_csv):
    r = compare_cli(train_csv, "--methods", "linear-probe", "--backbones", tiny_bert, "--set", "linear-probe.C=1.0",
                    "--out", tmp_path / "cmp", "--json")
    assert r.rc == 0, r
    out = r.json()
    assert out["format"] == "headstart.comparison/1" and Path(out["path"]).is_dir()
    [row] = out["rows"]
    assert row["method"] == "linear-probe" and row["trainable_params"] == 66
    assert out["frontier"] == [row["run_id"]]
    assert json.loads((Path(out["path"]) / "comparison.json").read_text())["rows"] == out["rows"]


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["--budget", "10x"], ["--budget '10x': use a number with s, m or h, e.g. 10m"]),
        (["--set", "C=0.5"], ["--set 'C=0.5': expected METHOD.KEY=VALUE"]),
        (["--set", "C=0.5", "--methods", "linear-probe,nope"], ["--set 'C=0.5'", "unknown method 'nope'"]),
        (["--methods", "linear-probe,linear-probe"], ["--methods lists 'linear-probe' twice"]),
        (["--set", "lora.r=8"], ["--set lora.*: 'lora' is not among --methods"]),
    ],
)
def test_cli_bad_input_is_one_line_and_writes_nothing(compare_cli, assert_bad_input, tmp_path, tiny_bert, train_csv, argv, needles):
    r = compare_cli(train_csv, "--backbones", tiny_bert, "--out", tmp_path / "cmp", "--runs-out", tmp_path / "runs", *argv)
    assert_bad_input(r, *needles, out_dir=tmp_path / "cmp")
    assert not (tmp_path / "runs").exists()
    assert Store().runs() == [] and Store().list_comparisons() == []


def test_cli_help_lists_the_options(cli):
    from headstart.methods import get_method

    r = cli("compare", "--help")
    assert r.rc == 0
    help_text = r.out
    for option in ("--methods", "--backbones", "--set METHOD.KEY=VALUE", "--budget", "--runs-out", "--test", "--seed", "--json"):
        assert option in help_text, option
    words = " ".join(help_text.split())  # argparse re-wraps the description
    assert "95% bootstrap intervals" in words and "count and % of" in words
    # every --set example in the help is an option its method takes (lora's is rank, not r)
    flat = " ".join(re.sub(r"-\n\s+", "-", help_text).split())
    examples = re.findall(r"--set ([a-z][a-z-]*)\.(\w+)=([\w.]+)", flat)
    assert ("lora", "rank", "8") in examples and ("linear-probe", "C", "0.5") in examples
    for method, key, value in examples:
        get_method(method).from_options({key: json.loads(value)})


def test_no_help_prints_a_doubled_percent(cli):
    """argparse %-formats argument help (where % is written %%) but not descriptions: a %% there is printed as is."""
    from headstart.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.choices and "compare" in a.choices)
    for command in sub.choices:
        r = cli(command, "--help")
        assert r.rc == 0 and "%%" not in r.out, command
    assert "95% bootstrap intervals" in cli("eval", "--help").out.replace("\n", " ")


# -- runs the budget stopped -------------------------------------------------------------------


def test_rows_the_budget_stopped_say_so(tmp_path, tiny_bert, train_csv):
    """A run stopped by --budget shows "budget: N/M steps" in the text table, table.md and the plot's
    labels; M is the trainer's planned count (checked against a run that finished its epochs)."""
    options = {"lora": {"epochs": 1}, "linear-probe": {"Cs": [1.0]}}
    common = {"methods": ["lora", "linear-probe"], "backbones": [str(tiny_bert)], "method_options": options}
    done = compare(train_csv, out=tmp_path / "done", **common)
    lora, probe = done.rows
    assert lora["stopped_by"] == "epochs" and lora["steps"] == lora["planned_steps"] == 2  # ceil(28 train / 16) x 1 epoch
    assert probe["steps"] is None and probe["planned_steps"] is None
    assert "training" not in done.to_text().splitlines()[2]  # nothing to mark: the usual table, no column for it
    assert "budget:" not in done.to_text() and "budget:" not in done.to_markdown() and "planned steps" not in done.legend()

    stopped = compare(train_csv, out=tmp_path / "stopped", budget=1e-6, **common)
    lora, probe = stopped.rows
    assert lora["stopped_by"] == "budget" and lora["steps"] == 0 and lora["planned_steps"] == 2
    text = stopped.to_text().splitlines()
    head = next(line for line in text if "method" in line and "training" in line)
    lora_line = next(line for line in text if line.lstrip("* ").startswith("lora"))
    probe_line = next(line for line in text if line.lstrip("* ").startswith("linear-probe"))
    assert "budget: 0/2 steps" in lora_line and "budget" not in probe_line
    assert lora_line.index("budget: 0/2 steps") == head.index("training")  # in its own, aligned column
    md = (stopped.path / "table.md").read_text()
    assert re.search(r"^\|[ *]*\| lora \| tiny-bert \| budget: 0/2 steps \|", md, flags=re.M), md
    assert re.search(r"^\|[ *]*\| linear-probe \| tiny-bert \| - \|", md, flags=re.M), md
    assert "--budget stopped the training after N of its M planned steps" in md
    assert json.loads((stopped.path / "comparison.json").read_text())["rows"][0]["stopped_by"] == "budget"

    fig = frontier_figure(stopped.rows)
    labels = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "lora / tiny-bert (budget: 0/2 steps)" in labels or "1" in labels
    assert "1  lora / tiny-bert  (budget: 0/2 steps)" in [t.get_text() for t in fig.legends[0].get_texts()]


# -- the frontier plot -------------------------------------------------------------------------


def _plot_row(method, backbone, acc, low, high, wall, pct, stopped=None, steps=None, planned=None):
    return {"method": method, "backbone_label": backbone, "accuracy": acc, "accuracy_low": low, "accuracy_high": high,
            "wall_s": wall, "trainable_pct": pct, "stopped_by": stopped, "steps": steps, "planned_steps": planned,
            "on_frontier": False}


PLOT_ROWS = [  # four runs the budget stopped after 1-3 of 30 steps, crowded together, and some that finished
    _plot_row("linear-probe", "minilm-l6", 0.62, 0.52, 0.72, 1.9, 0.2),
    _plot_row("lora", "minilm-l6", 0.60, 0.50, 0.70, 2.1, 1.3, "budget", 3, 30),
    _plot_row("qlora", "minilm-l6", 0.60, 0.50, 0.70, 2.2, 1.3, "budget", 2, 30),
    _plot_row("adapter", "minilm-l6", 0.61, 0.51, 0.71, 2.0, 2.5, "budget", 1, 30),
    _plot_row("finetune", "minilm-l6", 0.60, 0.50, 0.70, 2.3, 100.0, "budget", 3, 30),
    _plot_row("linear-probe", "mpnet-base", 0.66, 0.56, 0.76, 3.1, 0.1),
    _plot_row("lora", "mpnet-base", 0.97, 0.93, 1.0, 40.0, 0.8, "epochs", 30, 30),
    _plot_row("scratch", "mpnet-base", 0.30, 0.20, 0.41, 35.0, 100.0, "epochs", 30, 30),
]


def test_frontier_plot_colours_labels_and_limits(tmp_path):
    from matplotlib.colors import to_rgba

    fig = frontier_figure(PLOT_ROWS, title="test")
    renderer = fig.canvas.get_renderer()
    axes = fig.axes
    assert len(axes) == 2

    # one colour per method, the same in both panels and in the legend; hollow when the budget stopped it
    legend = fig.legends[0]
    names = [t.get_text() for t in legend.get_texts()]
    for n, row in enumerate(PLOT_ROWS, start=1):
        handle = legend.legend_handles[n - 1]
        colour = to_rgba(handle.get_color())
        assert names[n - 1].startswith(f"{n}  {row['method']} / {row['backbone_label']}")
        for ax in axes:
            [marker] = [line for line in ax.lines if line.get_gid() == f"point-{n}"]
            assert to_rgba(marker.get_color()) == colour, (n, ax.get_xlabel())
            assert (marker.get_markerfacecolor() == "none") is (row["stopped_by"] == "budget")
    same_method = [to_rgba(legend.legend_handles[i].get_color()) for i, r in enumerate(PLOT_ROWS) if r["method"] == "lora"]
    assert len(set(same_method)) == 1 and len({to_rgba(h.get_color()) for h in legend.legend_handles[:len(PLOT_ROWS)]}) == 6
    assert "2  lora / minilm-l6  (budget: 3/30 steps)" in names and "hollow: stopped by --budget" in names

    # every error bar inside its axes, with a margin; every point inside on x too
    for ax, key in zip(axes, ("wall_s", "trainable_pct"), strict=True):
        low, high = ax.get_ylim()
        assert low < min(r["accuracy_low"] for r in PLOT_ROWS) - 0.01 and high > max(r["accuracy_high"] for r in PLOT_ROWS) + 0.01
        left, right = ax.get_xlim()
        assert left < min(r[key] for r in PLOT_ROWS) / 1.1 and right > max(r[key] for r in PLOT_ROWS) * 1.1

    # one label per point, inside its axes, none overprinting another (or a marker)
    for ax in axes:
        frame = ax.get_window_extent(renderer)
        labels = [t for t in ax.texts if (t.get_gid() or "").startswith("label-")]
        assert sorted(t.get_gid() for t in labels) == sorted(f"label-{n}" for n in range(1, len(PLOT_ROWS) + 1))
        boxes = [t.get_window_extent(renderer) for t in labels]
        for i, a in enumerate(boxes):
            assert frame.x0 <= a.x0 and a.x1 <= frame.x1 and frame.y0 <= a.y0 and a.y1 <= frame.y1, labels[i].get_text()
            for j in range(i):
                assert not a.overlaps(boxes[j]), (labels[i].get_text(), labels[j].get_text())
        full = {t.get_text() for t in labels}
        assert "scratch / mpnet-base" in full and "lora / mpnet-base" in full  # room there: the full name

    path = tmp_path / "frontier.png"
    fig.savefig(path)
    print(f"frontier plot: {path}")
    assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 20_000
