"""The task axis: a registry with one line per task, methods that declare their tasks, and a
recipe that records its task."""

from __future__ import annotations

import pytest

import headstart as hs
from headstart.errors import BadInput
from headstart.methods import METHODS
from headstart.tasks import TASKS, get_task, register_task
from headstart.tasks.classification import Classification


def test_registry_refuses_duplicates_and_suggests_names():
    with pytest.raises(ValueError, match="registered twice"):
        register_task(Classification())
    with pytest.raises(BadInput, match="Did you mean 'classification'"):
        get_task("clasification")


def test_every_task_declares_its_metrics_with_direction_and_bounds():
    for task in TASKS.values():
        assert task.primary in task.metrics
        for m in task.metrics:
            assert isinstance(m.higher_is_better, bool) and m.bounds[0] < m.bounds[1]
        with pytest.raises(BadInput, match="has no metric"):
            task.metric("no-such-metric")


def test_every_method_declares_registered_tasks():
    for name, cls in METHODS.items():
        assert cls.supported_tasks() and set(cls.tasks) <= set(TASKS), name


def test_runs_record_their_task_and_a_method_outside_its_tasks_is_refused(train_csv, tiny_bert, tmp_path, monkeypatch):
    run = hs.adapt(train_csv, backbone=str(tiny_bert), out=tmp_path / "runs")
    assert run.manifest["task"] == "classification" and run.manifest["recipe"]["task"] == "classification"

    class Other(Classification):
        name = "other"

    monkeypatch.setitem(TASKS, "other", Other())
    with pytest.raises(BadInput, match="does not adapt for the task 'other'"):
        hs.adapt(train_csv, backbone=str(tiny_bert), out=tmp_path / "runs2", task="other")
    assert not (tmp_path / "runs2").exists()
