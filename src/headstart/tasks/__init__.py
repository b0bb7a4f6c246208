"""Tasks: what is learned and measured, the third axis beside the backbone and the method.

A task owns the loss and the validation score the trainer selects on (:class:`Objective`), and
the metrics a run is judged by (each with its direction and bounds, from
:mod:`headstart.evaluate.retrieval`'s :class:`MetricSpec`). The trainer, which knows no task,
reads only the objective. Adding a task is one file plus one line in :mod:`.registry`.
"""

from .base import Objective, Task
from .registry import TASKS, get_task, register_task

__all__ = ["Objective", "TASKS", "Task", "get_task", "register_task"]
