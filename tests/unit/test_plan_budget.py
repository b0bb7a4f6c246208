"""The plan's own time: a plan budget read on an injected clock, cheapest candidates first,
candidates the cost model rules out left unscored, throughput scaled by the machine's speed now,
and a saved plan reused by the next plan and by `adapt --method auto` (inside its budget)."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest

import headstart as hs
from headstart.catalog import CATALOG, resolve
from headstart.plan import cost, recommend, saved
from headstart.plan.recommend import METHODS, default_plan_budget, plan, table, within_budget


class FakeClock:
    """A clock that moves only when a test says so."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Encoded(list):
    """Names of the backbones encoded, and the clock their encoding moves."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()


@pytest.fixture
def data(tmp_path, data_helpers):
    rows, write = data_helpers
    return write(tmp_path / "train.csv", rows(80, seed=2))


@pytest.fixture
def two_sizes(tiny_bert, monkeypatch):
    """Two catalog entries of the tiny BERT, one declared small and one large (the scoring order
    reads the catalog's parameter counts)."""
    spec = resolve(str(tiny_bert))
    monkeypatch.setitem(CATALOG, "tiny-small", replace(spec, name="tiny-small", params=1_000))
    monkeypatch.setitem(CATALOG, "tiny-big", replace(spec, name="tiny-big", params=1_000_000_000))
    return ["tiny-big", "tiny-small"]  # the expensive one named first


@pytest.fixture
def encoded(monkeypatch):
    """Backbones the plan encodes its sample with, in order; each encoding moves ``encoded.clock`` 100 s."""
    calls = Encoded()
    real = recommend.frozen_features

    def counting(bb, *a, **k):
        calls.append(bb.spec.name)
        calls.clock.t += 100.0
        return real(bb, *a, **k)

    monkeypatch.setattr(recommend, "frozen_features", counting)
    return calls


@pytest.fixture
def speed(monkeypatch):
    """cost.speed_check returns ``speed.now`` (seconds) instead of measuring."""

    class Speed:
        now = 0.1

    monkeypatch.setattr(cost, "speed_check", lambda: Speed.now)
    return Speed


def test_default_plan_budget_is_a_small_share_of_the_budget_with_a_floor():
    assert default_plan_budget(3600.0) == pytest.approx(180.0)
    assert default_plan_budget(300.0) == recommend.PLAN_FLOOR_S
    assert default_plan_budget(recommend.DEFAULT_BUDGET_S) == pytest.approx(90.0)


def test_the_plan_budget_leaves_the_expensive_candidates_listed_not_scored(data, two_sizes, encoded):
    p = plan(data, backbones=two_sizes, sample=40, plan_budget=50, clock=encoded.clock)
    assert encoded == ["tiny-small"]  # cheapest first; then the 50 s were gone
    big = [c for c in p.candidates if c.backbone == "tiny-big"]
    assert {c.method for c in big} == set(METHODS)  # listed, never dropped
    assert all(c.not_scored == "plan budget" and c.expected_accuracy is None and not c.fits for c in big)
    assert all(c.why.startswith("not scored (plan budget)") for c in big)
    assert p.recommended is not None and p.recommended.backbone == "tiny-small"
    assert p.candidates[-len(big):] == big and not p.complete and p.plan_budget_s == 50
    text = table(p)
    assert "not scored (plan budget): tiny-big" in text and "scored 1 of 2 backbones" in text

    # A larger plan budget does not take the partial plan saved above: it scores both.
    encoded.clear()
    p = plan(data, backbones=two_sizes, sample=40, plan_budget=1000, clock=encoded.clock)
    assert encoded == ["tiny-small", "tiny-big"] and p.complete and p.reused is None
    # ... and that complete plan then stands for any plan budget.
    encoded.clear()
    again = plan(data, backbones=two_sizes, sample=40, plan_budget=50, clock=encoded.clock)
    assert encoded == [] and again.reused is not None
    assert [(c.backbone, c.method, c.expected_accuracy) for c in again.candidates] == \
        [(c.backbone, c.method, c.expected_accuracy) for c in p.candidates]
    assert (again.recommended.backbone, again.recommended.method) == (p.recommended.backbone, p.recommended.method)


def test_a_candidate_predicted_to_overrun_the_plan_budget_is_not_started(data, two_sizes, encoded, speed):
    plan(data, backbones=two_sizes, sample=40, reuse=False, clock=encoded.clock)  # calibrates (reference 0.1 s)
    encoded.clear()
    speed.now = 0.1 * 1e6  # the machine runs a million times slower than at calibration
    p = plan(data, backbones=two_sizes, sample=40, budget=1e12, plan_budget=50, reuse=False, clock=FakeClock())
    # The clock never moved, but encoding tiny-big's sample is predicted far past the 50 s.
    assert encoded == ["tiny-small"]
    big = [c for c in p.candidates if c.backbone == "tiny-big"]
    assert big and all(c.not_scored == "plan budget" and c.predicted_s is not None for c in big)
    assert all("predicted" in c.why for c in big)


def test_candidates_the_cost_model_rules_out_are_not_scored(data, two_sizes, encoded):
    p = plan(data, backbones=two_sizes, budget=1e-6, sample=40, clock=encoded.clock)
    assert encoded == [] and p.recommended is None
    assert all(c.not_scored == "cost" and c.why.startswith("over the budget") and c.why.endswith("not scored")
               for c in p.candidates)
    assert all(c.predicted_s is not None and c.scores == {} for c in p.candidates)


def test_predictions_are_scaled_by_the_speed_now_and_stale_ones_say_so(data, tiny_bert, speed):
    name = str(tiny_bert)
    first = plan(data, backbones=[name], sample=40, reuse=False)
    assert first.speed["factors"] == {name: 1.0}  # measured in this plan
    tp = next(iter(json.loads((hs._util.cache_dir() / "throughput.json").read_text()).values()))
    assert tp["reference_s"] == pytest.approx(0.1)  # the speed check recorded with the calibration

    same = plan(data, backbones=[name], sample=40, reuse=False)
    speed.now = 0.2  # twice as slow now
    slow = plan(data, backbones=[name], sample=40, reuse=False)
    assert slow.speed == {"check_s": 0.2, "factors": {name: 2.0}}
    by_method = {c.method: c.predicted_s for c in same.candidates}
    for c in slow.candidates:
        assert c.speed_factor == 2.0 and c.predicted_s == pytest.approx(2 * by_method[c.method], rel=0.01)
    assert "x2.00" in table(slow)

    # A measurement from before speed checks existed is used as it is, and said to be stale.
    path = hs._util.cache_dir() / "throughput.json"
    cache = json.loads(path.read_text())
    path.write_text(json.dumps({k: {**v, "reference_s": None} for k, v in cache.items()}))
    stale = plan(data, backbones=[name], sample=40, reuse=False)
    assert stale.speed["factors"] == {name: None} and all(c.speed_factor is None for c in stale.candidates)
    assert {c.method: c.predicted_s for c in stale.candidates} == by_method
    assert "may be stale" in table(stale)


def test_a_saved_plan_is_json_keyed_by_data_and_options_and_expires(data, tiny_bert, encoded):
    name = str(tiny_bert)
    p = plan(data, backbones=[name], sample=40)
    files = list((hs._util.cache_dir() / "plans").glob("*.json"))
    assert len(files) == 1
    record = json.loads(files[0].read_text())  # plain JSON, no pickle
    assert record["options"]["sample"] == 40 and record["plan"]["recommended"]["backbone"] == name
    assert record["options"]["backbones"][name]  # the weights' identity is part of the key

    encoded.clear()
    assert plan(data, backbones=[name], sample=40).reused is not None and encoded == []
    assert plan(data, backbones=[name], sample=40, seed=1).reused is None  # other options: planned again
    assert plan(data, backbones=[name], sample=40, reuse=False).reused is None
    assert encoded == [name, name]

    record["saved_at"] = time.time() - saved.REUSE_S - 60  # too old
    files[0].write_text(json.dumps(record))
    encoded.clear()
    assert plan(data, backbones=[name], sample=40).reused is None and encoded == [name]
    assert p.recommended is not None


def test_within_budget_ranks_a_copy_again(data, tiny_bert):
    p = plan(data, backbones=[str(tiny_bert)], sample=40)
    tight = within_budget(p, 1e-9)
    assert tight.recommended is None and not any(c.fits for c in tight.candidates) and tight.budget_s == 1e-9
    assert p.recommended is not None and p.budget_s == recommend.DEFAULT_BUDGET_S  # the original is unchanged


def test_adapt_auto_reuses_the_plan_and_counts_its_time_in_the_budget(tmp_path, data, tiny_bert, encoded):
    name = str(tiny_bert)
    standalone = plan(data, backbones=[name], budget="10m")  # what `headstart plan --budget 10m` makes
    encoded.clear()
    run = hs.adapt(data, backbone=name, method="auto", budget="10m", out=tmp_path / "runs")
    rec = run.manifest["plan"]
    assert encoded == []  # not planned again
    assert rec["reused"] is not None and rec["reused"]["path"].endswith(".json")
    assert rec["chosen"] == {"backbone": standalone.recommended.backbone, "method": standalone.recommended.method}
    assert rec["budget_s"] == 600 and rec["plan_s"] >= 0
    assert rec["adaptation_budget_s"] == pytest.approx(600 - rec["plan_s"], abs=0.011)
    assert run.manifest["budget_s"] == rec["adaptation_budget_s"] == run.manifest["recipe"]["budget"]
    assert rec["plan_budget_s"] == default_plan_budget(600)

    # Without a budget nothing is subtracted; --plan-budget reaches the plan.
    run = hs.adapt(data, backbone=name, method="auto", plan_budget="45s", out=tmp_path / "runs")
    rec = run.manifest["plan"]
    assert rec["budget_s"] is None and rec["adaptation_budget_s"] is None and run.manifest["budget_s"] is None


def test_plan_budget_cli(cli, data, tiny_bert, tmp_path):
    r = cli("plan", data, "--backbones", tiny_bert, "--sample", "40", "--plan-budget", "1m", "--json")
    assert r.rc == 0, r.err
    out = json.loads(r.out)
    assert out["plan_budget_s"] == 60 and out["reused"] is None
    r = cli("plan", data, "--backbones", tiny_bert, "--sample", "40", "--plan-budget", "1m", "--json")
    assert json.loads(r.out)["reused"] is not None
    r = cli("plan", data, "--backbones", tiny_bert, "--sample", "40", "--fresh", "--json")
    assert json.loads(r.out)["reused"] is None
    r = cli("plan", data, "--backbones", tiny_bert, "--plan-budget", "soon")
    assert r.rc == 2 and "--plan-budget" in r.err
    r = cli("adapt", data, "--backbone", tiny_bert, "--method", "auto", "--plan-budget", "0s", "--out", tmp_path / "runs")
    assert r.rc == 2 and "--plan-budget" in r.err
