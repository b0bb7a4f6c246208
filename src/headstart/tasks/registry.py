"""The task registry: one explicit line per task, duplicates rejected, close names suggested."""

from __future__ import annotations

from ..errors import BadInput, did_you_mean
from .base import Task
from .classification import Classification
from .retrieval import Retrieval
from .asr import SpeechRecognition
from .similarity import Similarity
from .generation import Generation
from .zero_shot import ZeroShot
from .image_text import ImageText

TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    if task.name in TASKS:
        raise ValueError(f"task {task.name!r} is registered twice")
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise BadInput(f"unknown task {name!r}.{did_you_mean(name, TASKS)} Available: {', '.join(TASKS)}") from None


register_task(Classification())
register_task(Retrieval())
register_task(Similarity())
register_task(SpeechRecognition())
register_task(Generation())
register_task(ZeroShot())
register_task(ImageText())
