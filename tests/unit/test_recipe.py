"""The typed recipe: validated once with every problem in one line, recorded and re-read whole."""

from __future__ import annotations

import pytest

from headstart.errors import BadInput
from headstart.recipe import Recipe


def test_every_problem_is_reported_at_once():
    bad = Recipe(data="x.csv", method="lora", method_options={"rank": -1}, seed=-3, precision="fp8", val_fraction=0.9,
                 test_fraction=0.2, budget=0)
    with pytest.raises(BadInput) as e:
        bad.validate()
    msg = str(e.value)
    assert "\n" not in msg
    for needle in ("--precision 'fp8'", "--seed", "split fractions", "--budget", "rank"):
        assert needle in msg, needle


def test_a_method_outside_its_tasks_and_an_unknown_task_are_refused():
    with pytest.raises(BadInput, match="unknown task 'retrieva'"):
        Recipe(data="x.csv", task="retrieva").validate()
    Recipe(data="x.csv").validate()  # the defaults are valid


def test_round_trip_and_recipes_from_before_tasks_and_headers():
    r = Recipe(data="/d/x.csv", method="lora", method_options={"targets": ("query", "value")}, header=False, budget=60.0)
    d = r.to_dict()
    assert d["method_options"]["targets"] == ["query", "value"]  # JSON-ready
    assert Recipe.from_dict(d) == r
    old = {k: v for k, v in d.items() if k not in ("task", "header")}
    assert Recipe.from_dict(old).task == "classification" and Recipe.from_dict(old).header is None
    with pytest.raises(BadInput, match="unknown field 'gpus'"):
        Recipe.from_dict({**d, "gpus": 8})
    with pytest.raises(BadInput, match="no 'data'"):
        Recipe.from_dict({"method": "lora"})


def test_the_manifest_records_the_recipe_drift_and_resume_re_read(train_csv, tiny_bert, tmp_path):
    import headstart as hs
    from headstart.evaluate.harness import recipe_of

    run = hs.adapt(train_csv, backbone=str(tiny_bert), out=tmp_path / "runs", seed=5)
    recipe = recipe_of(run.manifest)
    assert isinstance(recipe, Recipe) and recipe.seed == 5 and recipe.data == str(train_csv.resolve())
    assert recipe.replace(seed=6).seed == 6 and recipe.seed == 5  # frozen: replace makes a new one
