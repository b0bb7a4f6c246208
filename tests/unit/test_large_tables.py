"""Tables streamed from disk (headstart.data.large): the linear probe on a table read a chunk at a
time gives the in-memory probe's head; an interrupted encode resumes; other methods and bad
columns are refused in one line."""

from __future__ import annotations

import csv
import random

import numpy as np
import pytest

import headstart.data.large as large
from headstart import api
from headstart.backbones import open_backbone
from headstart.backbones.cache import table_features
from headstart.data.large import open_table, streams

WORDS = ("alpha", "beta", "gamma", "delta", "card", "money", "great", "bad", "service", "time")


def _rows(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` short texts in three classes, each class favouring its own words."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = ("red", "green", "blue")[i % 3]
        own = WORDS[(i % 3) * 3 : (i % 3) * 3 + 3]
        rows.append((" ".join(rng.choice(own if rng.random() < 0.6 else WORDS) for _ in range(5)), label))
    return rows


def _write(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"text": [r[0] for r in rows], "label": [r[1] for r in rows]})
    if path.suffix == ".parquet":
        pq.write_table(table, path, row_group_size=700)
    elif path.suffix == ".arrow":
        with pa.ipc.new_file(str(path), table.schema) as w:
            for batch in table.to_batches(max_chunksize=900):
                w.write_batch(batch)
    else:
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(("text", "label"))
            writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def in_memory_run(tmp_path_factory, tiny_bert):
    """The ordinary in-memory probe on 2400 rows (the reference every streamed run must match)."""
    import os

    folder = tmp_path_factory.mktemp("in-memory")
    old = {k: os.environ.get(k) for k in ("HEADSTART_HOME", "HEADSTART_PROGRESS")}
    os.environ["HEADSTART_HOME"], os.environ["HEADSTART_PROGRESS"] = str(folder / "home"), "0"
    try:
        data = _write(folder / "train.csv", _rows(2400))
        run = api.adapt(data, backbone=str(tiny_bert), method="linear-probe", out=folder / "runs", store=folder / "store.sqlite")
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return run


@pytest.mark.parametrize("suffix", [".parquet", ".arrow", ".csv"])
def test_streamed_probe_equals_the_in_memory_probe(tmp_path, tiny_bert, in_memory_run, suffix):
    data = _write(tmp_path / f"train{suffix}", _rows(2400))
    run = api.adapt(data, backbone=str(tiny_bert), method="linear-probe", out=tmp_path / "runs", store=tmp_path / "s.sqlite",
                    task_options={"streaming": True})
    ref = in_memory_run
    fit = run.manifest["method"]["fit"]
    assert fit["streamed"]["rows"] == 2400 and run.manifest["data"]["train"]["streamed"]
    assert run.manifest["data"]["split"] == ref.manifest["data"]["split"] | {"test": ref.manifest["data"]["split"]["test"]}
    assert fit["C"] == ref.manifest["method"]["fit"]["C"]
    assert fit["val_accuracy_by_C"] == ref.manifest["method"]["fit"]["val_accuracy_by_C"]
    method, _ = run.open_model()
    ref_method, _ = ref.open_model()
    # The same optimum up to L-BFGS's stopping tolerance: the streamed feature statistics are summed
    # chunk by chunk, and that float order moved the weights found by up to 7.3e-4 on a fresh install
    # (2026-12-02: numpy 2.4.6, scipy 1.17.1; 2e-4 had held before). Same C, validation and test accuracy.
    np.testing.assert_allclose(method.weight_.numpy(), ref_method.weight_.numpy(), atol=2e-3, rtol=1e-3)
    np.testing.assert_allclose(method.bias_.numpy(), ref_method.bias_.numpy(), atol=2e-3, rtol=1e-3)
    assert run.metrics["test"]["summary"]["accuracy"] == pytest.approx(ref.metrics["test"]["summary"]["accuracy"], abs=1e-3)
    # predictions.csv is the ordinary one: a row per test example, the held-out rows in table order
    with open(run.path / "predictions.csv", newline="", encoding="utf-8") as f:
        records = list(csv.DictReader(f))
    assert len(records) == run.manifest["data"]["split"]["test"]
    assert list(records[0]) == ["input", "label", "predicted", "p[blue]", "p[green]", "p[red]"]
    # the saved head is an ordinary probe: predict and evaluate on a small file take the normal path
    small = _write(tmp_path / "small.csv", _rows(30, seed=5))
    assert run.predict(small).probabilities.shape == (30, 3)
    assert run.evaluate(small)["n"] == 30


def test_rows_above_the_threshold_stream(tmp_path, tiny_bert, monkeypatch, cli):
    monkeypatch.setattr(large, "LARGE_ROWS", 1000)
    data = _write(tmp_path / "train.parquet", _rows(1500))
    assert streams(data) and not streams(data, forced=False) and not streams(_write(tmp_path / "t.csv", _rows(900)))
    run = api.adapt(data, backbone=str(tiny_bert), method="linear-probe", out=tmp_path / "runs", store=tmp_path / "s.sqlite",
                    method_options={"C": 1.0})
    assert run.manifest["data"]["train"]["streamed"] and run.manifest["method"]["fit"]["examples_encoded"] == 1500
    # a second run on the same table reads the finished feature file
    again = api.adapt(data, backbone=str(tiny_bert), method="linear-probe", out=tmp_path / "runs", store=tmp_path / "s.sqlite",
                      method_options={"C": 1.0}, seed=1)
    assert again.manifest["method"]["fit"]["examples_encoded"] == 0
    small_arrow = _write(tmp_path / "small.arrow", _rows(900))  # under the threshold: read into memory like a CSV
    in_memory = api.adapt(small_arrow, backbone=str(tiny_bert), method="finetune", out=tmp_path / "runs",
                          store=tmp_path / "s.sqlite", method_options={"epochs": 1})
    assert "streamed" not in in_memory.manifest["data"]["train"] and in_memory.manifest["data"]["train"]["examples"] == 900
    listed = cli("runs", "--store", tmp_path / "s.sqlite")
    assert listed.rc == 0 and run.id in listed.out and again.id in listed.out
    small = _write(tmp_path / "small.csv", _rows(20, seed=3))
    predicted = cli("predict", run.path, small)
    assert predicted.rc == 0, predicted


def test_interrupted_encode_resumes_after_the_last_chunk(tmp_path, tiny_bert, monkeypatch):
    monkeypatch.setattr(large, "CHUNK", 128)
    table = open_table(_write(tmp_path / "train.parquet", _rows(1000)))
    bb, bb_hash = open_backbone(str(tiny_bert))
    real = bb.embed
    calls = []

    def flaky(texts, **kw):
        calls.append(len(texts))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(texts, **kw)

    monkeypatch.setattr(bb, "embed", flaky)
    with pytest.raises(KeyboardInterrupt):
        table_features(bb, bb_hash, table, "fp32")
    monkeypatch.setattr(bb, "embed", real)
    path, encoded = table_features(bb, bb_hash, table, "fp32")
    assert encoded == 1000 - 2 * 128  # the two finished chunks were kept
    assert table_features(bb, bb_hash, table, "fp32") == (path, 0)
    np.testing.assert_allclose(np.load(path), real(table.to_dataset().inputs), atol=1e-5)


def test_another_method_on_a_streamed_table_is_refused(tmp_path, tiny_bert, cli, assert_bad_input):
    data = _write(tmp_path / "train.parquet", _rows(300))
    result = cli("adapt", data, "--backbone", tiny_bert, "--method", "finetune", "--task-set", "streaming=true",
                 "--out", tmp_path / "runs")
    assert_bad_input(result, "only the linear probe streams", "--method linear-probe", "sample the table", out_dir=tmp_path / "runs")


def test_bad_columns_and_rows_are_one_line(tmp_path, tiny_bert, cli, assert_bad_input):
    data = _write(tmp_path / "train.parquet", _rows(300))
    base = ("adapt", data, "--backbone", tiny_bert, "--task-set", "streaming=true", "--out", tmp_path / "runs")
    assert_bad_input(cli(*base, "--text-col", "sentence"), "--text-col 'sentence' is not a column", "'text', 'label'")
    rows = _rows(3000)
    rows[2500] = ("  \u200b ", "red")  # past the rows the column inference samples
    blank = _write(tmp_path / "blank.csv", rows)
    assert_bad_input(cli("adapt", blank, "--backbone", tiny_bert, "--task-set", "streaming=true"),
                     "blank.csv row 2501: empty text in column 'text'")



def test_arrow_stream_format_and_integer_labels(tmp_path):
    import pyarrow as pa

    rows = _rows(500)
    table = pa.table({"sentence": [r[0] for r in rows], "y": [("red", "green", "blue").index(r[1]) for r in rows]})
    path = tmp_path / "train.arrow"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        for batch in table.to_batches(max_chunksize=128):
            w.write_batch(batch)
    opened = open_table(path)
    assert opened.columns == {"text": "sentence", "label": "y"} and opened.classes == ["0", "1", "2"]
    assert opened.n_rows == 500 and list(opened.codes[:3]) == [0, 1, 2]
    chunks = list(opened.iter_texts(np.array([3, 200, 499]), chunk=2))
    assert [list(i) for i, _ in chunks] == [[3, 200], [499]] and chunks[1][1] == [rows[499][0]]
    # the fingerprint is of the content, not of the file's format or batching
    assert open_table(_write(tmp_path / "same.csv", [(t, str(("red", "green", "blue").index(y))) for t, y in rows]),
                      text_col="text", label_col="label").fingerprint == opened.fingerprint


def test_a_full_disk_is_one_line(tmp_path, tiny_bert, cli, assert_bad_input, monkeypatch):
    import errno
    import os

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    data = _write(tmp_path / "train.parquet", _rows(300))
    result = cli("adapt", data, "--backbone", tiny_bert, "--task-set", "streaming=true", "--out", tmp_path / "runs")
    assert_bad_input(result, "cannot write the feature file", "No space left on device", "HEADSTART_CACHE",
                     out_dir=tmp_path / "runs")


def test_streaming_a_jsonl_file_is_refused(tmp_path, tiny_bert, cli, assert_bad_input, write_table):
    data = write_table(tmp_path / "train.jsonl", _rows(30))
    assert_bad_input(cli("adapt", data, "--backbone", tiny_bert, "--task-set", "streaming=true"),
                     "streaming=true reads Parquet, Arrow IPC, CSV or TSV tables, not JSONL")


def test_a_separate_test_file_streams_too(tmp_path, tiny_bert, cli, assert_bad_input):
    data = _write(tmp_path / "train.parquet", _rows(600))
    test = _write(tmp_path / "test.csv", _rows(90, seed=9))
    run = api.adapt(data, test=test, backbone=str(tiny_bert), method="linear-probe", out=tmp_path / "runs",
                    store=tmp_path / "s.sqlite", method_options={"C": 1.0}, task_options={"streaming": True})
    assert run.manifest["data"]["test"]["examples"] == 90 and run.manifest["data"]["split"]["test_fraction"] == 0.0
    assert run.metrics["test"]["summary"]["n"] == 90
    odd = _write(tmp_path / "odd.csv", _rows(90, seed=9) + [("alpha beta", "purple")])
    assert_bad_input(cli("adapt", data, "--test", odd, "--backbone", tiny_bert, "--task-set", "streaming=true"),
                     "labels never seen in training: 'purple' (1 rows)", "odd.csv row 91")
