"""Training on several processes (data parallel, DDP through ``accelerate``).

Launch the ordinary command under ``accelerate``::

    accelerate launch --multi_gpu --num_processes 2 -m headstart adapt train.csv --method lora

(``--multi_gpu`` also on a CPU-only machine: the processes then talk over gloo. ``accelerate
launch --cpu --num_processes 2`` starts *one* process, without telling it, so it trains alone.)
Several machines: ``accelerate config`` on each (machine rank, main address and port), then the
same ``accelerate launch -m headstart adapt ...`` on each; the runs folder must then be a shared
file system for ``--resume`` (only the main process writes checkpoints).

What a distributed launch changes, and what it does not:

- **The recipe's ``batch_size`` is the global batch.** Every process draws the same seeded,
  globally ordered batches (:func:`~headstart.train.trainer.bucketed_batches`); of each optimizer
  step's ``batch_size`` examples, rank ``r`` takes the ``r``-th of ``world_size`` contiguous,
  nearly equal slices (:func:`shard`), in ``grad_accum`` micro-batches of its own. Each example's
  loss is divided by the *global* step size (:func:`~headstart.train.losses.step_share`) and the
  gradients are summed across processes, so N processes with a recipe train the same model as one
  process with that recipe (to float rounding), only faster. Two exceptions, both as with
  ``grad_accum``: dropout draws other masks (each process has its own generator), and losses that
  compare the examples of a batch with each other (in-batch negatives, CoSENT) see each process's
  slice, not the whole batch.
- **Every decision is the same on every rank.** The main process evaluates the validation split
  and broadcasts the scores (early stopping and the best state follow from them on every rank); a
  time budget or deadline stops all processes when any of them runs out (:meth:`Session.any`);
  checkpoints are taken at the same steps everywhere.
- **Only the main process writes**: checkpoints, the interrupted-run folder, the run folder and
  the store row. The other processes print nothing but errors (progress, status lines and warnings
  are silenced; ``python -m headstart`` also discards their standard output), wait for the main
  process to record the run, and exit 0. The feature and identity caches are shared by design
  (SQLite WAL, atomic renames) and may be filled by any process.
- **Resuming** reads the checkpoint on every process (it holds the unwrapped trainable tensors,
  the optimizer and scheduler, and each rank's random generator) and continues at the same step.
- Methods that do not train with the trainer (linear-probe, frozen, ...) compute the same fit on
  every process and gain nothing; ``--backbone/--method auto`` is refused under a distributed
  launch (run ``headstart plan`` first, then launch with the chosen names).

Precision stays headstart's (``--precision``): the accelerator is created with
``mixed_precision="no"`` whatever ``accelerate launch --mixed_precision`` says, and with
``device_placement=False``: :mod:`headstart.device` still decides where the model runs (under a
launch, ``cuda`` is the process's ``LOCAL_RANK`` GPU).

Without a distributed launch (``WORLD_SIZE`` unset or 1) :func:`session` returns :class:`Local`,
which passes everything through unchanged, and ``accelerate`` is never imported: it is an
optional dependency (``pip install 'headstart[distributed]'``).
"""

from __future__ import annotations

import os
import sys
import warnings
from contextlib import nullcontext
from typing import Any

import torch

from ..errors import BadInput


def world_size() -> int:
    """Processes of the launch (``WORLD_SIZE``, set by ``accelerate launch`` / ``torchrun``); 1 without one."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def launched() -> bool:
    """Whether this process is one of several started by a distributed launcher."""
    return world_size() > 1


def rank() -> int:
    """This process's global rank (``RANK``); 0 without a launch."""
    return int(os.environ.get("RANK", "0") or 0) if launched() else 0


def local_rank() -> int:
    """This process's rank on its machine (``LOCAL_RANK``): the GPU it uses."""
    return int(os.environ.get("LOCAL_RANK", "0") or 0) if launched() else 0


def is_main_process() -> bool:
    """True for the process that writes (rank 0), and always without a launch."""
    return rank() == 0


def require_accelerate() -> None:
    """One line when a distributed launch is detected but ``accelerate`` is not installed."""
    if not launched():
        return
    import importlib.util

    if importlib.util.find_spec("accelerate") is None:
        raise BadInput(f"this is a distributed launch (WORLD_SIZE={world_size()}) but accelerate is not installed; "
                       "pip install 'headstart[distributed]' (accelerate>=1.0), or run one process")


def quiet_other_ranks(*, stdout: bool = False) -> None:
    """On a rank other than the main one: no progress bars, status lines or warnings (and, with
    ``stdout``, no standard output); errors still reach stderr. Nothing happens on the main rank."""
    if is_main_process():
        return
    os.environ["HEADSTART_PROGRESS"] = "0"
    warnings.simplefilter("ignore")
    if stdout:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process


def shard(idx: list[int], rank: int, world: int) -> list[int]:
    """Rank ``rank``'s contiguous slice of one step's ``idx`` (the first ``len % world`` ranks take
    one more): the slices, in rank order, are ``idx`` again."""
    base, extra = divmod(len(idx), world)
    start = rank * base + min(rank, extra)
    return idx[start : start + base + (1 if rank < extra else 0)]


class Local:
    """One process: the trainer's distributed hooks, all pass-throughs (nothing imported)."""

    world = 1
    rank = 0
    is_main = True

    def prepare(self, model, optimizer, *, find_unused: bool = False):
        return model, optimizer

    def shard(self, idx: list[int]) -> list[int]:
        return idx

    def no_sync(self, model):
        return nullcontext()

    def all_sum(self, values: list) -> list:
        return values

    def any(self, flag: bool) -> bool:
        return bool(flag)

    def from_main(self, make) -> Any:
        return make()

    def broadcast(self, obj: Any) -> Any:
        return obj

    def gather(self, obj: Any) -> list:
        return [obj]

    def barrier(self) -> None:
        pass

    def release(self) -> None:
        pass


class Session(Local):
    """Several processes: one :class:`accelerate.Accelerator` (created once per process)."""

    def __init__(self, device: torch.device):
        require_accelerate()
        from accelerate import Accelerator

        self.accelerator = Accelerator(cpu=device.type == "cpu", device_placement=False, mixed_precision="no")
        self.device = device
        self.world = self.accelerator.num_processes
        self.rank = self.accelerator.process_index
        self.is_main = self.accelerator.is_main_process
        if self.world != world_size():
            raise BadInput(f"WORLD_SIZE={world_size()} but accelerate set up {self.world} process(es); "
                           "launch with `accelerate launch --multi_gpu --num_processes N -m headstart ...`")

    def prepare(self, model, optimizer, *, find_unused: bool = False):
        """The model wrapped for DDP (parameters broadcast from rank 0) and the optimizer.

        ``find_unused``: some trainable tensor gets no gradient (a pooler the task does not read);
        DDP must then search the autograd graph every step, else it fails on the second step. Not
        set when every tensor is used (DDP warns about the wasted search). ``static_graph`` would
        avoid the search but fails with ``no_sync`` (gradient accumulation) in torch 2.13.
        """
        from accelerate.utils import DistributedDataParallelKwargs

        self.accelerator.ddp_handler = DistributedDataParallelKwargs(find_unused_parameters=find_unused)
        return self.accelerator.prepare(model, optimizer)

    def shard(self, idx: list[int]) -> list[int]:
        return shard(idx, self.rank, self.world)

    def no_sync(self, model):
        return self.accelerator.no_sync(model)

    def _tensor(self, values: list[float]) -> torch.Tensor:
        where = self.accelerator.device if self.device.type != "cpu" else torch.device("cpu")
        return torch.tensor([float(v) for v in values], dtype=torch.float64, device=where)

    def all_sum(self, values: list) -> list:
        """The element-wise sum over ranks (ints stay ints)."""
        t = self._tensor(values)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
        return [int(round(x)) if isinstance(v, int) else x for v, x in zip(values, t.tolist(), strict=True)]

    def any(self, flag: bool) -> bool:
        """True on every rank when it is True on one (a budget that ran out somewhere stops all)."""
        return self.all_sum([1.0 if flag else 0.0])[0] > 0

    def from_main(self, make) -> Any:
        """``make()`` computed on the main rank only, its value on every rank."""
        return self.broadcast(make() if self.is_main else None)

    def broadcast(self, obj: Any) -> Any:
        """The main rank's ``obj`` on every rank."""
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list:
        """Every rank's ``obj``, in rank order, on every rank."""
        out: list = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        self.accelerator.wait_for_everyone()

    def release(self) -> None:
        """Drop the accelerator's references to the wrapped model and optimizer (after a fit)."""
        self.accelerator.free_memory()


_SESSION: Session | None = None


def session(device: torch.device) -> Local:
    """The process's distributed session: :class:`Local` without a launch, else the one
    :class:`Session` (created on first use with ``device``'s type: gloo on the CPU)."""
    global _SESSION
    if not launched():
        return Local()
    if _SESSION is None:
        _SESSION = Session(device)
    return _SESSION


__all__ = ["Local", "Session", "is_main_process", "launched", "local_rank", "quiet_other_ranks", "rank",
           "require_accelerate", "session", "shard", "world_size"]
