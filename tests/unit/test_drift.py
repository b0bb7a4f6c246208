"""drift and watch end to end on tiny random models: an identical base must not be flagged, a
deliberately broken one must be; recipes a base cannot run are refused before any work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import headstart as hs
from headstart.backbones.testing import break_token_embeddings
from headstart.errors import BadInput
from headstart.evaluate.drift import drift
from headstart.runs import Store


@pytest.fixture
def data(tmp_path, data_helpers):
    rows, write = data_helpers
    return write(tmp_path / "train.csv", rows(240, seed=1))


@pytest.fixture
def base(tmp_path, tiny_bert) -> Path:
    return Path(shutil.copytree(tiny_bert, tmp_path / "base"))


@pytest.fixture
def old_run(tmp_path, data, base):
    return hs.adapt(data, backbone=str(base), out=tmp_path / "runs")


def test_identical_base_is_no_change(tmp_path, old_run, base):
    same = shutil.copytree(base, tmp_path / "same")
    res = drift(old_run.id, str(same), out=tmp_path / "runs", report=tmp_path / "report")
    assert res.verdict == "no significant change"
    overall = [c for c in res.result["checks"] if c["slice"] == "all"]
    assert {c["metric"] for c in overall} == {"accuracy", "macro_f1"}
    assert all(c["delta"] == 0 and c["p"] == 1.0 for c in overall)
    assert res.new_run.manifest["lineage"] == {"parent": old_run.id, "reason": "drift", "base": str(same)}
    assert res.new_run.manifest["recipe"]["seed"] == old_run.manifest["seed"]
    assert {p.name for p in (tmp_path / "report").iterdir()} >= {"report.md", "report.html", "deltas.png"}
    assert Store().drifts(old_run.id)[0]["verdict"] == "no significant change"
    assert [c["id"] for c in Store().children(old_run.id)] == [res.new_run.id]


def test_broken_base_is_flagged_as_a_regression(tmp_path, old_run, base, cli):
    broken = Path(shutil.copytree(base, tmp_path / "broken"))
    break_token_embeddings(broken)
    r = cli("drift", old_run.id, "--base", broken, "--out", tmp_path / "runs", "--report", tmp_path / "rep", "--json")
    assert r.rc == 1, r.err
    out = json.loads(r.out)
    assert out["verdict"] == "regression"
    acc = next(c for c in out["checks"] if c["slice"] == "all" and c["metric"] == "accuracy")
    assert acc["delta"] < -0.2 and acc["p"] < 1e-4 and acc["test"] == "exact McNemar"
    assert any(f["direction"] == "broke" for f in out["flips"])
    assert "regression" in (tmp_path / "rep" / "report.md").read_text()


def test_seeds_give_a_noise_floor(tmp_path, old_run, base):
    same = shutil.copytree(base, tmp_path / "same")
    res = drift(old_run.id, str(same), seeds=2, out=tmp_path / "runs", report=tmp_path / "report")
    seeds = res.result["seeds"]
    assert seeds["k"] == 2 and len(seeds["runs"]) == 2 and seeds["base"] == old_run.manifest["backbone"]["name"]
    assert all(c["noise_floor"] is not None and c["noise_floor"] >= 0 for c in res.result["checks"])
    assert res.verdict == "no significant change"


def test_a_recipe_the_new_base_cannot_run_is_refused_before_any_work(tmp_path, data, base):
    pytest.importorskip("onnx")
    from headstart.backbones.testing import tiny_onnx_text_model

    onnx_file = tiny_onnx_text_model(tmp_path / "onnx", source=base)
    lora = hs.adapt(data, backbone=str(base), method="lora", method_options={"epochs": 1}, out=tmp_path / "runs")
    before = len(Store().runs())
    with pytest.raises(BadInput, match=r"gives frozen features only, but run .* used 'lora'.*cannot run on that base"):
        drift(lora.id, str(onnx_file), out=tmp_path / "runs")
    assert len(Store().runs()) == before
    # A linear-probe recipe runs on the same ONNX build and finds no change (same weights).
    probe = hs.adapt(data, backbone=str(base), out=tmp_path / "runs")
    assert drift(probe.id, str(onnx_file), out=tmp_path / "runs").verdict == "no significant change"


def test_changed_training_data_is_refused(tmp_path, old_run, base, data):
    data.write_text(data.read_text().replace("good", "bad", 1))
    with pytest.raises(BadInput, match="changed since the run was made"):
        drift(old_run.id, str(base), out=tmp_path / "runs")


def test_watch_drifts_deployed_runs_whose_base_changed(tmp_path, old_run, base, cli):
    other = hs.adapt(old_run.manifest["recipe"]["data"], backbone=str(base), seed=3, out=tmp_path / "runs")
    assert cli("watch").out.startswith("no deployed runs")
    assert cli("runs", old_run.id, "--deploy").rc == 0
    r = cli("watch", "--json")
    assert r.rc == 0 and json.loads(r.out)[0]["status"] == "unchanged"
    break_token_embeddings(base)  # the vendor overwrote the weights in place
    r = cli("watch", "--out", tmp_path / "runs", "--json")
    assert r.rc == 1, r.err
    (row,) = json.loads(r.out)
    assert row["status"] == "changed" and row["verdict"] == "regression" and row["run"] == old_run.id
    new = hs.load(row["new_run"])
    assert new.manifest["lineage"]["parent"] == old_run.id
    again = json.loads(cli("watch", "--json").out)[0]
    assert again["status"] == "checked before" and again["new_run"] == row["new_run"]
    assert other.id not in r.out  # not deployed: not watched
    shown = cli("runs", old_run.id)
    assert "[deployed]" in shown.out and f"re-adapted as {new.id}" in shown.out and "drift" in shown.out
    assert f"re-adapted from {old_run.id}" in cli("runs", new.id).out


def test_runs_compare_shows_what_differs(tmp_path, old_run, data, base, cli):
    b = hs.adapt(data, backbone=str(base), seed=5, out=tmp_path / "runs")
    r = cli("runs", "--compare", old_run.id, b.id)
    assert r.rc == 0
    assert "*seed" in r.out and " backbone " not in r.out.split("\n")[3]
    rows = json.loads(cli("runs", "--compare", old_run.id, b.id, "--json").out)["rows"]
    assert {r["field"]: r["same"] for r in rows}["backbone sha256"] is True
    assert {r["field"]: r["same"] for r in rows}["seed"] is False


def test_drift_rejects_bad_options(tmp_path, old_run, base, cli):
    assert cli("drift", old_run.id, "--base", base, "--seeds", "-1").rc == 2
    r = cli("drift", old_run.id, "--base", "no-such-backbone")
    assert r.rc == 2 and "unknown backbone" in r.err and "Traceback" not in r.err
    r = cli("drift", "nosuchrun", "--base", base)
    assert r.rc == 2 and "nosuchrun" in r.err


def test_slice_verdicts_are_secondary_unless_strict(tmp_path, old_run, base, monkeypatch):
    """A check that only regresses on one label slice is listed, and decides only with strict_slices."""
    import headstart.evaluate.drift as d

    real = d.decide

    def fake(result, *, alpha, noise_floor, higher_is_better=True):
        return "regression" if result.n < 40 else real(result, alpha=alpha, noise_floor=noise_floor,
                                                       higher_is_better=higher_is_better)

    monkeypatch.setattr(d, "decide", fake)
    same = shutil.copytree(base, tmp_path / "same")
    res = drift(old_run.id, str(same), out=tmp_path / "runs", report=tmp_path / "r1")
    assert res.verdict == "no significant change" and res.result["slice_regressions"] >= 1
    strict = drift(old_run.id, str(same), out=tmp_path / "runs", report=tmp_path / "r2", strict_slices=True)
    assert strict.verdict == "regression"
