"""The trainer loop on a toy model: batching, schedule, accumulation, budget, early stopping."""

from __future__ import annotations

import math
from pathlib import Path
import time

import numpy as np
import pytest
import torch
from torch import nn

from headstart.train.trainer import RunControl, Trainer, TrainSettings, bucketed_batches, linear_schedule


def test_bucketed_batches_cover_every_example_once_and_pad_little():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 60, size=1000).tolist()
    batches = bucketed_batches(lengths, 16, np.random.default_rng(1))
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(1000))
    assert all(len(b) <= 16 for b in batches)
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    random_batches = [list(range(k, min(k + 16, 1000))) for k in range(0, 1000, 16)]
    padded_random = sum(max(lengths[i] for i in b) * len(b) for b in random_batches)
    assert padded / sum(lengths) < 1.1 < padded_random / sum(lengths)


def test_bucketed_batches_are_seeded_and_shuffled():
    lengths = list(range(200))
    a = bucketed_batches(lengths, 8, np.random.default_rng([0, 1]))
    b = bucketed_batches(lengths, 8, np.random.default_rng([0, 1]))
    c = bucketed_batches(lengths, 8, np.random.default_rng([0, 2]))
    assert a == b and a != c
    firsts = [max(lengths[i] for i in batch) for batch in a]
    assert firsts != sorted(firsts, reverse=True)  # batch order is not length order


def test_linear_schedule_warms_up_then_decays_to_zero():
    f = linear_schedule(4, 20)
    values = [f(s) for s in range(21)]
    assert values[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert values[4] == pytest.approx(1.0)
    assert values[20] == 0.0
    assert all(a >= b for a, b in zip(values[4:], values[5:], strict=False))


class Toy(nn.Module):
    """Logistic regression on 2-D points, fed through the trainer's dict-batch interface."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)

    def forward(self, batch):
        return self.lin(batch["x"])


def toy_data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    return x, y


def make_trainer(model, *, lr=0.1, epochs=5.0, batch_size=16, grad_accum=1, patience=100, eval_every=1.0,
                 budget=None, ckpt=None, max_grad_norm=0.0):
    settings = TrainSettings(epochs=epochs, batch_size=batch_size, grad_accum=grad_accum, warmup_ratio=0.0,
                             weight_decay=0.0, max_grad_norm=max_grad_norm, patience=patience, eval_every=eval_every)
    params = list(model.parameters())
    return Trainer(
        model, settings, RunControl(seed=0, budget_s=budget, checkpoint_path=ckpt),
        param_groups=[{"params": params, "lr": lr}],
        trainable_state=lambda: dict(model.named_parameters()),
        load_trainable_state=lambda t: [p.data.copy_(t[k]) for k, p in model.named_parameters()],
        set_train_mode=model.train,
        device=torch.device("cpu"),
    )


def fit(trainer, x, y):
    from headstart.tasks import get_task

    idx = list(range(len(x)))
    objective = get_task("classification").objective(y, [idx], y, lambda i: {"x": x[i]}, torch.device("cpu"))
    return trainer.fit(train_lengths=[1] * len(x), collate_train=lambda i: {"x": x[i]}, objective=objective)


def test_training_lowers_the_loss_and_records_history():
    torch.manual_seed(0)
    model = Toy()
    x, y = toy_data()
    result = fit(make_trainer(model), x, y)
    assert result.history[0]["step"] == 0  # the starting point is evaluated
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]
    assert result.metric == "accuracy" and result.best_val >= 0.9
    assert result.steps == 5 * math.ceil(64 / 16)
    assert result.examples_seen == 5 * 64


def test_gradient_accumulation_matches_one_big_batch():
    x, y = toy_data(48)
    weights = []
    for accum in (1, 3, 16):  # 16 micro-batches of 1 example
        torch.manual_seed(0)
        model = Toy()
        fit(make_trainer(model, epochs=2, batch_size=16, grad_accum=accum), x, y)
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weights[0], weights[2], rtol=1e-5, atol=1e-6)


def test_budget_stops_cleanly_and_keeps_the_best_state():
    torch.manual_seed(0)
    model = Toy()
    x, y = toy_data()
    t0 = time.perf_counter()
    result = fit(make_trainer(model, epochs=10_000, budget=0.3), x, y)
    assert time.perf_counter() - t0 < 5
    assert result.stopped_by == "budget"
    assert 0 < result.steps < 10_000 * 4
    best = max(result.history, key=lambda h: (h["val_accuracy"], -h["val_loss"]))
    assert result.best_step == best["step"]


def test_early_stopping_when_validation_stops_improving():
    torch.manual_seed(0)
    model = Toy()
    x, y = toy_data()
    result = fit(make_trainer(model, lr=0.0, epochs=50, patience=2), x, y)  # lr 0: nothing improves
    assert result.stopped_by == "early-stopping"
    assert len(result.history) == 4  # start + 3 evaluations without improvement (patience 2)
    assert result.best_step == 0


def test_checkpoint_resume_is_exact(tmp_path):
    x, y = toy_data()
    ckpt = tmp_path / "ckpt.pt"

    def train(ckpt=None, interrupt_at=None):
        torch.manual_seed(0)
        model = Toy()
        trainer = make_trainer(model, epochs=6, ckpt=ckpt)
        trainer.c.checkpoint_every_s = 0.0  # checkpoint after every step

        def on_step(step):
            if step == interrupt_at:
                raise KeyboardInterrupt

        trainer.c.on_step = on_step
        fit(trainer, x, y)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    full = train()
    with pytest.raises(KeyboardInterrupt):
        train(ckpt=ckpt, interrupt_at=10)
    assert ckpt.is_file()
    resumed = train(ckpt=ckpt)
    torch.testing.assert_close(full, resumed, rtol=0, atol=0)


def test_the_loop_knows_no_task():
    """Labels, accuracy and cross-entropy live in the task's objective, not in the trainer."""
    import re

    import headstart.train.trainer as trainer_module

    source = Path(trainer_module.__file__).read_text()
    assert not re.search(r"cross_entropy|accuracy|label", source, re.IGNORECASE)


def test_a_lower_is_better_metric_selects_its_minimum():
    """A regression objective (MSE, lower is better) trains and selects through the same loop."""
    from headstart.evaluate.metrics import MetricSpec
    from headstart.tasks import Objective

    torch.manual_seed(0)
    model = Toy()  # 2 outputs: regress both onto the targets
    x, _ = toy_data()
    target = torch.stack([x.sum(1), x[:, 0] - x[:, 1]], 1)
    idx = list(range(len(x)))

    def evaluate(m):
        mse = float(((m({"x": x}) - target) ** 2).mean())
        return {"mse": mse, "loss": mse}

    objective = Objective(loss=lambda out, i: ((out - target[i]) ** 2).mean(1), evaluate=evaluate,
                          metric=MetricSpec("mse", higher_is_better=False, bounds=(0.0, float("inf"))), val_examples=len(x))
    result = make_trainer(model, epochs=20).fit(train_lengths=[1] * len(x), collate_train=lambda i: {"x": x[i]}, objective=objective)
    assert result.metric == "mse"
    assert round(result.best_val, 6) == min(h["val_mse"] for h in result.history) < result.history[0]["val_mse"] / 10
    best = min(result.history, key=lambda h: h["val_mse"])
    assert result.best_step == best["step"]


def test_a_task_sampler_with_uneven_epochs_trains_and_resumes_exactly(tmp_path):
    """A sampler whose epochs hold more batches than n / batch_size (no two examples with one
    key in a batch: 16 examples share key 0) keeps its place by (epoch, batch), not by step."""
    from headstart.tasks import get_task
    from headstart.train.sampling import no_duplicate_batches

    x, y = toy_data()
    keys = [0 if i < 16 else i for i in range(len(x))]
    sampler = lambda rng: no_duplicate_batches(keys, [1] * len(x), 16, rng)  # noqa: E731
    assert len(sampler(np.random.default_rng([0, 0]))) == 16  # 4 nominal batches per epoch, 16 real ones
    idx = list(range(len(x)))

    def train(ckpt=None, interrupt_at=None):
        torch.manual_seed(0)
        model = Toy()
        trainer = make_trainer(model, epochs=6, ckpt=ckpt)
        trainer.c.checkpoint_every_s = 0.0

        def on_step(step):
            if step == interrupt_at:
                raise KeyboardInterrupt

        trainer.c.on_step = on_step
        objective = get_task("classification").objective(y, [idx], y, lambda i: {"x": x[i]}, torch.device("cpu"))
        result = trainer.fit(train_lengths=[1] * len(x), collate_train=lambda i: {"x": x[i]}, objective=objective, batches=sampler)
        return result, torch.cat([p.detach().flatten() for p in model.parameters()])

    full, w_full = train()
    assert full.steps == 6 * 16 and full.epochs_done == 6.0  # an epoch is the sampler's batches, not n / batch_size
    with pytest.raises(KeyboardInterrupt):
        train(ckpt=tmp_path / "c.safetensors", interrupt_at=19)  # epoch 1, batch 3
    resumed, w_resumed = train(ckpt=tmp_path / "c.safetensors")
    assert resumed.resumed_from_step == 19
    torch.testing.assert_close(w_full, w_resumed, rtol=0, atol=0)


def test_keep_last_ends_with_the_final_state_and_max_steps_sets_the_schedule():
    x, y = toy_data()
    torch.manual_seed(0)
    model = Toy()
    trainer = make_trainer(model, lr=0.5, epochs=1.0, eval_every=100.0)
    trainer.s.keep, trainer.s.max_steps = "last", 7  # 4 batches an epoch: 7 steps end inside epoch 1
    seen = {}
    trainer.c.on_step = lambda step: seen.update({step: [p.detach().clone() for p in model.parameters()]})
    result = fit(trainer, x, y)
    assert result.steps == 7 and len(result.train_losses) == 7 and sorted(seen) == list(range(1, 8))
    assert [h["step"] for h in result.history] == [7]  # the start is not evaluated: it cannot be kept
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), seen[7], strict=True))  # the final state
    with pytest.raises(ValueError, match="keep"):
        TrainSettings(epochs=1, batch_size=1, grad_accum=1, warmup_ratio=0, weight_decay=0, max_grad_norm=0,
                      patience=0, eval_every=1, keep="first")


def test_an_interrupt_between_steps_saves_a_checkpoint_and_resumes_exactly(tmp_path):
    """No evaluation and no timed checkpoint before the interrupt: the interrupt itself saves."""
    x, y = toy_data()
    ckpt = tmp_path / "c.safetensors"

    def train(ckpt=None, interrupt_at=None):
        torch.manual_seed(0)
        model = Toy()
        trainer = make_trainer(model, epochs=3, eval_every=100.0, ckpt=ckpt)
        trainer.s.keep = "last"

        def on_step(step):
            if step == interrupt_at:
                raise KeyboardInterrupt

        trainer.c.on_step = on_step
        result = fit(trainer, x, y)
        return result, torch.cat([p.detach().flatten() for p in model.parameters()])

    full, w_full = train()
    with pytest.raises(KeyboardInterrupt):
        train(ckpt=ckpt, interrupt_at=5)
    assert ckpt.is_file()
    resumed, w_resumed = train(ckpt=ckpt)
    assert resumed.resumed_from_step == 5
    assert resumed.train_losses == full.train_losses  # the losses before the interrupt came back too
    torch.testing.assert_close(w_full, w_resumed, rtol=0, atol=0)
