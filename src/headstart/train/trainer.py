"""The one training loop every trained method uses.

What it does, in order of how much it matters on a CPU:

- **Length-bucketed dynamic padding** (:func:`bucketed_batches`): each epoch the examples are
  shuffled, cut into pools of ``50 x batch_size``, each pool sorted by length and cut into
  batches, and the batch order shuffled. Every batch then pads to nearly its own length; random
  batches (the usual ``DataCollatorWithPadding`` recipe) pay for ~3x the tokens on banking77.
- **bf16 autocast with fp32 master weights** where the hardware has bf16. Frozen linear weights
  (LoRA's, adapters' base) are cast to bf16 once for the whole fit instead of on every call.
- **Gradient accumulation** with the loss normalised by the examples in the *optimizer step*
  (sum of per-example losses / step size), so micro-batches of unequal size weigh correctly.
- **Early stopping** on the task's selection metric in its direction (ties broken by the
  validation loss), evaluated every ``eval_every`` epochs; the best trainable state is kept and
  restored at the end (``keep="last"``: the final state, as SetFit does). The loop knows no task: the loss and the validation score come from the
  task's :class:`~headstart.tasks.Objective` (targets, pairs, corpora stay inside it).
- **A time budget** checked before every step: the loop stops cleanly, evaluates, and keeps the
  best state seen.
- **Checkpoints** every ``checkpoint_every_s`` seconds and at every evaluation: trainable tensors,
  optimizer, scheduler, RNG, position in the epoch, best state and history. Resuming recomputes
  the epoch's batch order from the seed and continues from the saved step, so an interrupted and
  resumed fit ends with the same weights as an uninterrupted one. An interrupt between two steps
  (Ctrl-C, or ``on_step`` raising ``KeyboardInterrupt``) saves a checkpoint of that step first.
- **Several processes** under ``accelerate launch`` (:mod:`headstart.train.distributed`): the
  model is wrapped for DDP, ``batch_size`` is the global batch (each rank takes its slice of every
  step, losses divided by the global step size), the main rank evaluates and broadcasts the
  scores, the budget stops every rank at the same step, and only the main rank writes checkpoints.
  Without a launch none of this runs (nothing from ``accelerate`` is imported).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._util import progress, status
from ..tasks.base import Objective
from .budget import Deadline
from .checkpoint import load_checkpoint
from .distributed import session as distributed_session
from .losses import step_share
from .checkpoint import save_checkpoint as write_checkpoint

POOL_BATCHES = 50
"""Batches per length-sorting pool: large enough to pad little, small enough to stay shuffled."""


@dataclass
class TrainSettings:
    """The optimisation recipe besides learning rates (those travel in the parameter groups)."""

    epochs: float
    batch_size: int
    grad_accum: int
    warmup_ratio: float
    weight_decay: float
    max_grad_norm: float
    patience: int
    eval_every: float
    keep: str = "best"
    """Which trainable state the fit ends with: ``"best"`` (the best validation state, restored at
    the end) or ``"last"`` (the final one, as SetFit keeps; the starting point is then not
    evaluated, since it cannot be chosen)."""
    max_steps: int | None = None
    """Optimizer steps of the whole schedule when given (a recipe counted in steps, not epochs);
    otherwise ``ceil(epochs x steps per epoch)``."""

    def __post_init__(self) -> None:
        if self.keep not in KEEP:
            raise ValueError(f"TrainSettings.keep={self.keep!r}: expected one of {', '.join(KEEP)}")
        if self.max_steps is not None and not (isinstance(self.max_steps, int) and self.max_steps >= 1):
            raise ValueError(f"TrainSettings.max_steps={self.max_steps!r}: expected an integer >= 1 or None")


KEEP = ("best", "last")


@dataclass
class RunControl:
    """What the run (not the recipe) decides: precision, seed, budget, checkpoint place."""

    precision: str = "fp32"
    seed: int = 0
    budget_s: float | None = None
    """Seconds of training (the loop alone; ``deadline`` bounds the whole adaptation)."""
    deadline: Deadline | None = None
    """The whole adaptation's end: a step starts only if it and the work after training still fit."""
    checkpoint_path: Path | None = None
    checkpoint_every_s: float = 120.0
    on_step: Callable[[int], None] | None = None
    """Called after every optimizer step with the global step (tests use it to interrupt a fit)."""


@dataclass
class TrainResult:
    steps: int
    epochs_done: float
    stopped_by: str
    metric: str
    """The selection metric's name (the task's)."""
    best_val: float
    """Its best validation value."""
    best_step: int
    history: list[dict] = field(default_factory=list)
    train_s: float = 0.0
    examples_seen: int = 0
    tokens_seen: int = 0
    padded_tokens_seen: int = 0
    resumed_from_step: int | None = None
    train_losses: list[float] = field(default_factory=list)
    """The training loss of every optimizer step (kept across a resume)."""
    processes: int = 1
    """Processes that trained together (``world_size`` of a distributed launch; 1 without one)."""

    @property
    def examples_per_s(self) -> float:
        return self.examples_seen / self.train_s if self.train_s > 0 else 0.0


def bucketed_batches(lengths: list[int], batch_size: int, rng: np.random.Generator) -> list[list[int]]:
    """One epoch of index batches with similar lengths inside each batch, in shuffled order."""
    n = len(lengths)
    perm = rng.permutation(n)
    pool = batch_size * POOL_BATCHES
    batches: list[list[int]] = []
    for start in range(0, n, pool):
        chunk = sorted(perm[start : start + pool].tolist(), key=lambda i: -lengths[i])
        batches.extend(chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size))
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def linear_schedule(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Linear warmup to the peak rate, then linear decay to zero at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


def frozen_linears_in_bf16(module: nn.Module, enabled: bool):
    """Frozen linear weights (LoRA's and adapters' base) in bf16 for the whole fit, when training
    in bf16; trainable weights stay fp32 masters."""
    from .precision import linears_in_bf16

    return linears_in_bf16(module, frozen_only=True) if enabled else nullcontext()


class Trainer:
    """Train ``model`` (a module mapping a collated batch to the task's outputs) on index batches.

    ``collate(indices) -> dict`` builds a batch; ``lengths`` are per-example costs used for
    bucketing and for counting tokens; the :class:`~headstart.tasks.Objective` gives the
    per-example loss of the outputs and scores the validation split; ``param_groups`` are the optimizer groups (each with its
    ``lr``); ``trainable_state()`` / ``load_trainable_state()`` read and write exactly what trains
    (what checkpoints and the best-state copy hold).
    """

    def __init__(
        self,
        model: nn.Module,
        settings: TrainSettings,
        control: RunControl,
        *,
        param_groups: list[dict],
        trainable_state: Callable[[], dict[str, torch.Tensor]],
        load_trainable_state: Callable[[dict[str, torch.Tensor]], None],
        set_train_mode: Callable[[], None],
        device: torch.device,
    ):
        self.model = model
        self.s = settings
        self.c = control
        self.param_groups = param_groups
        self.params = [p for g in param_groups for p in g["params"]]
        self.trainable_state = trainable_state
        self.load_trainable_state = load_trainable_state
        self.set_train_mode = set_train_mode
        self.device = device

    def _autocast(self):
        if self.c.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def evaluate(self, objective: Objective) -> dict[str, float]:
        """The objective's validation scores, in eval mode, without gradients, at the run's precision."""
        self.model.eval()
        with torch.inference_mode(), self._autocast():
            return objective.evaluate(self.model)

    def fit(
        self,
        *,
        train_lengths: list[int],
        collate_train: Callable[[list[int]], dict[str, torch.Tensor]],
        objective: Objective,
        batches: Callable[[np.random.Generator], list[list[int]]] | None = None,
    ) -> TrainResult:
        """Train until the schedule (``epochs`` x nominal steps per epoch), early stopping or the
        budget ends it. ``batches(rng)`` gives one epoch's index batches from that epoch's seeded
        generator (default: :func:`bucketed_batches`; a task may pass a sampler such as
        :func:`~headstart.train.sampling.no_duplicate_batches`, whose epochs can hold a batch or two
        more): the position is kept as (epoch, batch within it), so resuming is exact either way."""
        s, c = self.s, self.c
        n = len(train_lengths)
        if batches is None:
            batches = lambda rng: bucketed_batches(train_lengths, s.batch_size, rng)  # noqa: E731
            steps_per_epoch = math.ceil(n / s.batch_size)
        else:
            # A sampler with constraints (no duplicate texts in a batch) can need many more, smaller
            # batches than n / batch_size: an epoch is what its first epoch holds.
            steps_per_epoch = max(1, len(batches(np.random.default_rng([c.seed, 0]))))
        total_steps = s.max_steps if s.max_steps is not None else max(1, math.ceil(steps_per_epoch * s.epochs))
        warmup = int(round(s.warmup_ratio * total_steps))
        eval_interval = max(1, int(round(s.eval_every * steps_per_epoch)))

        # The fused kernel updates every tensor in one pass (one launch on a GPU); on the CPU it
        # measured the same as the per-tensor loop (benchmarks/lora_step.py).
        optimizer = torch.optim.AdamW(self.param_groups, weight_decay=s.weight_decay, fused=True)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(warmup, total_steps))
        dist = distributed_session(self.device)  # Local (pass-through) without a distributed launch

        state = {"step": 0, "epoch": 0, "in_epoch": 0, "best": (-math.inf, -math.inf), "best_step": 0, "bad_evals": 0, "history": [], "elapsed_s": 0.0,
                 "examples": 0, "tokens": 0, "padded": 0, "best_state": None, "train_losses": []}
        resumed_from = None
        if c.checkpoint_path is not None and c.checkpoint_path.is_file():
            ckpt = load_checkpoint(c.checkpoint_path)
            self.load_trainable_state(ckpt["trainable"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            rank_rng = ckpt.get("rank_rng")  # [cpu, own GPU's] generator of each rank, from a distributed fit
            own = rank_rng[dist.rank] if rank_rng is not None and len(rank_rng) == dist.world else None
            torch.set_rng_state(own[0] if own is not None else ckpt["torch_rng"])
            if ckpt.get("cuda_rng") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(ckpt["cuda_rng"])  # dropout on a GPU draws from these
            if own is not None and own[1] is not None:
                torch.cuda.set_rng_state(own[1], self.device)
            state.update(ckpt["state"])
            resumed_from = state["step"]
            status(f"resuming from step {resumed_from} of {total_steps} ({c.checkpoint_path})")
        keep_best = s.keep == "best"
        if keep_best and state["best_state"] is None:
            state["best_state"] = _clone(self.trainable_state())
        # DDP under a distributed launch (parameters broadcast from rank 0); unchanged otherwise.
        # The checkpoint and the best state read the unwrapped module's tensors (the same ones).
        find_unused = dist.world > 1 and dist.any(self._has_unused_parameters(objective, collate_train, n))
        model, step_optimizer = dist.prepare(self.model, optimizer, find_unused=find_unused)

        def save_checkpoint(collective: bool = True) -> None:
            if c.checkpoint_path is None:
                return
            # Every rank's generator, so that a resumed distributed fit draws what it would have
            # drawn; not on an interrupt, where the ranks may stand at different places.
            rank_rng = None
            if dist.world > 1 and collective:
                rank_rng = dist.gather([torch.get_rng_state(),
                                        torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None])
            if not dist.is_main:
                return
            write_checkpoint(
                c.checkpoint_path,
                {"trainable": self.trainable_state(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "torch_rng": torch.get_rng_state(),
                 "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None, "state": state,
                 **({"rank_rng": rank_rng} if rank_rng is not None else {})},
            )

        n_val = objective.val_examples
        metric = objective.metric

        def run_eval() -> bool:
            """Evaluate, keep the best state; True when patience ran out."""
            t_eval = time.perf_counter()
            scores = dist.from_main(lambda: self.evaluate(objective))  # one rank scores, every rank decides alike
            if c.deadline is not None:
                c.deadline.measured(time.perf_counter() - t_eval, n_val)
            state["history"].append({"step": state["step"], "epoch": round(state["step"] / steps_per_epoch, 3),
                                     **{f"val_{k}": round(float(v), 6) for k, v in scores.items()}})
            key = objective.key(scores)
            if key > tuple(state["best"]):
                state["best"], state["best_step"], state["bad_evals"] = key, state["step"], 0
                if keep_best:
                    state["best_state"] = _clone(self.trainable_state())
            else:
                state["bad_evals"] += 1
            return state["bad_evals"] > s.patience

        stopped_by = "epochs"
        t_start = time.perf_counter() - state["elapsed_s"]
        last_ckpt = time.perf_counter()
        if keep_best and not state["history"]:
            run_eval()  # the starting point counts: a probe-initialised head may already be the best
        bar = progress(total_steps, "training", unit="step")
        bar.update(state["step"])
        step_s = 0.0  # mean seconds of one optimizer step, measured in this process

        def next_needs() -> float:
            """Seconds the next step needs, with the validation pass it triggers."""
            evals = (state["step"] + 1) % eval_interval == 0 and c.deadline.s_per_example is not None
            return step_s + (c.deadline.s_per_example * n_val if evals else 0.0)

        # Between steps (after one step's bookkeeping, evaluation and checkpoint, before the next
        # step starts) the state is whole: an interrupt there (Ctrl-C, or on_step raising
        # KeyboardInterrupt) saves a checkpoint first, so the fit resumes from that very step.
        boundary = True
        try:
            while state["step"] < total_steps:
                order = batches(np.random.default_rng([c.seed, state["epoch"]]))
                for idx in order[state["in_epoch"] :]:
                    out_of_time = ((c.budget_s is not None and time.perf_counter() - t_start >= c.budget_s)
                                   or (c.deadline is not None and not c.deadline.allows(next_needs())))
                    if dist.any(out_of_time):  # one rank out of time stops them all, at the same step
                        stopped_by = "budget"
                        break
                    boundary = False
                    t_step = time.perf_counter()
                    loss_value, tokens, padded = dist.all_sum(
                        list(self._step(idx, objective, collate_train, step_optimizer, model, dist, state)))
                    state["tokens"] += tokens
                    state["padded"] += padded
                    done_here = state["step"] + 1 - (resumed_from or 0)
                    step_s += (time.perf_counter() - t_step - step_s) / done_here
                    scheduler.step()
                    state["step"] += 1
                    state["in_epoch"] += 1
                    state["train_losses"].append(round(loss_value, 6))
                    state["elapsed_s"] = time.perf_counter() - t_start
                    if c.deadline is not None:  # the ETA of the steps that fit, not of the whole schedule
                        fits = min(total_steps, state["step"] + 1 + c.deadline.steps_left(step_s))
                        if fits != bar.total:
                            bar.total = fits
                    bar.update(1)
                    best_val = _best_value(state, metric)  # NaN until a first evaluation (keep="last" starts without one)
                    bar.set_postfix({"loss": f"{loss_value:.4f}",
                                     **({f"best val {metric.name}": f"{best_val:.4f}"} if math.isfinite(best_val) else {})},
                                    refresh=False)
                    stop = False
                    if state["step"] % eval_interval == 0 or state["step"] == total_steps:
                        stop = run_eval()
                        save_checkpoint()
                        last_ckpt = time.perf_counter()
                    elif dist.any(time.perf_counter() - last_ckpt >= c.checkpoint_every_s):
                        save_checkpoint()
                        last_ckpt = time.perf_counter()
                    boundary = True
                    if c.on_step is not None:
                        c.on_step(state["step"])
                    if stop and state["step"] < total_steps:
                        stopped_by = "early-stopping"
                        break
                    if state["step"] >= total_steps:
                        break
                else:  # the epoch's batches are used up: the next epoch, from its own seed
                    state["epoch"] += 1
                    state["in_epoch"] = 0
                    continue
                break
        except KeyboardInterrupt:
            if boundary:
                save_checkpoint(collective=False)
            raise
        finally:
            bar.close()
            dist.release()
        if not state["history"] or state["history"][-1]["step"] != state["step"]:
            run_eval()
        state["elapsed_s"] = time.perf_counter() - t_start
        if keep_best:
            self.load_trainable_state(state["best_state"])
        return TrainResult(
            steps=state["step"],
            epochs_done=round(state["step"] / steps_per_epoch, 3),
            stopped_by=stopped_by,
            metric=metric.name,
            best_val=_best_value(state, metric),
            best_step=state["best_step"],
            history=state["history"],
            train_s=state["elapsed_s"],
            examples_seen=state["examples"],
            tokens_seen=state["tokens"],
            padded_tokens_seen=state["padded"],
            resumed_from_step=resumed_from,
            train_losses=list(state["train_losses"]),
            processes=dist.world,
        )

    def _has_unused_parameters(self, objective: Objective, collate, n: int) -> bool:
        """Whether a trainable tensor gets no gradient from the loss (DDP must then look for such
        tensors every step): one forward and backward on the first examples, unwrapped, with the
        gradients and the random generators left as they were."""
        rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        try:
            self.set_train_mode()
            micro = list(range(min(2, n)))
            batch = {key: v.to(self.device) for key, v in collate(micro).items()}
            with self._autocast():
                outputs = self.model(batch)
            step_share(objective, objective.loss(outputs, micro), len(micro), len(micro)).backward()
            return any(p.grad is None for p in self.params)
        finally:
            for p in self.params:
                p.grad = None
            torch.set_rng_state(rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state_all(cuda_rng)

    def _step(self, idx: list[int], objective: Objective, collate, optimizer, model, dist, state: dict) -> tuple[float, int, int]:
        """One optimizer step over ``idx`` in ``grad_accum`` micro-batches; returns this rank's share
        of the step's mean loss and the tokens / padded tokens it saw (the whole step's with one process).

        Under a distributed launch ``idx`` is the global step: this rank trains on its slice, each
        loss divided by the global size and scaled by the world size, since DDP averages the ranks'
        gradients (the sum of the shares is the global step's gradient)."""
        self.set_train_mode()
        optimizer.zero_grad(set_to_none=True)
        total = len(idx)
        mine, weight = dist.shard(idx), 1.0
        if not mine:  # fewer examples than ranks (an epoch's last batch): join the all-reduce with nothing
            mine, weight = idx[:1], 0.0
        size = math.ceil(len(mine) / self.s.grad_accum)
        starts = range(0, len(mine), size)
        loss_sum, tokens, padded = 0.0, 0, 0
        for k, start in enumerate(starts):
            micro = mine[start : start + size]
            batch = {key: v.to(self.device) for key, v in collate(micro).items()}
            if weight:
                for key, mask in batch.items():  # "attention_mask", or one per role ("q.attention_mask", ...)
                    if key == "attention_mask" or key.endswith(".attention_mask"):
                        tokens += int(mask.sum())
                        padded += int(mask.numel())
            # DDP reduces the gradients once per step, in the last micro-batch's backward.
            with dist.no_sync(model) if k < len(starts) - 1 else nullcontext():
                with self._autocast():
                    outputs = model(batch)
                # Sum over the micro-batch, divided by the whole step's size: the accumulated gradient
                # equals the gradient of the step's mean loss whatever the micro-batch sizes.
                loss = step_share(objective, objective.loss(outputs, micro), len(micro), total)
                (loss if dist.world == 1 else loss * (dist.world * weight)).backward()
            loss_sum += float(loss.detach()) * total * weight
        if self.s.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.s.max_grad_norm)
        optimizer.step()
        state["examples"] += total
        return loss_sum / total, tokens, padded


def _best_value(state: dict, metric) -> float:
    """The best validation value of ``metric`` so far (the selection key stores it signed)."""
    best = state["best"][0]
    if not math.isfinite(best):
        return float("nan")
    return best if metric.higher_is_better else -best


def _clone(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in tensors.items()}


__all__ = [
    "RunControl",
    "TrainResult",
    "TrainSettings",
    "Trainer",
    "bucketed_batches",
    "KEEP",
    "frozen_linears_in_bf16",
    "linear_schedule",
]
