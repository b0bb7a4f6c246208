"""The contrastive (SetFit-style) method beyond the shared contract: its pair loss by hand, the
batches it draws, budget stops, export of the tuned body, bad options, and its place in the plan."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import headstart as hs
from headstart.errors import BadInput
from headstart.methods.contrastive import batch_plan, pair_loss, pair_loss_blocked
from headstart.plan.recommend import plan


@pytest.fixture
def data(tmp_path, data_helpers):
    rows, write = data_helpers
    return write(tmp_path / "train.csv", rows(80, seed=4))


def test_pair_loss_by_hand():
    # Three examples: a and b of class 0 at 60 degrees, c of class 1 orthogonal to a.
    a, b, c = [1.0, 0.0], [0.5, math.sqrt(3) / 2], [0.0, 3.0]  # c unnormalised: cosine ignores length
    f = torch.tensor([a, b, c])
    y = torch.tensor([0, 0, 1])
    # pairs: (a,b) positive, cos 0.5 -> (0.5 - 1)^2 = 0.25; (a,c) negative, cos 0 -> 0;
    # (b,c) negative, cos sqrt(3)/2 -> 0.75. Positives and negatives weigh half each:
    expected = 0.5 * 0.25 + 0.5 * (0.0 + 0.75) / 2
    assert float(pair_loss(f, y)) == pytest.approx(expected)
    # Perfectly arranged embeddings cost nothing; one kind of pair only is a plain mean.
    assert float(pair_loss(torch.tensor([a, a, [0.0, 1.0]]), y)) == pytest.approx(0.0, abs=1e-7)
    assert float(pair_loss(torch.tensor([a, b]), torch.tensor([1, 1]))) == pytest.approx(0.25)


def test_blocked_pair_loss_equals_the_pairwise_one():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(37, 5, generator=g)
    y = torch.randint(0, 3, (37,), generator=g)
    for block in (1, 8, 1024):  # a block that cuts the rows unevenly, and one that holds them all
        assert float(pair_loss_blocked(f, y, block=block)) == pytest.approx(float(pair_loss(f, y)), rel=1e-5)
    same = torch.zeros(6, dtype=torch.long)  # one kind of pair only: the plain mean, as pair_loss
    assert float(pair_loss_blocked(f[:6], same, block=4)) == pytest.approx(float(pair_loss(f[:6], same)), rel=1e-5)


def test_the_old_loops_decay_is_the_trainers_schedule_without_warmup():
    from headstart.train.trainer import linear_schedule

    factor = linear_schedule(0, 7)
    assert [factor(s) for s in range(8)] == pytest.approx([max(0.0, 1 - s / 7) for s in range(8)])


def test_trains_through_the_trainer_exact_steps_last_state_one_validation(data, tiny_bert, tmp_path, monkeypatch):
    from headstart.train import trainer as trainer_module

    evaluations = []
    real = trainer_module.Trainer.evaluate
    monkeypatch.setattr(trainer_module.Trainer, "evaluate", lambda self, objective: evaluations.append(1) or real(self, objective))
    # 80 rows, batch 16: ceil(n / 16) batches an "epoch", 7 steps do not fill a whole number of them
    run = hs.adapt(data, backbone=str(tiny_bert), method="contrastive", out=tmp_path / "runs",
                   method_options={"steps": 7, "batch_size": 16, "lr": 1e-3})
    fit = run.manifest["method"]["fit"]
    assert fit["steps"] == 7 and len(fit["pair_loss"]) == 7 and fit["stopped_by"] == "steps"
    assert len(evaluations) == 1  # at the end only (the last state is kept: nothing to select)
    assert 0 <= fit["val_pair_loss"] <= 2.5
    assert not (tmp_path / "runs" / ".partial").exists()  # the checkpoint went with the finished run


def test_batches_take_everything_when_it_fits_else_balanced_draws():
    small = np.array([0, 1, 0, 1, 2, 2])
    assert all(list(b) == list(range(6)) for b in batch_plan(small, 8, 3, seed=0))
    labels = np.repeat([0, 1, 2, 3], [50, 30, 10, 4])
    steps = batch_plan(labels, 8, 20, seed=1)
    assert len(steps) == 20 and all(len(b) == 8 for b in steps)
    for b in steps:
        counts = np.bincount(labels[b], minlength=4)
        assert all(c == 0 or c >= 2 for c in counts), counts  # every class present has a positive pair
    seen = np.unique(np.concatenate(steps))
    assert set(labels[seen]) == {0, 1, 2, 3}
    assert [list(b) for b in batch_plan(labels, 8, 20, seed=1)] == [list(b) for b in steps]  # seeded


def test_budget_stops_training_and_still_fits_the_head(data, tiny_bert, tmp_path):
    run = hs.adapt(data, backbone=str(tiny_bert), method="contrastive", budget=1e-9, out=tmp_path / "runs")
    fit = run.manifest["method"]["fit"]
    assert fit["stopped_by"] == "budget" and fit["steps"] == 0
    assert run.predict(["good movie"]).probabilities.shape == (1, 2)


def test_the_body_is_tuned_and_exports_as_a_plain_folder(data, tiny_bert, tmp_path):
    run = hs.adapt(data, backbone=str(tiny_bert), method="contrastive", out=tmp_path / "runs",
                   method_options={"steps": 6, "batch_size": 16, "lr": 1e-3})
    fit = run.manifest["method"]["fit"]
    assert fit["steps"] == 6 and len(fit["pair_loss"]) == 6 and fit["examples_per_step"] == 16
    assert fit["pair_loss"][-1] < fit["pair_loss"][0]
    record = hs.export(hs.load(run.path), tmp_path / "export")  # checks its predictions against the run's
    assert record["method"] == "contrastive"
    from transformers import AutoModel

    tuned = AutoModel.from_pretrained(tmp_path / "export")
    base = AutoModel.from_pretrained(tiny_bert)
    moved = [n for n, p in tuned.named_parameters() if not torch.equal(p, dict(base.named_parameters())[n])]
    assert moved and not any("word_embeddings" in n for n in moved)  # token embeddings stay frozen


@pytest.mark.parametrize("option, value, message", [
    ("batch_size", 1, "at least 2"), ("steps", 0, "integer >= 1"), ("lr", -1.0, "number > 0"),
    ("C", 0, "C must be"), ("train_embeddings", "yes", "true or false"),
])
def test_bad_options_are_one_line_errors(cli, data, tiny_bert, tmp_path, option, value, message):
    with pytest.raises(BadInput, match=message):
        hs.adapt(data, backbone=str(tiny_bert), method="contrastive", method_options={option: value}, out=tmp_path / "runs")
    r = cli("adapt", data, "--backbone", tiny_bert, "--method", "contrastive", "--set", f"{option}={value}", "--out", tmp_path / "r")
    assert r.rc == 2 and message in r.err and "Traceback" not in r.err
    assert not list((tmp_path / "r").glob("*/manifest.json"))  # nothing half-written


def test_plan_prices_contrastive_and_recommends_it_few_shot(tmp_path, tiny_bert, data_helpers):
    rows, write = data_helpers
    few = write(tmp_path / "few.csv", rows(16, seed=5))
    p = plan(few, backbones=[str(tiny_bert)], sample=20)
    assert p.profile["regime"] == "few"
    row = next(c for c in p.candidates if c.method == "contrastive")
    lp = next(c for c in p.candidates if c.method == "linear-probe")
    assert lp.predicted_s < row.predicted_s < math.inf
    assert p.recommended.method == "contrastive" and "contrastive" in p.recommended.why
