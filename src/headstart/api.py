"""The public pipeline: data -> backbone -> method -> run -> store.

``adapt`` validates everything cheap (options, data, labels, backbone name) before it loads a
model, and writes the run folder and store row only when every step succeeded.
"""

from __future__ import annotations

import glob
import json
import os
import platform
import re
import shutil
import secrets
import sys
import time
import warnings
from pathlib import Path
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np

from . import __version__
from ._util import home, status
from .backbones import Backbone, check_modality, family_class, open_backbone
from .catalog import BackboneSpec, resolve
from .data import Dataset, load_dataset
from .errors import BadInput, HeadstartError, RunIntegrityError, WriteFailed
from .methods import FitContext, Method, get_method
from .runs.run import FORMAT, MANIFEST, Predictions, read_run_folder, validate_manifest, write_run_folder
from .recipe import Recipe
from .runs.repair import remove_stale_tmp
from .runs.store import Store
from .train import distributed, resolve_precision
from .tasks import get_task
from .tasks.classification import load_with_hint
from .train.budget import Deadline, parse_budget
from .train.checkpoint import LEGACY_NAME as LEGACY_CHECKPOINT
from .train.checkpoint import NAME as CHECKPOINT


def adapt(
    data: str | Path,
    *,
    test: str | Path | None = None,
    backbone: str | None = None,
    method: str | None = None,
    method_options: dict[str, Any] | None = None,
    out: str | Path | None = None,
    seed: int = 0,
    text_col: str | None = None,
    label_col: str | None = None,
    fmt: str | None = None,
    header: bool | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    precision: str = "auto",
    store: str | Path | None = None,
    budget: float | str | None = None,
    plan_budget: float | str | None = None,
    task: str = "classification",
    language: str | None = None,
    task_options: dict[str, Any] | None = None,
    config: str | Path | None = None,
    resume: str | None = None,
    _on_step: Callable[[int], None] | None = None,
) -> Run:
    """Adapt ``backbone`` to the labelled ``data`` with ``method`` and save the run.

    Without ``test`` the data is split (stratified, seeded) into train / validation / test;
    with it, into train / validation and the test file is only used for the final metrics.

    ``budget`` limits training time (seconds, or "90s"/"10m"/"1h"); training stops cleanly and
    keeps its best state; with ``backbone``/``method`` "auto" it includes the plan's time, and
    ``plan_budget`` bounds the plan (default: 5% of ``budget``, at least 30 s). ``config`` is a YAML file of method options (``method_options`` win
    over it). Trained methods checkpoint while they train; ``resume=RUN_ID`` continues a run
    that was interrupted (every other argument then comes from the interrupted run's recipe).
    ``header`` is for CSV/TSV/.txt files: None reads the first row as the header unless it looks
    like data (then refuses), False reads every row as data (columns ``0``, ``1``, ...).

    ``task`` is a registered task (:mod:`headstart.tasks`): "classification" (labelled
    examples) or "retrieval" (query/positive pairs or a collection; see
    :mod:`headstart.tasks.retrieval`). ``backbone``/``method`` left at None take the task's
    defaults: minilm-l6 + linear-probe for classification; for retrieval minilm-l6 + finetune, or
    use-multilingual + frozen when the data is mostly not English; for "asr" (audio paths and
    transcripts, :mod:`headstart.tasks.asr`) whisper-tiny.en + lora. ``language`` (asr only) is the
    spoken language a multilingual Whisper is prompted with (default English). For "generation"
    (instruction data, :mod:`headstart.tasks.generation`) smollm2-135m-instruct + lora;
    ``task_options`` are the task's own options (generation: max_length, overlong, template,
    max_new_tokens, samples).
    """
    distributed.require_accelerate()  # a distributed launch without accelerate: one line, before any work
    distributed.quiet_other_ranks()
    if resume is not None:
        return _resume(resume, out=out, store=store, _on_step=_on_step)
    if distributed.launched() and "auto" in (backbone, method):
        raise BadInput(f"--backbone/--method auto is not planned under a distributed launch (WORLD_SIZE={distributed.world_size()}): "
                       "run `headstart plan` in one process, then launch with the backbone and method it chose")
    task_obj = get_task(task)
    if backbone is None:
        backbone = task_obj.default_backbone(data)
    if method is None:
        method = task_obj.default_method(backbone)
    t_start = time.perf_counter()
    options = {**(_read_config(config) if config is not None else {}), **(method_options or {})}
    budget_s = parse_budget(budget)
    chosen = None
    if (backbone == "auto" or method == "auto") and task != "classification":
        backbone, method, chosen = _auto_task(task, data, backbone, method, budget_s, seed, text_col, label_col, fmt, header,
                                              test, val_fraction, test_fraction, precision)
        budget_s = chosen["adaptation_budget_s"]
    elif backbone == "auto" or method == "auto":
        split = {"test": test, "val_fraction": val_fraction, "test_fraction": test_fraction, "fmt": fmt, "header": header}
        backbone, method, chosen = _auto(data, backbone, method, budget_s, seed, text_col, label_col, precision, split,
                                         plan_budget=plan_budget)
        budget_s = chosen["adaptation_budget_s"]  # what the plan left of the budget
    recipe = Recipe(data=str(data), test=None if test is None else str(test), backbone=backbone, method=method,
                    method_options=options, task=task, seed=seed, text_col=text_col, label_col=label_col, fmt=fmt,
                    header=header, val_fraction=val_fraction, test_fraction=test_fraction, precision=precision,
                    budget=budget_s, language=language, task_options=dict(task_options or {}))
    return adapt_recipe(recipe, out=out, store=store, t_start=t_start, run_id=None, on_step=_on_step, plan=chosen)


def _auto(data, backbone: str, method: str, budget_s, seed, text_col, label_col, precision, split: dict, *,
          plan_budget=None) -> tuple[str, str, dict]:
    """Resolve --backbone auto / --method auto with `plan` (costed on the split this run will make:
    ``split`` holds the test file, the fractions and the format); returns the choice and what to record.

    A saved plan of the same data and options (e.g. from `headstart plan` just before) is reused.
    The plan's time counts inside ``budget_s``: the record's ``adaptation_budget_s`` is what is left
    for the adaptation (None without a budget), and the choice is made within it."""
    # Imported here, not at the top: plan does not import this module (no cycle), but loading it
    # costs every `import headstart` ~40 ms (measured) for the runs that never say "auto".
    from .plan.recommend import METHODS, plan, within_budget

    if method != "auto" and method not in METHODS:
        raise BadInput(f"--backbone auto chooses among backbones for the methods {', '.join(METHODS)}; "
                       f"name a backbone to use {method!r}")
    test_examples = None
    if split["test"] is not None:
        test_examples = len(load_dataset(split["test"], text_col=text_col, label_col=label_col, fmt=split["fmt"],
                                         header=split["header"]))
    if split["header"] is not None:  # plan reads a path without one
        data = load_dataset(data, text_col=text_col, label_col=label_col, fmt=split["fmt"], header=split["header"])
    t_plan = time.perf_counter()
    p = plan(data, backbones=None if backbone == "auto" else [backbone], methods=None if method == "auto" else [method],
             budget=budget_s, seed=seed, text_col=text_col, label_col=label_col, precision=precision, fmt=split["fmt"],
             test_examples=test_examples, val_fraction=split["val_fraction"], test_fraction=split["test_fraction"],
             plan_budget=plan_budget)
    plan_s = round(time.perf_counter() - t_plan, 2)
    left_s = None
    if budget_s is not None:
        left_s = round(budget_s - plan_s, 2)
        if left_s <= 0:
            raise BadInput(f"--budget {budget_s:.0f}s: the plan took {plan_s:.0f}s of it and left nothing to adapt with; "
                           "raise --budget or lower --plan-budget")
        p = within_budget(p, left_s)
    if p.recommended is None:
        raise BadInput(f"--backbone/--method auto: no candidate fits the budget ({p.budget_s:.0f}s); raise --budget")
    r = p.recommended
    status(f"plan: {r.backbone} + {r.method} ({r.why})")
    record = {"requested": {"backbone": backbone, "method": method}, "chosen": {"backbone": r.backbone, "method": r.method},
              "expected_accuracy": r.expected_accuracy, "predicted_s": r.predicted_s, "why": r.why, "score": p.score,
              "sample": p.sample, "profile": p.profile, "plan_s": plan_s, "plan_budget_s": p.plan_budget_s,
              "budget_s": budget_s, "adaptation_budget_s": left_s, "reused": p.reused, "speed": p.speed,
              "candidates": [{"backbone": c.backbone, "method": c.method, "expected_accuracy": c.expected_accuracy,
                              "predicted_s": c.predicted_s, "fits": c.fits, "scores": c.scores, "not_scored": c.not_scored}
                             for c in p.candidates]}
    return r.backbone, r.method, record


def _auto_task(task, data, backbone, method, budget_s, seed, text_col, label_col, fmt, header, test, val_fraction,
               test_fraction, precision) -> tuple[str, str, dict]:
    """--backbone/--method auto for retrieval: the retrieval plan (zero-shot nDCG@10 on a sample of
    the queries, the cost model for the method); its time counts inside the budget."""
    if task != "retrieval":
        raise BadInput(f"--backbone/--method auto: the plan covers classification and retrieval, not {task!r}; name them")
    from .plan.retrieval import plan_retrieval

    t_plan = time.perf_counter()
    p = plan_retrieval(data, backbones=None if backbone == "auto" else [backbone],
                       methods=None if method == "auto" else [method], budget=budget_s, seed=seed, text_col=text_col,
                       label_col=label_col, fmt=fmt, header=header, test=test, val_fraction=val_fraction,
                       test_fraction=test_fraction, precision=precision)
    plan_s = round(time.perf_counter() - t_plan, 2)
    if p.recommended is None:
        raise BadInput(f"--backbone/--method auto: {p.why}; name a backbone and method")
    r = p.recommended
    status(f"plan: {r.backbone} + {r.method} ({p.why})")
    record = {"requested": {"backbone": backbone, "method": method}, "chosen": {"backbone": r.backbone, "method": r.method},
              "why": p.why, "plan_s": plan_s, "budget_s": budget_s, **p.to_dict(),
              "adaptation_budget_s": None if budget_s is None else round(budget_s - plan_s, 2)}
    if budget_s is not None and record["adaptation_budget_s"] <= 0:
        raise BadInput(f"--budget {budget_s:.0f}s: the plan took {plan_s:.0f}s of it and left nothing to adapt with")
    return r.backbone, r.method, record


def adapt_recipe(recipe: Recipe, *, out, store, **kwargs) -> Run:
    """Validate and run one :class:`~headstart.recipe.Recipe` (what a manifest records), and save
    the run. :func:`adapt` builds the recipe from its arguments; ``drift``
    re-runs a recorded one on a new base (``lineage=``), resume continues one (``run_id=``, ``expect=``).

    Keyword arguments are :func:`_adapt_unguarded`'s (``t_start``, ``run_id``, ``on_step``, and
    optionally ``expect``, ``lineage``, ``plan``). The runs folder is checked writable first; the
    folders it had to create are removed again when the adaptation fails, so a failed run leaves
    no empty ``runs/``."""
    recipe.validate()  # every option problem at once, before any folder or model
    method_obj = recipe.method_object()
    distributed.require_accelerate()
    distributed.quiet_other_ranks()
    out_dir = Path(out).expanduser() if out else home() / "runs"
    # Under a distributed launch only the main process writes (folders, checkpoints, run, store row).
    created = writable_folder(out_dir, "--out" if out else "the runs folder (HEADSTART_HOME)") if distributed.is_main_process() else []
    try:
        return _adapt_unguarded(recipe, method_obj, out=out, store=store, **kwargs)
    except BaseException:
        for folder in reversed(created):
            _remove_if_empty(folder / PARTIAL)
            _remove_if_empty(folder)
        raise


def writable_folder(folder: Path, what: str) -> list[Path]:
    """Create ``folder`` (and missing parents) and check a file can be written in it; one line
    naming ``what`` otherwise. Returns the folders created, outermost first."""
    missing = []
    cur = folder
    while not cur.exists():
        missing.append(cur)
        if cur.parent == cur:
            break
        cur = cur.parent
    if cur.exists() and not cur.is_dir():
        where = "is a file" if cur == folder else f"lies beneath the file {cur}"
        raise BadInput(f"{what} {folder} {where}; give a folder (it is created if missing)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        for d in missing:
            _remove_if_empty(d)
        raise BadInput(f"{what} {folder}: cannot write there ({e.strerror or e}); choose a writable folder") from None
    return list(reversed(missing))


def _adapt_unguarded(recipe: Recipe, method_obj: Method, *, out, store, t_start: float, run_id: str | None, on_step,
                     expect: dict | None = None, lineage: dict | None = None, plan: dict | None = None) -> Run:
    """The pipeline proper. ``run_id``/``expect`` are set when resuming an interrupted run;
    ``lineage`` ({"parent": run id, "reason": ...}) when a run is re-adapted from another.

    Under a distributed launch (:mod:`headstart.train.distributed`) every process reads, opens and
    fits; only the main one writes the interrupted-run folder, checkpoints, the run folder and the
    store row. The others then wait for it and return the run it wrote."""
    main = distributed.is_main_process()
    data, test, backbone = recipe.data, recipe.test, recipe.backbone
    seed, precision, budget_s = recipe.seed, recipe.precision, recipe.budget
    deadline = Deadline.start(budget_s) if budget_s is not None else None  # the budget bounds the whole adaptation
    task = get_task(recipe.task)
    spec = resolve(backbone)

    out_dir = Path(out).expanduser() if out else home() / "runs"
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInput(f"--out {out_dir} is a file; give a folder (it is created if missing)")
    store_obj = Store(store)
    if main:
        store_obj.check()  # a damaged store is refused now, not after the fit
        remove_stale_tmp(out_dir)
    if run_id is not None and (out_dir / run_id / MANIFEST).is_file():
        # Resuming a run that finished writing its folder but was not recorded (killed in between):
        # adopt the folder instead of training again, and only then let the checkpoint go.
        if not main:
            return Run(out_dir / run_id, store=store_obj)
        return _adopt_finished(out_dir / run_id, store_obj, out_dir / PARTIAL / run_id)
    td = task.read(recipe)  # the task's splits, or one line naming the file, row and fix
    source = td.train_record["source"]
    if spec.family != "hf-auto":
        check_modality(spec, td.modality, source)
        task.check_backbone(spec, family_class(spec))
    if deadline is not None:
        deadline.examples_after = task.examples(td.val) + task.examples(td.test)  # predicted once training stops
    t_read = time.perf_counter() - t_start

    bb, bb_hash = open_backbone(spec)
    spec = bb.spec
    dist = distributed.session(bb.device)  # a pass-through without a distributed launch
    check_modality(spec, td.modality, source)
    task.check_backbone(spec, type(bb))
    require_trainable(bb, method_obj)
    from .plan.profile import language_warning

    if td.texts is not None and (language := language_warning(td.texts, spec)) is not None:  # e.g. Thai data, an English-only backbone
        warnings.warn(language, stacklevel=2)
    if spec.pinned_sha256 and bb_hash != spec.pinned_sha256:
        warnings.warn(
            f"backbone {spec.name!r}: weights sha256 {bb_hash[:12]}... differ from the pinned {spec.pinned_sha256[:12]}... "
            "(was the package upgraded?); this run records the new hash",
            stacklevel=2,
        )
    used_precision = resolve_precision(precision, spec)
    if expect is not None:
        _check_resumable(expect, td.fingerprint, bb_hash, run_id)
    run_id = run_id or _run_id(spec, method_obj.name)
    if dist.world > 1:
        run_id = dist.broadcast(run_id)  # the main process's id (a fresh one is random)
    partial = out_dir / PARTIAL / run_id
    if main:
        partial.mkdir(parents=True, exist_ok=True)
    absolute = {"data": str(Path(data).expanduser().resolve()), "test": None if test is None else str(Path(test).expanduser().resolve())}
    recipe = recipe.replace(**absolute)
    if expect is None and main:
        _write_json_atomic(partial / "recipe.json", {"id": run_id, "recipe": recipe.to_dict(), "data_fingerprint": td.fingerprint,
                                                      "backbone_sha256": bb_hash, "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                                      "lineage": lineage})
    lineage = lineage if expect is None else expect.get("lineage")
    ctx = FitContext(backbone_hash=bb_hash, precision=used_precision, seed=seed, task=task.name,
                     budget_s=budget_s, deadline=deadline,
                     checkpoint_path=partial / CHECKPOINT, on_step=on_step, **task.context(td))
    _seed_everything(seed)

    with _partial_guard(partial, run_id, out, out_dir / run_id) if main else nullcontext(), \
            _tell_other_processes(dist, main) as told:
        t0 = time.perf_counter()
        fit_summary = method_obj.fit(bb, td.train, td.val, ctx)
        t_fit = time.perf_counter() - t0
        told["fitted"] = True
        if not main:  # the main process scores, writes and records; this one returns what it wrote
            return _main_process_run(dist, store_obj)

        t0 = time.perf_counter()
        scored = task.score(method_obj, bb, td.test, ctx)
        t_eval = time.perf_counter() - t0

        manifest = {
            "format": FORMAT,
            "id": run_id,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "task": task.name,
            "modality": td.modality,
            "backbone": {"name": spec.name, "sha256": bb_hash, "spec": spec.to_dict()},
            "method": {"name": method_obj.name, "config": method_obj.resolved_config(), "fit": fit_summary},
            **td.info,
            "seed": seed,
            "precision": {"requested": precision, "used": used_precision},
            "budget_s": budget_s,
            "data": {"train": td.train_record, "test": td.test_record, "split": td.split_record},
            "metrics": {"test": {"summary": scored.summary}},
            "recipe": recipe.to_dict(),
            "lineage": lineage,
            "plan": plan,
            "versions": _versions(),
            "timings": {"read_s": round(t_read, 3), "fit_s": round(t_fit, 3), "eval_s": round(t_eval, 3)},
        }
        manifest["timings"]["total_s"] = round(time.perf_counter() - t_start, 3)
        path = write_run_folder(out_dir, run_id, manifest, method_obj.state_dict(), {"test": scored.detail}, scored.records)
        run = Run(path, store=store_obj)
        try:
            store_obj.add_run(run.manifest, path, run.manifest["checksum"])
        except HeadstartError as e:
            # The run is whole on disk: keep it (and its checkpoint) rather than lose the fit.
            raise BadInput(f"run {run_id} was saved to {path} but could not be recorded ({e}); fix the store, then "
                           f"`headstart adapt --resume {run_id}` records it") from None
        told["path"] = str(path)
    run._method, run._backbone, run._backbone_hash = method_obj, bb, bb_hash
    return run


def _main_process_run(dist, store_obj: Store) -> Run:
    """On a process other than the main one: the run the main process wrote and recorded."""
    path = dist.broadcast(None)
    if path is None:
        raise HeadstartError("the main process (rank 0) could not save the run; its error says why")
    return Run(Path(path), store=store_obj)


@contextmanager
def _tell_other_processes(dist, main: bool) -> Iterator[dict]:
    """On the main process of a distributed launch: once every process has fitted, give the others
    the saved run's folder (``told["path"]``), or None when scoring or saving failed, so that they
    never wait for a run that will not come. A failure inside the fit tells nothing (the ranks may
    stand in another collective; the launcher ends them when this process exits)."""
    told: dict = {}
    try:
        yield told
    finally:
        if main and dist.world > 1 and told.get("fitted"):
            dist.broadcast(told.get("path"))


@contextmanager
def _partial_guard(partial: Path, run_id: str, out, final: Path) -> Iterator[None]:
    """Remove the interrupted-run folder when the run finished or failed on bad input; keep it
    (and say how to resume) when training was interrupted after a checkpoint, or when the run
    folder was written but not recorded (resume then adopts it)."""
    resumable = partial / CHECKPOINT
    try:
        yield
    except KeyboardInterrupt:
        if resumable.is_file() or final.is_dir():
            status(f"interrupted; continue with: headstart adapt --resume {run_id}" + (f" --out {out}" if out else ""))
        else:
            _remove_partial(partial)
        raise
    except BaseException as e:
        # Bad input will fail again on resume, so its checkpoint goes; a full disk or a crash will not.
        gives_up = isinstance(e, HeadstartError) and not isinstance(e, WriteFailed)
        if not final.is_dir() and (gives_up or not resumable.is_file()):
            _remove_partial(partial)
        raise
    _remove_partial(partial)


def _remove_partial(partial: Path) -> None:
    shutil.rmtree(partial, ignore_errors=True)
    _remove_if_empty(partial.parent)


PARTIAL = ".partial"
"""Sub-folder of the runs folder holding interrupted runs (recipe + checkpoint) until they finish."""


def _resume(run: str, *, out, store, _on_step) -> Run:
    """Continue an interrupted run from its recipe and latest checkpoint."""
    root = (Path(out).expanduser() if out else home() / "runs") / PARTIAL
    matches = sorted(p for p in root.glob(f"{glob.escape(run)}*") if (p / "recipe.json").is_file()) if root.is_dir() else []
    if not matches:
        finished = Store(store).find(run)
        if finished is not None:
            raise BadInput(f"--resume {run}: that run finished already ({finished['path']}); nothing to resume")
        raise BadInput(f"--resume {run}: no interrupted run with that id in {root}; give --out if the run used one")
    if len(matches) > 1:
        raise BadInput(f"--resume {run}: matches {len(matches)} interrupted runs ({', '.join(p.name for p in matches[:3])}); give more of the id")
    if (matches[0] / LEGACY_CHECKPOINT).is_file() and not (matches[0] / CHECKPOINT).is_file():
        raise BadInput(f"--resume {run}: its checkpoint {matches[0] / LEGACY_CHECKPOINT} is in the pickle format of headstart "
                       f"<= 0.2, which can run code when read, so it is not read; remove {matches[0]} and start a new run")
    try:
        saved = json.loads((matches[0] / "recipe.json").read_text(encoding="utf-8"))
        recipe = Recipe.from_dict(saved["recipe"])
        saved["id"]  # noqa: B018 - the key resume needs
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, BadInput):
        raise BadInput(f"--resume {run}: {matches[0] / 'recipe.json'} is damaged; remove {matches[0]} and start a new run") from None
    status(f"resuming run {saved['id']}")
    return adapt_recipe(recipe, out=out, store=store, t_start=time.perf_counter(), run_id=saved["id"],
                        on_step=_on_step, expect=saved)


def _check_resumable(saved: dict, fingerprint: str, bb_hash: str, run_id: str | None) -> None:
    if saved["data_fingerprint"] != fingerprint:
        raise BadInput(f"--resume {run_id}: {saved['recipe'].get('data')} changed since the run started (fingerprint differs); "
                       "start a new run instead")
    if saved["backbone_sha256"] != bb_hash:
        raise BadInput(f"--resume {run_id}: the backbone's weights changed since the run started; start a new run instead")


def require_trainable(bb: Backbone, method_obj: Method) -> None:
    """Refuse, before any work, a method that trains a body the backbone cannot train."""
    if method_obj.trains_backbone and not bb.trains:
        raise BadInput(
            f"method {method_obj.name!r} trains the backbone's weights, but {bb.spec.name!r} gives frozen features only "
            f"({bb.kind}); use --method linear-probe with it, or a torch backbone for {method_obj.name}"
        )


def _read_config(path: str | Path) -> dict[str, Any]:
    """Method options from a YAML file (a mapping of option name to value)."""
    import yaml

    p = Path(path).expanduser()
    if not p.is_file():
        raise BadInput(f"--config {p}: no such file")
    try:
        loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise BadInput(f"--config {p}:{where} not valid YAML ({getattr(e, 'problem', None) or e}); fix the file") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict) or not all(isinstance(k, str) for k in loaded):
        raise BadInput(f"--config {p}: expected a mapping of method options, e.g. 'lr: 1.0e-4' one per line")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in loaded.items()}


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def _write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _adopt_finished(folder: Path, store_obj: Store, partial: Path) -> Run:
    """Record a run whose folder was written but whose store row was not (a kill in between),
    then drop its checkpoint: the finished run is recorded, so nothing is lost."""
    from .runs.repair import adopt

    adopt(store_obj, folder)
    status(f"run {folder.name} had finished (its folder was complete but unrecorded): recorded it, nothing retrained")
    _remove_partial(partial)
    return Run(folder, store=store_obj)


def load(run: str | Path, *, store: str | Path | None = None, allow_base_change: bool = False) -> Run:
    """Open a run by folder path or by id (or unique id prefix) from the store. A complete run
    folder in the default runs folder that the store does not list (a crash between writing the
    folder and recording it) is verified and recorded on the way."""
    store_obj = Store(store)
    path = Path(run).expanduser()
    if not path.exists():
        row = store_obj.find(str(run))
        if row is None and _plain_ref(str(run)):
            from .runs.repair import repair

            repair(store_obj, [home() / "runs"])
            row = store_obj.find(str(run))
        if row is None:
            raise BadInput(f"run {str(run)!r}: no such folder and no such run id in {store_obj.path}; list runs with `headstart runs`")
        path = Path(row["path"])
    return Run(path, store=store_obj, allow_base_change=allow_base_change)


def transcribe_audio(run_or_backbone: str | Path, audio: list, *, beams: int = 1, store: str | Path | None = None,
                     allow_base_change: bool = False) -> tuple[list[str], dict]:
    """Transcripts of ``audio`` by a speech-recognition run (id or folder), or by a Whisper
    backbone as it is (a catalog name, ``hf:`` id or model folder: the zero-shot baseline).
    Returns the transcripts and who made them (``{"run": id}`` or ``{"backbone": name, "sha256": ...}``)."""
    from .catalog import CATALOG
    from .methods.frozen import Frozen


    ref = str(run_or_backbone)
    path = Path(ref).expanduser()
    is_run = (path / MANIFEST).is_file() if path.is_dir() else not (ref in CATALOG or ref.startswith("hf:"))
    if is_run:
        run = load(run_or_backbone, store=store, allow_base_change=allow_base_change)
        return run.transcribe(audio, beams=beams), {"run": run.id}
    task = get_task("asr")
    bb, bb_hash = open_backbone(ref)
    check_modality(bb.spec, "audio", "the audio files")
    ctx = FitContext(backbone_hash=bb_hash, precision="fp32", seed=0, task=task.name)
    return task.transcribe_files(Frozen(), bb, list(audio), ctx, beams=beams), {"backbone": bb.spec.name, "sha256": bb_hash}


def generate_text(run_or_backbone: str | Path, prompts, *, max_new_tokens: int = 128, temperature: float = 0.0,
                  top_p: float = 1.0, stop: list[str] | None = None, seed: int = 0, store: str | Path | None = None,
                  allow_base_change: bool = False, streamer=None, template: str | None = None):
    """Replies by a generation run (id or folder), or by a causal-LM backbone as it is (a catalog
    name, ``hf:`` id, folder or .gguf file: the zero-shot baseline, under its own chat template,
    or ``template`` -- chatml, gemma, plain -- for a base without one; a run keeps its own).
    ``prompts``: one prompt (a string or a message list) or a list of them. Returns the reply (or
    replies) and who made them (``{"run": id}`` or ``{"backbone": name, "sha256": ...}``)."""
    from .catalog import CATALOG
    from .methods.frozen import Frozen

    ref = str(run_or_backbone)
    path = Path(ref).expanduser()
    is_run = (path / MANIFEST).is_file() if path.is_dir() else not (ref in CATALOG or ref.startswith("hf:") or
                                                                     path.suffix == ".gguf")
    kwargs = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p, "stop": stop, "seed": seed,
              "streamer": streamer}
    if is_run:
        if template is not None:
            raise BadInput("--template is for a backbone; a run generates under the template it was trained with")
        run = load(run_or_backbone, store=store, allow_base_change=allow_base_change)
        return run.generate(prompts, **kwargs), {"run": run.id}
    task = get_task("generation")
    opts = task.options({"template": template} if template is not None else {})
    bb, bb_hash = open_backbone(ref)
    task.check_backbone(bb.spec, type(bb))
    ctx = FitContext(backbone_hash=bb_hash, precision="fp32", seed=0, task=task.name, task_info={"template": opts.template})
    one, items = _prompt_items(prompts)
    out = task.generate_texts(Frozen(), bb, items, ctx, **kwargs)
    return (out[0] if one else out), {"backbone": bb.spec.name, "sha256": bb_hash}


def _prompt_items(prompts) -> tuple[bool, list]:
    """(whether ``prompts`` is one prompt -- a string or one message list --, the prompts as a list)."""
    one = isinstance(prompts, str) or (isinstance(prompts, list) and bool(prompts) and isinstance(prompts[0], dict))
    return one, [prompts] if one else list(prompts)


class Run:
    """A finished adaptation: predict with it, evaluate it, read its manifest."""

    def __init__(self, path: Path, *, store: Store | None = None, allow_base_change: bool = False):
        self.path = Path(path)
        self.manifest, self._tensors = read_run_folder(self.path)
        validate_manifest(self.manifest, self.path)
        self.store = store or Store()
        self.allow_base_change = allow_base_change
        self._method: Method | None = None
        self._backbone: Backbone | None = None
        self._backbone_hash: str | None = None

    def __repr__(self) -> str:
        return f"Run({self.id!r}, backbone={self.manifest['backbone']['name']!r}, method={self.manifest['method']['name']!r})"

    @property
    def id(self) -> str:
        return self.manifest["id"]

    @property
    def classes(self) -> list[str]:
        return list(self.manifest.get("classes", []))

    @property
    def task(self):
        """The run's registered :class:`~headstart.tasks.Task` (classification for runs made before tasks)."""
        return get_task(self.manifest.get("task", "classification"))

    @property
    def metrics(self) -> dict:
        return self.manifest["metrics"]

    def fit_context(self) -> FitContext:
        """The context the run's method predicts in: the backbone hash, the precision used, seed and classes
        (opens the model first, see :meth:`open_model`)."""
        self.open_model()
        return FitContext(
            backbone_hash=self._backbone_hash,
            precision=self.manifest["precision"]["used"],
            seed=self.manifest["seed"],
            classes=self.classes,
            task=self.task.name,
            language=self.manifest.get("language"),
            task_info=self.manifest.get("task_info") or {},
        )

    def open_model(self) -> tuple[Method, Backbone]:
        """The run's method (with its saved state loaded) and its backbone, opened once and kept.

        Refuses (:class:`~headstart.errors.RunIntegrityError`) a backbone whose weights' sha256
        differs from the recorded one unless the run was opened with ``allow_base_change``."""
        if self._backbone is None:
            spec = BackboneSpec.from_dict(self.manifest["backbone"]["spec"])
            bb, bb_hash = open_backbone(spec)
            recorded = self.manifest["backbone"]["sha256"]
            if bb_hash != recorded and not self.allow_base_change:
                raise RunIntegrityError(
                    f"run {self.id} was adapted on {spec.name!r} with weights sha256 {recorded[:12]}..., but the weights "
                    f"found now have {bb_hash[:12]}...: the base changed. Re-adapt on the new base, or pass "
                    "--allow-base-change (allow_base_change=True) to use the old head anyway"
                )
            self._backbone, self._backbone_hash = bb, bb_hash
        if self._method is None:
            method = get_method(self.manifest["method"]["name"]).from_options(self.manifest["method"]["config"])
            method.load_state_dict(self._tensors)
            self._method = method
        return self._method, self._backbone

    def as_dataset(self, inputs, *, labels_required: bool, text_col: str | None = None, header: bool | None = None) -> Dataset:
        """``inputs`` (a Dataset, a file or folder, or a list of texts / image paths) as a Dataset of
        this run's modality; files are read with the training data's column names when they have them."""
        if isinstance(inputs, Dataset):
            return inputs
        if isinstance(inputs, (str, Path)):
            cols = self.manifest["data"]["train"].get("columns", {})
            ds = load_dataset(inputs, labels_required=labels_required, header=header) if Path(inputs).is_dir() else \
                load_with_hint(Path(inputs).expanduser(), cols, labels_required, text_col=text_col, header=header)
        else:
            items = list(inputs)
            if not items:
                raise BadInput("nothing to predict: the input list is empty")
            if any(not isinstance(t, str) or not t.strip() for t in items):
                raise BadInput("inputs must be non-empty strings (texts, or image paths for an image run)")
            ds = Dataset(inputs=items, labels=None, modality=self.manifest["modality"], source="<inputs>")
        if ds.modality != self.manifest["modality"]:
            raise BadInput(f"{ds.source} holds {ds.modality} but run {self.id} takes {self.manifest['modality']}")
        return ds

    def predict(self, inputs, *, feature_cache: bool = True) -> Predictions:
        """Labels and probabilities for texts / image paths, a data file or folder, or a Dataset.
        ``feature_cache=False`` computes frozen features without the on-disk cache (a server's
        inputs rarely repeat, and each request would grow it)."""
        if not self.task.predicts:
            raise BadInput(f"run {self.id} is {'an' if self.task.name[0] in 'aeiou' else 'a'} {self.task.name} run: it embeds "
                           "rather than labels; use run.embed(texts), "
                           "or `headstart index` and `headstart search`")
        ds = self.as_dataset(inputs, labels_required=False)
        method, bb = self.open_model()
        ctx = self.fit_context()
        ctx.feature_cache = feature_cache
        return Predictions(self.classes, method.predict_proba(bb, ds, ctx))

    @property
    def producer(self) -> dict:
        """Who embeds with this run: an index built with it accepts only queries embedded by it."""
        m = self.manifest
        return {"run": self.id, "backbone": m["backbone"]["name"], "backbone_sha256": m["backbone"]["sha256"],
                "method": m["method"]["name"], "manifest_sha256": m["checksum"],
                "embedding": m["backbone"]["spec"].get("preprocessing", {})}

    def embed(self, inputs, *, role: str = "query", feature_cache: bool = True) -> np.ndarray:
        """(N, D) float32 embeddings of texts (or a data file) by the run's body as adapted (no head).

        ``role`` is "query" or "document": the backbone's prefix for it goes in front of each text
        (e5's ``"query: "`` / ``"passage: "``; most backbones have none), as in training. For an
        image-text run queries are texts and documents images (what an index of it holds).
        ``feature_cache=False``: frozen features without the on-disk cache (a server's inputs)."""
        from .tasks.retrieval import prefixed

        if role not in ("query", "document"):
            raise BadInput(f"embed: role must be 'query' or 'document' (got {role!r})")
        side_of = getattr(self.task, "embed_role", None)
        if side_of is not None:  # a dual encoder: queries and documents are embedded by different towers
            return self._embed_side(inputs, side_of(role), feature_cache=feature_cache)
        ds = self.as_dataset(inputs, labels_required=False)
        method, bb = self.open_model()
        if ds.modality == "text":
            ds = Dataset(inputs=prefixed(bb.spec.preprocessing, list(ds.inputs), role), labels=None, modality="text",
                         source=ds.source)
        ctx = self.fit_context()
        ctx.feature_cache = feature_cache
        return method.embed(bb, ds, ctx)

    def embed_images(self, paths) -> np.ndarray:
        """(N, D) float32 unit-length embeddings of image files by an image-text run, in the space
        its :meth:`embed_texts` shares (cosine similarity = dot product)."""
        return self._embed_side(paths, "image")

    def embed_texts(self, texts) -> np.ndarray:
        """(N, D) float32 unit-length embeddings of texts by an image-text run (see :meth:`embed_images`)."""
        return self._embed_side(texts, "text")

    def _embed_side(self, items, side: str, *, feature_cache: bool = True) -> np.ndarray:
        embed_items = getattr(self.task, "embed_items", None)
        if embed_items is None:
            raise BadInput(f"run {self.id} is a {self.task.name} run; embed_images / embed_texts need an image-text run "
                           "(`headstart adapt PAIRS --task image-text`); use run.embed")
        items = [items] if isinstance(items, (str, Path)) else list(items)
        if not items:
            raise BadInput(f"embed_{side}s: nothing to embed (the list is empty)")
        if any(not isinstance(t, (str, Path)) or not str(t).strip() for t in items):
            raise BadInput(f"embed_{side}s: give non-empty strings ({'image paths' if side == 'image' else 'texts'})")
        method, bb = self.open_model()
        ctx = self.fit_context()
        ctx.feature_cache = feature_cache
        return embed_items(method, bb, [str(t) for t in items], ctx, side)

    def transcribe(self, audio, *, beams: int = 1) -> list[str]:
        """Transcripts of audio files (a path or a list of paths) by the run's model as adapted,
        in input order: greedy (``beams=1``) or beam search (speech-recognition runs)."""
        verb = getattr(self.task, "transcribe_files", None)
        if verb is None:
            raise BadInput(f"run {self.id} is a {self.task.name} run; transcription needs a speech-recognition run "
                           "(`headstart adapt DATA --task asr`)")
        paths = [audio] if isinstance(audio, (str, Path)) else list(audio)
        method, bb = self.open_model()
        return verb(method, bb, paths, self.fit_context(), beams=beams)

    def generate(self, prompts, *, max_new_tokens: int = 128, temperature: float = 0.0, top_p: float = 1.0,
                 stop: list[str] | None = None, seed: int = 0, streamer=None):
        """Replies of a generation run's model as adapted: ``prompts`` is one prompt (a string, or a
        list of ``{"role", "content"}`` messages) or a list of them; greedy by default
        (``temperature`` > 0 samples, seeded), each reply cut at its first ``stop`` sequence.
        Returns a string for one prompt, else a list in input order."""
        verb = getattr(self.task, "generate_texts", None)
        if verb is None:
            raise BadInput(f"run {self.id} is a {self.task.name} run; generation needs a generation run "
                           "(`headstart adapt DATA --task generation`)")
        one, items = _prompt_items(prompts)
        method, bb = self.open_model()
        out = verb(method, bb, items, self.fit_context(), max_new_tokens=max_new_tokens, temperature=temperature,
                   top_p=top_p, stop=stop, seed=seed, streamer=streamer)
        return out[0] if one else out

    def search(self, index, query: str | list[str], k: int = 10):
        """Top-``k`` documents of ``index`` (a :class:`~headstart.index.VectorIndex` or its folder)
        for one query (a :class:`~headstart.index.SearchResult`) or a list of them (a list)."""
        from .index import VectorIndex

        idx = index if isinstance(index, VectorIndex) else VectorIndex.open(index)
        queries = [query] if isinstance(query, str) else list(query)
        results = idx.search(self.embed(queries, role="query"), k, self.producer)
        return results[0] if isinstance(query, str) else results

    def evaluate(self, data, *, record: bool = True, text_col: str | None = None, header: bool | None = None,
                 n_resamples: int = 1000) -> dict:
        """The task's metrics on labelled data (file, folder or Dataset; a retrieval run: pairs or a
        collection); recorded in the store by default.

        Classification: :func:`~.evaluate.metrics.classification_metrics`' keys plus
        ``accuracy_ci`` and ``macro_f1_ci``; retrieval: nDCG/MRR/Recall/MAP at the cutoffs with
        ``<metric>_ci``. Intervals are 95% percentile-bootstrap intervals over ``n_resamples``
        resamples of the examples (queries), seed 0, with ``ci_level`` / ``ci_resamples``."""
        task = self.task
        test, source, fingerprint = task.read_eval(self, data, text_col=text_col, header=header)
        method, bb = self.open_model()
        scored = task.score(method, bb, test, self.fit_context(), n_resamples=n_resamples, intervals=True)
        if record and self.store.find(self.id) is not None:
            self.store.add_eval(self.id, source, fingerprint, scored.summary)
        return scored.detail


def _plain_ref(ref: str) -> bool:
    return bool(ref) and "/" not in ref and not ref.startswith(".")


def _summary(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "per_class"}


def _run_id(spec: BackboneSpec, method: str) -> str:
    name = Path(spec.name.removeprefix("hf:")).name
    if spec.source_kind == "pair" and spec.name.startswith("pair:"):  # pair:/models/vit+/models/bert -> pair-vit-bert
        name = "pair-" + "-".join(Path(t).name for t in json.loads(spec.source))
    short = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()[:40] or "backbone"
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{short}-{method}-{secrets.token_hex(3)}"


def _seed_everything(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _versions() -> dict:
    import torch

    out = {"headstart": __version__, "python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__, "numpy": np.__version__}
    from importlib.metadata import PackageNotFoundError, version

    for package in ("transformers", "tokenizers", "safetensors"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            pass
    return out
