"""Dynamic micro-batching: requests that arrive within a few milliseconds run as one model call.

Each served model has one :class:`MicroBatcher`: one worker thread that owns the model (torch
runs one call at a time there, with the server's thread count), fed by a queue of *jobs* (one
request's items, its verb and parameters, and a future to answer). The worker takes the oldest
job, then keeps gathering jobs of the same verb and parameters until the batch holds
``max_batch`` items or ``max_wait_s`` has passed since that first job arrived, and makes one
call; each request gets its own slice of the results. Jobs of another verb or other parameters
wait for the next call, in arrival order. ``max_batch=1`` turns batching off: one request per
call, as a plain server would (the load test's baseline).

Errors stay with the request that caused them: when a batched call raises
:class:`~headstart.errors.BadInput`, each job of the batch is re-run alone, so one bad item
(a corrupt audio file, say) fails its own request with a 422 and the others still succeed.

Backpressure: at most ``max_queue`` items wait; a request beyond that is refused at once
(:class:`Busy`, answered 503 with ``Retry-After``) rather than queued without bound.
Shutdown (:meth:`MicroBatcher.close`) lets every queued job finish before the worker stops.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import BadInput


class Busy(Exception):
    """The queue is full: the request is refused now (503) instead of waiting without bound."""


@dataclass
class Job:
    key: tuple
    """(verb name, frozen parameters): only jobs with equal keys share a call."""
    items: list
    params: dict
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    arrived: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    def __init__(self, call: Callable[[str, list, dict], list], *, max_batch: int, max_wait_s: float, max_queue: int,
                 threads: int, name: str, on_batch: Callable[[str, int, float], None] | None = None,
                 batch_limit: Callable[[str], int] | None = None, setup: Callable[[], None] | None = None):
        """``call(verb, items, params)`` runs one batch on the model (in the worker thread);
        ``on_batch(verb, items, seconds)`` is told of every call (metrics); ``batch_limit(verb)``
        caps a verb's batch below ``max_batch``; ``setup()`` runs first in the worker (loading)."""
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._call = call
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self._threads = threads
        self._on_batch = on_batch
        self._batch_limit = batch_limit or (lambda verb: max_batch)
        self._setup = setup
        self._jobs: deque[Job] = deque()
        self._cond = threading.Condition()
        self._queued_items = 0
        self._closing = False
        self.ready = threading.Event()
        self.failed: BaseException | None = None
        self._worker = threading.Thread(target=self._run, name=f"headstart-serve-{name}", daemon=True)

    def start(self) -> None:
        self._worker.start()

    @property
    def queued_items(self) -> int:
        return self._queued_items

    async def submit(self, verb: str, items: list, params: dict) -> list:
        """The verb's results for ``items`` (in order), computed in some batch; raises what the call
        raised for these items (BadInput for bad input), :class:`Busy` when the queue is full."""
        loop = asyncio.get_running_loop()
        job = Job((verb, _frozen(params)), items, params, loop.create_future(), loop)
        with self._cond:
            if self._closing:
                raise Busy("the server is shutting down")
            if self._queued_items + len(items) > self.max_queue and self._queued_items > 0:
                raise Busy(f"{self._queued_items} items are already waiting (--max-queue {self.max_queue})")
            self._jobs.append(job)
            self._queued_items += len(items)
            self._cond.notify()
        return await job.future

    def close(self, timeout: float | None = None) -> None:
        """Finish every queued job, then stop the worker."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._worker.is_alive():
            self._worker.join(timeout)

    # -- the worker ------------------------------------------------------------------------------
    def _run(self) -> None:
        import torch

        torch.set_num_threads(self._threads)
        try:
            if self._setup is not None:
                self._setup()
        except BaseException as e:  # noqa: BLE001 - reported by /ready and answered to every request
            self.failed = e
        self.ready.set()
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._answer(batch)

    def _next_batch(self) -> list[Job] | None:
        with self._cond:
            while not self._jobs:
                if self._closing:
                    return None
                self._cond.wait()
            first = self._jobs.popleft()
            batch, size = [first], len(first.items)
            limit = min(self.max_batch, self._batch_limit(first.key[0]))
            deadline = first.arrived + self.max_wait_s
            while size < limit:
                match = next((j for j in self._jobs if j.key == first.key and size + len(j.items) <= limit), None)
                if match is not None:
                    self._jobs.remove(match)
                    batch.append(match)
                    size += len(match.items)
                    continue
                left = deadline - time.perf_counter()
                if left <= 0 or self._closing or limit == 1:
                    break
                self._cond.wait(left)
            self._queued_items -= size
            return batch

    def _answer(self, batch: list[Job]) -> None:
        verb, params = batch[0].key[0], batch[0].params
        items = [it for job in batch for it in job.items]
        if self.failed is not None:
            for job in batch:
                _settle(job, error=self.failed)
            return
        t0 = time.perf_counter()
        try:
            results = self._call(verb, items, params)
        except BadInput as e:
            if len(batch) == 1:
                _settle(batch[0], error=e)
                return
            for job in batch:  # one request's bad item must not fail the others: run each alone
                self._answer([job])
            return
        except Exception as e:  # noqa: BLE001 - a model failure: every request of the batch gets it (500)
            for job in batch:
                _settle(job, error=e)
            return
        if self._on_batch is not None:
            self._on_batch(verb, len(items), time.perf_counter() - t0)
        at = 0
        for job in batch:
            _settle(job, value=results[at:at + len(job.items)])
            at += len(job.items)


def _settle(job: Job, *, value=None, error: BaseException | None = None) -> None:
    def done() -> None:
        if job.future.done():  # the client went away and the request was cancelled
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(value)

    job.loop.call_soon_threadsafe(done)


def _frozen(params: dict) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in params.items()))


__all__ = ["Busy", "MicroBatcher"]
