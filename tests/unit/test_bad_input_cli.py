"""Bad input and OS faults at the command line: one line on stderr, exit 2, nothing left behind;
and the human-readable output of every registered method (not only --json)."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from headstart.methods import METHODS

# Options that keep each method to a few steps on the tiny model.
FAST = {"contrastive": ["--set", "steps=4", "--set", "batch_size=8"], "linear-probe": []}
TRAINED_FAST = ["--set", "epochs=1", "--set", "batch_size=8"]


@pytest.mark.parametrize("task, method", [(t, m) for m, cls in sorted(METHODS.items()) for t in cls.supported_tasks()
                                          if t in ("classification", "retrieval", "similarity")])  # asr: test_asr_task.py
def test_every_method_prints_its_human_readable_summary(cli, train_csv, pairs_csv, sts_csv, tiny_bert, task, method):
    from headstart.tasks import get_task

    data = {"classification": train_csv, "retrieval": pairs_csv, "similarity": sts_csv}[task]
    r = cli("adapt", data, "--task", task, "--backbone", tiny_bert, "--method", method, "--out", "runs",
            *FAST.get(method, [] if method == "frozen" else TRAINED_FAST))
    assert r.rc == 0, r
    lines = r.out.splitlines()
    assert lines[0].startswith("run ") and lines[-1].startswith("saved to ")
    assert any(line.strip().startswith("trained ") for line in lines), r.out
    first = next(iter(get_task(task).shown.values()))
    assert any(line.strip().startswith(f"test {first} ") for line in lines), r.out
    assert "Traceback" not in r.err


# -- argparse -----------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, needle", [
    (["adapt", "x.csv", "--seed", "abc"], "--seed: invalid int value"),
    (["frobnicate"], "invalid choice"),
    ([], "required"),
    (["eval", "RUN", "d.csv", "--min-accuracy", "nan"], "--min-accuracy"),
    (["eval", "RUN", "d.csv", "--min-accuracy", "1.5"], "from 0 to 1"),
    (["drift", "RUN", "--base", "x", "--alpha", "inf"], "--alpha"),
])
def test_usage_errors_are_one_line_with_the_way_to_help(cli, argv, needle):
    r = cli(*argv)
    assert r.rc == 2 and len(r.err_lines) == 1, r
    assert r.err_lines[0].startswith("error: headstart") and needle in r.err_lines[0] and "--help" in r.err_lines[0]


def test_a_seed_beyond_64_bits_is_refused_before_training(cli, train_csv, tiny_bert, tmp_path, assert_bad_input):
    assert_bad_input(cli("adapt", train_csv, "--backbone", tiny_bert, "--seed", str(2**64), "--out", tmp_path / "runs"),
                     "--seed", "2**63-1", out_dir=tmp_path / "runs")


# -- writing: folders that are files, missing, read-only or full ------------------------------------


def test_out_beneath_a_file(cli, train_csv, tiny_bert, tmp_path, assert_bad_input):
    (tmp_path / "afile").write_text("x")
    assert_bad_input(cli("adapt", train_csv, "--backbone", tiny_bert, "--out", tmp_path / "afile" / "runs"),
                     "beneath the file", str(tmp_path / "afile"))


@pytest.fixture
def small_fs(tmp_path):
    """A real tmpfs mount (root only): ``(mount point, remount(options))``."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or 'not root'}): the read-only/disk-full tests need one")

    def remount(options: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{options}", str(mnt)], check=True)

    yield mnt, remount
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_read_only_out_is_one_line_and_creates_nothing(cli, train_csv, tiny_bert, small_fs, assert_bad_input):
    mnt, remount = small_fs
    remount("ro")
    assert_bad_input(cli("adapt", train_csv, "--backbone", tiny_bert, "--out", mnt / "runs"), "cannot write there", str(mnt / "runs"))


def test_read_only_home_is_one_line(cli, train_csv, tiny_bert, small_fs, monkeypatch, assert_bad_input):
    mnt, remount = small_fs
    remount("ro")
    monkeypatch.setenv("HEADSTART_HOME", str(mnt / "home"))
    assert_bad_input(cli("adapt", train_csv, "--backbone", tiny_bert), "HEADSTART_HOME", "cannot write there")


def test_a_full_disk_during_the_run_leaves_no_run_folder(cli, train_csv, tiny_bert, small_fs, assert_bad_input):
    mnt, _ = small_fs  # 256 KiB: the recipe fits, the run's files do not (the tiny BERT's body is ~90 KiB, x3 files)
    (mnt / "filler").write_bytes(b"\0" * 200_000)
    r = cli("adapt", train_csv, "--backbone", tiny_bert, "--method", "finetune", "--out", mnt / "runs", *TRAINED_FAST)
    line = assert_bad_input(r)
    assert "No space left on device" in line
    leftovers = [p for p in (mnt / "runs").rglob("*")] if (mnt / "runs").exists() else []
    assert not [p for p in leftovers if p.name.startswith(".tmp-") or (p.parent == mnt / "runs" and not p.name.startswith("."))]


def test_predict_output_must_be_a_file_in_an_existing_folder(cli, trained_run, tmp_path, assert_bad_input):
    assert_bad_input(cli("predict", trained_run.path, "-", "-o", tmp_path, stdin="good\n"), "is a folder")
    assert_bad_input(cli("predict", trained_run.path, "-", "-o", tmp_path / "nope" / "p.csv", stdin="good\n"), "does not exist")
    ok = cli("predict", trained_run.path, "-", "-o", tmp_path / "p.csv", stdin="good movie\n")
    assert ok.rc == 0 and (tmp_path / "p.csv").read_text().startswith("input,label")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


def test_predict_refuses_invalid_utf8_on_stdin(cli, trained_run, monkeypatch, assert_bad_input):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"good movie\nbad \xff\xfe film\n"), encoding="utf-8"))
    from headstart.cli import main

    assert main(["predict", str(trained_run.path), "-"]) == 2


def test_predict_invalid_utf8_message(trained_run, tmp_path):
    env = {**os.environ, "HEADSTART_PROGRESS": "0"}
    r = subprocess.run([sys.executable, "-m", "headstart.cli", "predict", str(trained_run.path), "-"], input=b"good\nbad \xff film\n",
                       capture_output=True, env=env, timeout=120)
    err = r.stderr.decode().strip().splitlines()
    assert r.returncode == 2 and len(err) == 1 and "line 2: not valid UTF-8" in err[0], r.stderr


def test_eval_junit_naming_a_folder_is_refused_before_anything_is_recorded(cli, trained_run, tmp_path, assert_bad_input):
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"name: s\ndatasets:\n  - {{name: t, path: {trained_run.data}}}\nmetrics: [accuracy]\n")
    store = tmp_path / "store.sqlite3"
    assert_bad_input(cli("eval", trained_run.path, "--suite", suite, "--junit", tmp_path, "--store", store), "--junit", "is a folder")
    assert not store.exists() or sqlite3.connect(store).execute("SELECT count(*) FROM evals").fetchone()[0] == 0


# -- a damaged store ----------------------------------------------------------------------------


def _garbage_page(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[4096:8192] = os.urandom(4096)  # the second page: a table's b-tree
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, needle", [
    (lambda p: p.write_bytes(b""), "empty (0 bytes)"),
    (lambda p: p.write_bytes(b"SQLite format 3\0" + os.urandom(8000)), "store"),
    (_garbage_page, "store"),
    (lambda p: sqlite3.connect(p).executescript("DROP TABLE runs; CREATE TABLE runs (id TEXT, other TEXT);"), "not a headstart store"),
    (lambda p: sqlite3.connect(p).executescript("UPDATE runs SET metrics = '{not json';"), "invalid JSON"),
])
def test_a_damaged_store_is_one_line_and_checked_before_adapting(cli, trained_run, tmp_path, train_csv, tiny_bert, assert_bad_input,
                                                                  damage, needle):
    import shutil

    store = tmp_path / "store.sqlite3"
    shutil.copy(trained_run.store, store)
    con = sqlite3.connect(store)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.execute("PRAGMA journal_mode=DELETE")  # one file holds everything, so damaging it damages the store
    con.close()
    damage(store)
    assert_bad_input(cli("runs", "--store", store), needle)
    # adapt refuses before loading the data or the backbone, and leaves no run folder
    assert_bad_input(cli("adapt", train_csv, "--backbone", tiny_bert, "--store", store, "--out", tmp_path / "runs"), "store",
                     out_dir=tmp_path / "runs")


def test_a_deleted_store_gets_its_runs_back_from_the_folders(cli, trained_run, tmp_path, monkeypatch):
    import shutil

    home = tmp_path / "home"
    shutil.copytree(trained_run.path, home / "runs" / trained_run.id)
    r = cli("runs", "--json")  # the default store does not exist yet: the folder is adopted
    assert r.rc == 0 and [x["id"] for x in r.json()] == [trained_run.id]
    assert "recorded 1 complete run folder" in r.err
    again = cli("runs", "--json")
    assert again.rc == 0 and again.err == ""


# -- backbone folders that must not run -----------------------------------------------------------


def _folder_variant(tiny_bert: Path, dest: Path, edit) -> Path:
    import shutil

    shutil.copytree(tiny_bert, dest)
    edit(dest)
    return dest


def _pickle_only(d: Path) -> None:
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(str(d / "model.safetensors")), d / "pytorch_model.bin")
    (d / "model.safetensors").unlink()


def _auto_map(d: Path) -> None:
    c = json.loads((d / "config.json").read_text())
    c["auto_map"] = {"AutoModel": "modeling_evil.Model"}
    (d / "config.json").write_text(json.dumps(c))
    (d / "modeling_evil.py").write_text(f"open({str(d / 'ran')!r}, 'w').close()\n")


def _causal(d: Path) -> None:
    c = json.loads((d / "config.json").read_text())
    c["architectures"] = ["LlamaForCausalLM"]
    (d / "config.json").write_text(json.dumps(c))


@pytest.mark.parametrize("edit, needle", [(_pickle_only, "a pickle"), (_auto_map, "custom model code"), (_causal, "is a causal language model")])
def test_backbone_folders_refused_in_one_line(cli, train_csv, tiny_bert, tmp_path, assert_bad_input, edit, needle):
    bb = _folder_variant(tiny_bert, tmp_path / "bb", edit)
    assert_bad_input(cli("adapt", train_csv, "--backbone", bb, "--out", tmp_path / "runs"), needle, out_dir=tmp_path / "runs")
    assert not (bb / "ran").exists()


def test_a_junit_write_that_fails_records_no_eval(cli, trained_run, tmp_path, small_fs, assert_bad_input):
    import shutil

    mnt, remount = small_fs
    remount("ro")
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"name: s\ndatasets:\n  - {{name: t, path: {trained_run.data}}}\nmetrics: [accuracy]\n")
    store = tmp_path / "store.sqlite3"
    shutil.copy(trained_run.store, store)
    assert_bad_input(cli("eval", trained_run.id, "--suite", suite, "--junit", mnt / "out.xml", "--store", store),
                     "--junit", "cannot write it")
    assert sqlite3.connect(store).execute("SELECT count(*) FROM evals").fetchone()[0] == 0


def test_a_full_disk_during_the_export_leaves_no_export_folder(cli, trained_run, small_fs, assert_bad_input):
    mnt, _ = small_fs
    (mnt / "filler").write_bytes(b"\0" * 240_000)  # ~16 KiB left: the tiny BERT's weights do not fit
    r = cli("export", trained_run.path, "--out", mnt / "exported")
    assert_bad_input(r, "No space left on device")
    assert sorted(p.name for p in mnt.iterdir()) == ["filler"]
