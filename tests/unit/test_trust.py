"""Attacks and crashes: nothing read from a run, cache or checkpoint folder runs code, no finished
run is lost, a manifest is checked on its own terms, and a changed backbone is noticed."""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import headstart as hs
from headstart.errors import BadInput, RunIntegrityError
from headstart.runs import Store
from headstart.runs.run import manifest_checksum, read_run_folder
from headstart.train.checkpoint import load_checkpoint, save_checkpoint

SRC = Path(__file__).resolve().parents[2] / "src"


class _Payload:
    """Unpickling this creates ``marker``: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# -- 1. no unpickling ---------------------------------------------------------------------------


def test_no_code_path_unpickles():
    pattern = re.compile(r"weights_only\s*=\s*False|pickle\.loads?\(|allow_pickle\s*=\s*True|joblib\.load|torch\.load\(")
    hits = [f"{p}:{i}" for p in SRC.rglob("*.py") for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []


def test_checkpoint_round_trip_keeps_every_type(tmp_path):
    obj = {"trainable": {"w": torch.randn(3, 2)}, "optimizer": {"state": {0: {"step": torch.tensor(3.0)}},
           "param_groups": [{"params": [0], "betas": (0.9, 0.999), "lr": 1e-3}]},
           "state": {"best": (-1.0, -float("inf")), "history": [{"step": 1}], "best_state": None}, "rng": torch.get_rng_state()}
    save_checkpoint(tmp_path / "c.safetensors", obj)
    back = load_checkpoint(tmp_path / "c.safetensors")
    assert torch.equal(back["trainable"]["w"], obj["trainable"]["w"])
    assert back["optimizer"]["state"][0]["step"].item() == 3.0 and back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert back["state"]["best"] == (-1.0, -float("inf")) and back["state"]["best_state"] is None
    assert torch.equal(back["rng"], obj["rng"])


def test_a_planted_pickle_checkpoint_is_refused_and_never_runs(tmp_path, train_csv, tiny_bert):
    marker = tmp_path / "pwned"
    out = tmp_path / "runs"
    partial = out / ".partial" / "20260101-000000-x-lora-abcdef"
    partial.mkdir(parents=True)
    recipe = {"data": str(train_csv), "test": None, "backbone": str(tiny_bert), "method": "lora", "method_options": {}, "seed": 0,
              "text_col": None, "label_col": None, "fmt": None, "val_fraction": 0.1, "test_fraction": 0.2, "precision": "fp32",
              "budget": None}
    (partial / "recipe.json").write_text(json.dumps({"id": partial.name, "recipe": recipe, "data_fingerprint": "x",
                                                     "backbone_sha256": "y", "lineage": None}))
    # The old name: refused without being opened.
    (partial / "checkpoint.pt").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(BadInput, match="pickle format"):
        hs.adapt(None, resume=partial.name, out=out)
    assert not marker.exists()
    # The new name holding a pickle: refused as unreadable, nothing run.
    (partial / "checkpoint.pt").unlink()
    (partial / "checkpoint.safetensors").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(RunIntegrityError, match="checkpoint"):
        load_checkpoint(partial / "checkpoint.safetensors")
    assert not marker.exists()


# -- 2. no lost runs ----------------------------------------------------------------------------

_KILL_BEFORE_RECORD = """
import os, signal, sys
import headstart as hs
from headstart.runs.store import Store
Store.add_run = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)  # killed after the rename, before the row
hs.adapt(sys.argv[1], backbone=sys.argv[2], method="finetune", method_options={"epochs": 1, "batch_size": 8}, out=sys.argv[3])
"""


@pytest.fixture
def killed_before_record(tmp_path, train_csv, tiny_bert):
    """A finetune run killed (SIGKILL) between renaming its folder into place and recording it."""
    out = tmp_path / "home" / "runs"  # the default runs folder of this test's HEADSTART_HOME
    env = {**os.environ, "HEADSTART_PROGRESS": "0"}
    proc = subprocess.run([sys.executable, "-c", _KILL_BEFORE_RECORD, str(train_csv), str(tiny_bert), str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    (folder,) = [p for p in out.iterdir() if not p.name.startswith(".")]
    assert (out / ".partial" / folder.name / "checkpoint.safetensors").is_file()
    assert Store().find(folder.name) is None
    return out, folder


def test_resume_adopts_a_finished_but_unrecorded_run(killed_before_record):
    out, folder = killed_before_record
    run = hs.adapt(None, resume=folder.name, out=out)
    assert run.path == folder and Store().find(folder.name)["path"] == str(folder.resolve())
    assert not (out / ".partial").exists()  # the checkpoint goes only once the run is recorded


def test_runs_and_load_adopt_an_unrecorded_run(killed_before_record, cli):
    _, folder = killed_before_record
    listed = cli("runs", "--json")
    assert listed.rc == 0 and [r["id"] for r in listed.json()] == [folder.name]
    assert "recorded 1 complete run folder" in listed.err
    assert hs.load(folder.name[:20]).id == folder.name


def test_load_by_id_adopts_without_runs(killed_before_record):
    _, folder = killed_before_record
    assert hs.load(folder.name).id == folder.name
    assert Store().find(folder.name) is not None


def test_repair_removes_leftovers_of_dead_writers_and_refuses_damaged_folders(tmp_path, trained_run, cli):
    out = tmp_path / "other-runs"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / f".tmp-run-x-{dead.pid}").mkdir()
    (out / f".tmp-run-y-{os.getpid()}").mkdir()  # a live writer's: kept
    copy = trained_run.copy_to(out)
    damaged = trained_run.copy_to(tmp_path / "d")
    damaged = damaged.rename(out / (damaged.name[:-1] + "z"))
    r = cli("runs", "--repair", "--out", out, "--json")
    assert r.rc == 0, r
    rep = r.json()
    assert rep["adopted"] == [copy.name]
    assert rep["removed_tmp"] == [str(out / f".tmp-run-x-{dead.pid}")]
    assert (out / f".tmp-run-y-{os.getpid()}").is_dir()
    assert [x["folder"] for x in rep["refused"]] == [str(damaged)] and damaged.is_dir()
    text = cli("runs", "--repair", "--out", out)
    assert text.rc == 0 and "every complete run folder is recorded" in text.out and "not recorded" in text.out


def test_a_store_that_cannot_record_keeps_the_finished_run(tmp_path, train_csv, tiny_bert, monkeypatch):
    out = tmp_path / "runs"

    def broken(*a, **k):
        raise BadInput("store x: disk full")

    monkeypatch.setattr(Store, "add_run", broken)
    with pytest.raises(BadInput, match="could not be recorded.*--resume"):
        hs.adapt(train_csv, backbone=str(tiny_bert), out=out)
    (folder,) = [p for p in out.iterdir() if not p.name.startswith(".")]
    monkeypatch.undo()
    assert hs.adapt(None, resume=folder.name, out=out).id == folder.name
    assert Store().find(folder.name) is not None


# -- 3. the manifest checked on its own terms ------------------------------------------------------


def _rewrite(path: Path, edit) -> None:
    m = json.loads((path / "manifest.json").read_text())
    edit(m)
    m["checksum"] = manifest_checksum(m)  # what an attacker does: the checksum agrees again
    (path / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda m: m["files"].update({"../../../../etc/passwd": "0" * 64}), "not a plain file name"),
        (lambda m: m.update(files={}), "no checksum for weights.safetensors"),
        (lambda m: m.update(files=["weights.safetensors"]), "'files' must map"),
        (lambda m: m["files"].update({"weights.safetensors": "zero"}), "no valid sha256"),
    ],
)
def test_forged_file_lists_are_refused(trained_run, tmp_path, edit, match):
    path = trained_run.copy_to(tmp_path)
    _rewrite(path, edit)
    with pytest.raises(RunIntegrityError, match=match):
        read_run_folder(path)


def test_zeroed_weights_with_an_emptied_file_list_are_not_used(trained_run, tmp_path):
    from safetensors.torch import load_file, save_file

    path = trained_run.copy_to(tmp_path)
    w = load_file(str(path / "weights.safetensors"))
    save_file({k: torch.zeros_like(v) for k, v in w.items()}, str(path / "weights.safetensors"))
    _rewrite(path, lambda m: m.update(files={}))
    with pytest.raises(RunIntegrityError):
        hs.load(path)


def test_a_symlink_out_of_the_run_folder_is_refused(trained_run, tmp_path):
    path = trained_run.copy_to(tmp_path)
    outside = tmp_path / "elsewhere.csv"
    outside.write_bytes((path / "predictions.csv").read_bytes())
    (path / "predictions.csv").unlink()
    (path / "predictions.csv").symlink_to(outside)
    with pytest.raises(RunIntegrityError, match="symbolic link"):
        read_run_folder(path)


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda m: m.pop("classes"), "classes"),
        (lambda m: m.update(classes="pos"), "classes"),
        (lambda m: m["backbone"].pop("spec"), "backbone.spec"),
        (lambda m: m.update(seed="zero"), "seed"),
        (lambda m: m.update(id="../../x"), "id"),
    ],
)
def test_a_manifest_missing_keys_is_one_line(trained_run, tmp_path, cli, assert_bad_input, edit, needle):
    path = trained_run.copy_to(tmp_path)
    _rewrite(path, edit)
    assert_bad_input(cli("predict", path, "-", stdin="good movie\n"), "manifest.json", needle)


# -- 4. the identity cache is not fooled ----------------------------------------------------------


def test_same_size_edit_with_mtime_put_back_changes_the_identity(tmp_path):
    from headstart.catalog import identity

    folder = tmp_path / "bb"
    folder.mkdir()
    f = folder / "model.safetensors"
    f.write_bytes(b"a" * 1000)
    before = identity(folder)
    st = f.stat()
    f.write_bytes(b"b" * 1000)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert f.stat().st_size == st.st_size and f.stat().st_mtime_ns == st.st_mtime_ns
    assert identity(folder) != before


def test_rehash_ignores_the_cache(tmp_path, monkeypatch):
    from headstart import catalog

    folder = tmp_path / "bb"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"a" * 10)
    first = catalog.identity(folder)
    calls = []
    real = catalog.sha256_file
    monkeypatch.setattr(catalog, "sha256_file", lambda p: calls.append(p) or real(p))
    assert catalog.identity(folder) == first and calls == []  # cached
    assert catalog.identity(folder, rehash=True) == first and len(calls) == 1


def test_models_verify_rehashes_and_reports(cli):
    r = cli("models", "--verify", "--json")
    assert r.rc in (0, 1), r
    rows = r.json()
    installed = [x for x in rows if x["installed"]]
    assert all("verified" in x for x in rows)
    assert all(len(x.get("sha256", "")) == 64 or x.get("error") for x in installed)
    assert r.rc == (1 if any(x["verified"] is False for x in installed) else 0)


# -- the budget bounds the whole adaptation -------------------------------------------------------


def test_budget_bounds_the_whole_adaptation_not_only_the_loop(train_csv, tiny_bert, monkeypatch):
    import time

    from headstart.train.trainer import Trainer

    real = Trainer._step

    def slow_step(self, *a, **k):  # a slow machine: every step takes 0.4 s
        time.sleep(0.4)
        return real(self, *a, **k)

    monkeypatch.setattr(Trainer, "_step", slow_step)
    t0 = time.perf_counter()
    run = hs.adapt(train_csv, backbone=str(tiny_bert), method="finetune", budget=4,
                   method_options={"epochs": 1000, "batch_size": 8, "patience": 1000})
    took = time.perf_counter() - t0
    fit = run.manifest["method"]["fit"]
    assert fit["stopped_by"] == "budget" and fit["steps"] >= 1
    # Reading, loading, the final evaluation and writing happen inside the 4 s too (before, the
    # budget covered the loop alone and a run took ~2x its budget); 1 s of slack for this process.
    assert took <= 4 + 1.0, took
    assert run.manifest["timings"]["total_s"] <= 4 + 1.0
