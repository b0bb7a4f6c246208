"""The recipe: everything an adaptation is made from, as one typed record.

``adapt`` resolves its arguments into a :class:`Recipe`, validates it once (every problem found
is reported in one line), and runs it; the run's manifest records it (``manifest["recipe"]``),
``adapt --resume`` continues it, ``drift`` re-runs it on a new base with :meth:`Recipe.replace`,
and the eval harness re-makes its test split from it. None of them rebuilds the dict by hand.
"""

from __future__ import annotations

import re

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from .errors import BadInput

SEED_LIMIT = 2**63
"""Seeds are stored as SQLite INTEGERs (signed 64-bit)."""


@dataclass(frozen=True)
class Recipe:
    data: str
    """Training data: a table file or a folder (an absolute path once the run has started)."""
    test: str | None = None
    """Separate test data (then ``data`` is split into train/validation only)."""
    backbone: str = "minilm-l6"
    """Catalog name, ``hf:<id>``, or a local folder/file."""
    method: str = "linear-probe"
    method_options: dict[str, Any] = field(default_factory=dict)
    """Options given to the method (``--set``/``--config``); presets fill the rest at fit time."""
    task: str = "classification"
    seed: int = 0
    text_col: str | None = None
    label_col: str | None = None
    fmt: str | None = None
    header: bool | None = None
    """CSV/TSV/.txt: None detects the header row, False reads every row as data."""
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    precision: str = "auto"
    budget: float | None = None
    """Seconds the whole adaptation may take (None: no limit)."""
    language: str | None = None
    """Speech recognition: the spoken language (a Whisper language code such as ``de``) that a
    multilingual model is prompted with; None: English."""
    task_options: dict[str, Any] = field(default_factory=dict)
    """Options of the task itself (``--task-set``; generation: max_length, overlong, template...)."""
    split_seed: int | None = None
    """Seed of the train/validation/test split when it differs from ``seed`` (None: ``seed``):
    drift's noise-floor re-runs of a retrieval run keep its test queries and vary the training."""

    @property
    def seed_of_split(self) -> int:
        return self.seed if self.split_seed is None else self.split_seed

    def validate(self) -> None:
        """Check every field that can be checked without reading data or loading a model;
        all problems at once, in one line."""
        from .methods import get_method
        from .tasks import get_task

        problems = self.field_problems()
        for check in (lambda: get_task(self.task).options(self.task_options), self.method_object):
            try:
                check()
            except BadInput as e:
                problems.append(str(e))
        if not problems:
            method, task = get_method(self.method), get_task(self.task)
            if not method.supports(task):
                from .methods import METHODS

                fits = [m for m, cls in METHODS.items() if cls.supports(task)]
                problems.append(f"method {method.name!r} does not adapt for the task {task.name!r} (it supports "
                                f"{', '.join(method.supported_tasks())}); for {task.name} choose one of {', '.join(fits)}")
            else:
                try:
                    self.method_object().check_task(task)
                except BadInput as e:
                    problems.append(str(e))
        if self.language is not None and not problems and not get_task(self.task).takes_language:
            problems.append(f"--language applies to speech recognition (--task asr), not to the task {self.task!r}; "
                            "leave it out")
        if problems:
            more = f" (and {len(problems) - 1} more: {'; '.join(problems[1:])})" if len(problems) > 1 else ""
            raise BadInput(problems[0] + more)

    def field_problems(self) -> list[str]:
        """What is wrong with the run-wide fields (precision, seed, split fractions, budget): the
        checks ``compare`` shares for its many recipes."""
        from .train import PRECISIONS

        problems: list[str] = []
        if self.language is not None and (not isinstance(self.language, str)
                                          or not re.fullmatch(r"[a-z]{2,3}", self.language)):
            problems.append(f"--language {self.language!r}: give a Whisper language code, e.g. en, de, fr, zh, haw")
        if self.precision not in PRECISIONS:
            problems.append(f"--precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.split_seed is not None and (not isinstance(self.split_seed, int) or isinstance(self.split_seed, bool)
                                            or not 0 <= self.split_seed < SEED_LIMIT):
            problems.append(f"split_seed must be an integer from 0 to 2**63-1 (got {self.split_seed!r})")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed < SEED_LIMIT:
            problems.append(f"--seed must be an integer from 0 to 2**63-1 (got {self.seed!r}); the store records it as a "
                            "64-bit integer")
        v, t = self.val_fraction, 0.0 if self.test is not None else self.test_fraction  # --test: nothing held out
        numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (v, t))
        if not (numbers and 0 < v < 1 and 0 <= t < 1 and v + t < 1):
            problems.append(f"split fractions must be in (0, 1) and sum below 1 (validation {v}, test {t}); "
                            "set --val-fraction / --test-fraction")
        if self.budget is not None and (isinstance(self.budget, bool) or not isinstance(self.budget, (int, float))
                                        or not math.isfinite(self.budget) or self.budget <= 0):
            problems.append(f"--budget must be a positive number of seconds (got {self.budget!r})")
        return problems

    def method_object(self):
        """The method, built from ``method`` and ``method_options`` (options validated)."""
        from .methods import get_method

        return get_method(self.method).from_options(dict(self.method_options))

    def replace(self, **changes) -> Recipe:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (option tuples as lists), as the manifest and ``recipe.json`` record it."""
        out = dataclasses.asdict(self)
        out["method_options"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.method_options.items()}
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recipe:
        """From a recorded recipe. Keys added since (``header``, ``task``) take their defaults;
        an unknown key is refused, since it would mean the recipe asks for something this
        version cannot do."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise BadInput(f"recipe: unknown field {unknown[0]!r} (written by a newer headstart?); known: {', '.join(sorted(names))}")
        if "data" not in d:
            raise BadInput("recipe: no 'data' field; the recorded recipe is damaged")
        fields = dict(d)
        fields["method_options"] = {k: tuple(v) if isinstance(v, list) else v for k, v in (d.get("method_options") or {}).items()}
        return cls(**fields)


__all__ = ["Recipe", "SEED_LIMIT"]
