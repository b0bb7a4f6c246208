"""`headstart plan` and `adapt --method auto` on tiny random models: candidates, cost model,
budget and memory limits, cached throughput, and what gets recorded."""

from __future__ import annotations

import json

import pytest

import headstart as hs
from headstart.errors import BadInput
from headstart.plan import cost
from headstart.plan.recommend import detect_scripts, plan, table


@pytest.fixture
def data(tmp_path, data_helpers):
    rows, write = data_helpers
    return write(tmp_path / "train.csv", rows(80, seed=2))


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory, tiny_bert):
    pytest.importorskip("onnx")
    from headstart.backbones.testing import tiny_onnx_text_model

    return tiny_onnx_text_model(tmp_path_factory.mktemp("onnx") / "m", source=tiny_bert)


def test_plan_weighs_every_backbone_and_method_it_can_run(data, tiny_bert, tiny_onnx):
    p = plan(data, backbones=[str(tiny_bert), str(tiny_onnx)], sample=40)
    combos = {(c.backbone, c.method) for c in p.candidates}
    assert {(str(tiny_bert), m) for m in ("linear-probe", "lora", "adapter", "finetune")} <= combos
    assert {c.method for c in p.candidates if c.backbone == str(tiny_onnx)} == {"linear-probe"}
    assert p.sample == 40 and p.profile["classes"] == 2 and p.profile["regime"] == "medium"
    assert p.recommended is not None and p.recommended.fits and p.recommended.why.startswith("recommended")
    for c in p.candidates:
        assert 0 <= c.scores["linear_probe_cv"] <= 1 and 0 <= c.scores["knn"] <= 1
        assert c.predicted_s > 0 and c.predicted_mb >= cost.BASE_MB
    lp = next(c for c in p.candidates if c.backbone == str(tiny_bert) and c.method == "linear-probe")
    ft = next(c for c in p.candidates if c.backbone == str(tiny_bert) and c.method == "finetune")
    assert ft.predicted_s > lp.predicted_s and ft.predicted_mb > lp.predicted_mb
    text = table(p)
    assert "recommended: --backbone" in text and "cv-probe" in text


def test_another_build_of_a_candidate_takes_its_scores_without_encoding(data, tiny_bert, tiny_onnx, monkeypatch):
    from dataclasses import replace

    from headstart.catalog import CATALOG, resolve
    from headstart.plan import recommend

    monkeypatch.setitem(CATALOG, "tiny-bert", replace(resolve(str(tiny_bert)), name="tiny-bert"))
    monkeypatch.setitem(CATALOG, "tiny-int8", replace(resolve(str(tiny_onnx)), name="tiny-int8", build_of="tiny-bert"))
    encoded = []
    real = recommend.frozen_features
    monkeypatch.setattr(recommend, "frozen_features", lambda bb, *a, **k: encoded.append(bb.spec.name) or real(bb, *a, **k))

    p = plan(data, backbones=["tiny-int8", "tiny-bert"], sample=40)  # the build first: the original is still scored first
    assert encoded == ["tiny-bert"]
    build = next(c for c in p.candidates if c.backbone == "tiny-int8")
    original = next(c for c in p.candidates if c.backbone == "tiny-bert" and c.method == "linear-probe")
    assert build.method == "linear-probe" and build.scored_as == "tiny-bert" and original.scored_as is None
    assert build.scores == original.scores and "that of tiny-bert" in build.why
    assert build.predicted_s > 0

    encoded.clear()  # without the original among the candidates, the build is scored on its own
    p = plan(data, backbones=["tiny-int8"], sample=40)
    assert encoded == ["tiny-int8"] and p.candidates[0].scored_as is None


def test_budget_and_memory_limits_exclude_candidates(data, tiny_bert):
    p = plan(data, backbones=[str(tiny_bert)], budget=1e-6, sample=40)
    assert p.recommended is None and not any(c.fits for c in p.candidates)
    assert all(c.why.startswith("over the budget") for c in p.candidates)
    assert "nothing fits" in table(p)
    p = plan(data, backbones=[str(tiny_bert)], max_memory="1MB", sample=40)
    assert p.recommended is None and all("--max-memory" in c.why for c in p.candidates)


def test_throughput_is_measured_once_and_cached(data, tiny_bert, monkeypatch):
    plan(data, backbones=[str(tiny_bert)], sample=40)

    def boom(*a, **k):
        raise AssertionError("measured twice")

    monkeypatch.setattr(cost, "_train_rate", boom)
    monkeypatch.setattr(cost, "measure_throughput", boom)
    again = plan(data, backbones=[str(tiny_bert)], sample=40, reuse=False)  # planned again, not read back
    assert again.reused is None and again.candidates[0].scores


def test_predicted_time_scales_with_epochs_and_data():
    tp = cost.Throughput(infer_tokens_s=1000.0, train_tokens_s=250.0, device="cpu", precision="fp32", measured_at="")
    w = cost.Workload(n_train=800, n_val=100, n_test=100, n_classes=4, tokens_per_example=10.0, examples_per_class=200, regime="large")
    lp = cost.predict_seconds("linear-probe", tp, w, 384, None)
    assert lp == pytest.approx(1000 * 10 / 1000 + cost.HEAD_S_PER_NDK * 900 * 384 * 4)
    ft = cost.predict_seconds("finetune", tp, w, 384, 4)
    assert ft == pytest.approx(lp + 4 * 800 * 10 / 250 + 4 * 2.0 * 100 * 10 / 1000)
    assert cost.predict_seconds("lora", tp, w, 384, 4) < ft
    frozen = cost.Throughput(1000.0, None, "cpu", "fp32", "")
    assert cost.predict_seconds("lora", frozen, w, 384, 4) == float("inf")


def test_adapt_method_auto_runs_and_records_the_plan(tmp_path, data, tiny_bert):
    run = hs.adapt(data, backbone=str(tiny_bert), method="auto", out=tmp_path / "runs")
    rec = run.manifest["plan"]
    assert rec["requested"] == {"backbone": str(tiny_bert), "method": "auto"}
    assert rec["chosen"]["method"] == run.manifest["method"]["name"]
    assert rec["chosen"]["backbone"] == str(tiny_bert) and rec["candidates"]
    assert run.manifest["recipe"]["method"] == run.manifest["method"]["name"]


def test_plan_cli(cli, data, tiny_bert):
    r = cli("plan", data, "--backbones", tiny_bert, "--sample", "40", "--json")
    assert r.rc == 0, r.err
    out = json.loads(r.out)
    assert out["recommended"]["backbone"] == str(tiny_bert)
    assert cli("plan", data, "--backbones", tiny_bert, "--max-memory", "lots").rc == 2
    r = cli("plan", data, "--backbones", tiny_bert, "--methods", "scratch")
    assert r.rc == 2 and "scratch" in r.err
    assert cli("plan", data, "--backbones", tiny_bert, "--sample", "5").rc == 2


def test_bad_inputs(data, tiny_bert, tmp_path):
    with pytest.raises(BadInput, match="--score"):
        plan(data, backbones=[str(tiny_bert)], score="accuracy")
    with pytest.raises(BadInput, match="--budget"):
        plan(data, backbones=[str(tiny_bert)], budget="soon")
    with pytest.raises(BadInput, match="name a backbone"):
        hs.adapt(data, backbone="auto", method="qlora", out=tmp_path / "r")


def test_detect_scripts():
    assert detect_scripts(["이 영화 정말 좋아요", "the movie was good and i loved it"]) == {"ko": 0.5, "en": 0.5}
    assert list(detect_scripts(["la película fue muy buena y me encantó mucho"])) == ["other-latin"]


def test_a_class_with_one_example_is_a_clear_error(tmp_path, tiny_bert, cli, data_helpers):
    rows, write = data_helpers
    path = write(tmp_path / "one.csv", rows(20) + [("the film was great", "rare")])
    r = cli("plan", path, "--backbones", tiny_bert)
    assert r.rc == 2 and "'rare'" in r.err and "single example" in r.err and "Traceback" not in r.err


def test_costs_and_regime_follow_the_split_adapt_will_make(tmp_path, data_helpers, tiny_bert, cli):
    rows, write = data_helpers
    data = write(tmp_path / "train.csv", rows(44, seed=3))  # 22 per class
    test = write(tmp_path / "test.csv", rows(10, seed=4))
    held = plan(data, backbones=[str(tiny_bert)], sample=40)
    given = plan(data, backbones=[str(tiny_bert)], sample=40, test_examples=10)
    assert held.profile["examples_per_class"] == given.profile["examples_per_class"] == 22
    # Without a test file adapt holds 20% out for test: ~15 per class left to train on (few-shot
    # presets); with one, only the 10% for validation: 20 per class (medium).
    assert held.profile["regime"] == "few" and given.profile["regime"] == "medium"
    assert held.profile["train_examples"] < given.profile["train_examples"] == 40
    assert "20 in the training split (medium regime)" in table(given)
    ft_held, ft_given = (next(c for c in p.candidates if c.method == "finetune") for p in (held, given))
    assert ft_held.predicted_s != ft_given.predicted_s

    # adapt --method auto plans on exactly the split it then makes.
    run = hs.adapt(data, test=test, backbone=str(tiny_bert), method="auto", out=tmp_path / "runs")
    assert run.manifest["plan"]["profile"]["train_examples"] == run.manifest["data"]["split"]["train"] == 40
    run = hs.adapt(data, backbone=str(tiny_bert), method="auto", out=tmp_path / "runs")
    assert run.manifest["plan"]["profile"]["train_examples"] == run.manifest["data"]["split"]["train"] < 40

    r = cli("plan", data, "--backbones", tiny_bert, "--sample", "40", "--test", test, "--json")
    assert r.rc == 0, r.err
    assert json.loads(r.out)["profile"]["train_examples"] == 40
    r = cli("plan", data, "--backbones", tiny_bert, "--test", tmp_path / "missing.csv")
    assert r.rc == 2 and "missing.csv" in r.err and "Traceback" not in r.err


def test_padding_is_counted_as_the_batches_make_it():
    assert cost.padded_tokens([4, 2, 2, 1], [[0, 1], [2, 3]]) == 4 + 4 + 2 + 2
    assert cost.padding_ratio([], 100, batch_size=32) == 1.0
    assert cost.padding_ratio([5] * 10, 1000, batch_size=32, bucketed=False) == 1.0
    # Half the texts 1 token, half 9 (mean 5): a random batch of 32 almost always holds a 9, so it
    # costs ~9/5 of its real tokens; length-ordered batches (the encoder's, the trainer's buckets)
    # pad almost nothing; contrastive's sorted micro-batches of 8 inside random batches sit between.
    two = [1, 9]
    random_ = cost.padding_ratio(two, 4000, batch_size=32, bucketed=False)
    micro = cost.padding_ratio(two, 4000, batch_size=32, bucketed=False, micro=8)
    bucketed = cost.padding_ratio(two, 4000, batch_size=32)
    encoded = cost.padding_ratio(two, 4000, budget=(2048, 128))
    assert random_ == pytest.approx(9 / 5, rel=0.02)
    assert bucketed < 1.05 and encoded < 1.05 and bucketed < micro < random_


def test_predicted_time_counts_padding():
    tp = cost.Throughput(infer_tokens_s=1000.0, train_tokens_s=250.0, device="cpu", precision="fp32", measured_at="")
    flat = cost.Workload(n_train=800, n_val=100, n_test=100, n_classes=4, tokens_per_example=5.0, examples_per_class=200,
                         regime="large", lengths=[5] * 50)
    mixed = cost.Workload(**{**flat.__dict__, "lengths": [1, 9] * 25})
    for method in ("finetune", "contrastive"):
        assert cost.predict_seconds(method, tp, mixed, 384, 4) > cost.predict_seconds(method, tp, flat, 384, 4)


def test_predicted_memory_grows_with_what_is_trained_and_the_longest_batch(data, tiny_bert):
    p = plan(data, backbones=[str(tiny_bert)], sample=40)
    tp = next(iter(json.loads((hs._util.cache_dir() / "throughput.json").read_text()).values()))
    assert tp["train_bytes_per_token"] > 0  # measured in calibration, with the rates
    mb = {c.method: c.predicted_mb for c in p.candidates}
    assert mb["linear-probe"] <= mb["lora"] <= mb["finetune"]  # tiny weights: equal to the MB


    t = cost.Throughput(1000.0, 250.0, "cpu", "fp32", "", train_bytes_per_token=100_000.0)
    short = cost.Workload(n_train=800, n_val=100, n_test=100, n_classes=4, tokens_per_example=10.0, examples_per_class=200,
                          regime="large", lengths=[10] * 50)
    long_tail = cost.Workload(**{**short.__dict__, "lengths": [10] * 49 + [100]})
    lora = cost.predict_memory_mb("lora", 1_000_000, t, short, 32)
    assert cost.predict_memory_mb("linear-probe", 1_000_000, t, short) < lora < cost.predict_memory_mb("finetune", 1_000_000, t, short)
    # twice the saved bytes of a batch of 32 examples of the longest length, on top of the rest
    assert cost.predict_memory_mb("lora", 1_000_000, t, long_tail, 32) - lora == pytest.approx(2 * 100_000 * 32 * 90 / 2**20)
    assert cost.predict_memory_mb("lora", 1_000_000, cost.Throughput(1000.0, None, "cpu", "fp32", ""), short) == float("inf")
