"""A time budget for a whole adaptation, not only its training loop.

``--budget 2m`` means the adaptation (reading, loading, the probe head, training, the final
evaluation, prediction on the test set, writing the run) ends within about two minutes. The
pipeline starts a :class:`Deadline` when the adaptation starts; whatever trains asks it before
each step whether the step *and everything that must follow it* still fit. What follows is
predicted from what was measured: the seconds per example of the validation passes so far
(prediction on the test set and the final validation pass run at that speed) plus a fixed
allowance for writing the run folder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .._util import parse_duration
from ..errors import BadInput

def parse_budget(value: float | str | None, option: str = "--budget") -> float | None:
    """Seconds in a time budget given as a number of seconds or a duration such as ``"10m"``
    (:func:`headstart._util.parse_duration`); None stays None. ``adapt``/``compare`` (``--budget``)
    and ``plan`` (``--budget``, ``--plan-budget``) read their budgets with it.

    Raises :class:`~headstart.errors.BadInput` naming ``option`` for a duration without a unit or
    a budget that is not positive.
    """
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        seconds = parse_duration(str(value), option=option)
    if not seconds > 0:
        raise BadInput(f"{option} must be positive (got {value!r})")
    return seconds


WRITE_S = 2.0
"""Seconds kept for writing the run folder and recording it (weights of the tiny to base-size
models here write in well under a second; the rest is slack for a loaded disk)."""


@dataclass
class Deadline:
    end: float
    """``time.perf_counter()`` value by which the adaptation must be done."""
    examples_after: int = 0
    """Examples predicted once training stops (the final validation pass and the test set)."""
    write_s: float = WRITE_S
    s_per_example: float | None = field(default=None)
    """Inference seconds per example, as last measured (None until a pass was timed)."""

    @classmethod
    def start(cls, budget_s: float, examples_after: int = 0) -> Deadline:
        return cls(end=time.perf_counter() + budget_s, examples_after=examples_after)

    def remaining(self) -> float:
        return self.end - time.perf_counter()

    def measured(self, seconds: float, examples: int) -> None:
        """Record an inference pass: ``examples`` took ``seconds``."""
        if examples > 0:
            self.s_per_example = seconds / examples

    def reserve(self) -> float:
        """Seconds the work after training is predicted to take."""
        return self.write_s + (self.s_per_example or 0.0) * self.examples_after

    def allows(self, next_s: float) -> bool:
        """Whether work predicted to take ``next_s`` seconds still leaves the reserve."""
        return self.remaining() - self.reserve() >= next_s

    def steps_left(self, step_s: float) -> int:
        """How many more steps of ``step_s`` seconds fit (for an honest ETA)."""
        if step_s <= 0:
            return 1 << 30
        return max(0, int((self.remaining() - self.reserve()) // step_s))


__all__ = ["Deadline", "WRITE_S"]
