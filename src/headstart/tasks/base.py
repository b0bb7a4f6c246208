"""The task interface and the objective a task hands the one trainer."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..evaluate.metrics import MetricSpec

if TYPE_CHECKING:
    from ..backbones import Backbone
    from ..methods.base import FitContext, Method
    from ..recipe import Recipe


@dataclass
class Objective:
    """What the trainer optimises and selects on; everything task-specific (labels, pairs,
    corpora) stays inside these callables, so the loop itself mentions none of it.

    ``loss(outputs, idx)`` maps the model's outputs for the training examples ``idx`` to their
    per-example losses, shape (B,): the trainer sums them and divides by the optimizer step's
    size, so micro-batches of unequal size weigh correctly under gradient accumulation.

    ``evaluate(model)`` scores the model (already in eval mode, under no-grad and the run's
    autocast) on the validation split and returns ``{metric: value, "loss": value}``. Selection
    is by ``metric`` in its direction, ties broken by the lower loss.
    """

    loss: Callable[[Any, list[int]], torch.Tensor]
    evaluate: Callable[[nn.Module], dict[str, float]]
    metric: MetricSpec
    val_examples: int
    """Examples one validation pass reads (the budget predicts its time from this)."""
    per_example: bool = True
    """True: ``loss`` returns (B,) per-example losses (summed, then divided by the step size);
    False: a batch scalar (a pairwise loss such as CoSENT), weighted by the micro-batch's size
    (:func:`headstart.train.losses.step_share`)."""

    def key(self, scores: dict[str, float]) -> tuple[float, float]:
        """Larger is better: the selection metric in its direction, then the lower loss."""
        value = scores[self.metric.name]
        return (value if self.metric.higher_is_better else -value, -scores["loss"])


@dataclass
class TaskData:
    """What a task read from a recipe's files: the three splits (in the task's own types) and
    what the manifest records about them."""

    train: Any
    val: Any
    test: Any
    modality: str
    train_record: dict
    """``manifest["data"]["train"]``: source, fingerprint, examples, columns."""
    test_record: dict
    """``manifest["data"]["test"]``: source ("held out from train" or the file), fingerprint, examples."""
    split_record: dict
    """``manifest["data"]["split"]``: fractions, seed, sizes, and how the split was made."""
    info: dict = field(default_factory=dict)
    """Task facts the manifest keeps at its top level (classification: ``classes``)."""
    separate_test: bool = False
    """Whether the test split came from its own file."""
    texts: Any = None
    """A :class:`~headstart.data.Dataset` of texts whose languages ``adapt`` checks against the
    backbone's (None: nothing to check)."""

    @property
    def fingerprint(self) -> str:
        return self.train_record["fingerprint"]


@dataclass
class Scored:
    """A model scored on a test split: ``summary`` (metric -> value, with ``<metric>_ci``
    intervals where defined) is what the manifest and store keep; ``detail`` the full metrics
    (per class, per query); ``records`` one row per example for ``predictions.csv`` (flat dicts,
    the same keys in every row) carrying each example's per-example metric values."""

    summary: dict
    detail: dict
    records: list[dict]


@dataclass
class Training:
    """What a task hands a trained method to run :meth:`headstart.train.trainer.Trainer.fit`."""

    lengths: list[int]
    collate: Callable[[list[int]], dict[str, torch.Tensor]]
    objective: Objective
    batches: Callable | None = None
    """A per-epoch batch sampler ``batches(rng)`` (None: length-bucketed batches)."""
    record: dict = field(default_factory=dict)
    """Facts about the training data as the task prepared it, for the run's ``method.fit``
    (generation: examples truncated or dropped at max_length, supervised tokens)."""


class Task(ABC):
    """A kind of problem: what its data looks like, what a model adds on the body, its loss, its
    metrics, what a run stores as predictions, and the export form.

    Subclasses set ``name``, ``primary`` (the metric selection and reports lead with) and
    ``metrics`` (every metric a run records, with direction and bounds), and implement the hooks
    below; the pipeline (:mod:`headstart.api`), the trained methods and the reports call only
    these, so none of them names a task."""

    name: ClassVar[str]
    primary: ClassVar[MetricSpec]
    metrics: ClassVar[tuple[MetricSpec, ...]]
    has_head: ClassVar[bool] = True
    """Whether the model adds a trained head on the body (head options apply)."""
    predicts: ClassVar[bool] = True
    """Whether ``Run.predict`` gives labels (classification) rather than embeddings only."""
    shown: ClassVar[dict[str, str]] = {}
    """Metrics the command line prints for a run, name -> label, primary first."""
    compared: ClassVar[tuple[str, str]] = ("", "")
    """The two metrics ``compare`` tabulates (with intervals) and plots, the primary first."""
    drifted: ClassVar[tuple[str, ...] | None] = None
    """The metrics ``drift`` decides on for a task without labels (None: ``compared``); they must
    mean the same on the old and the new base (generation: bits per byte, not per-token perplexity,
    since a new base may bring another tokenizer)."""
    takes_language: ClassVar[bool] = False
    """Whether the recipe's ``language`` applies (speech recognition's prompt)."""
    unit: ClassVar[str] = "examples"
    """What one test example is called in reports (queries, pairs, utterances)."""
    needs_causal_lm: ClassVar[bool] = False
    """Whether the task's body is a causal language model (generation) rather than an encoder."""
    exports_adapters: ClassVar[bool] = False
    """Whether export writes a LoRA run unmerged as an adapter folder (else it needs --merge)."""
    zero_shot: ClassVar[bool] = False
    """Whether the pretrained model scores as it is, head included (image-text: CLIP's own
    projections), so ``frozen`` is a method for the task although it has a head."""
    head_only: ClassVar[bool] = False
    """Whether training the task's head alone on the frozen body is a method here (``head-only``;
    image-text: the projections)."""
    options_cls: ClassVar[type | None] = None
    """The dataclass of the task's own options (``--task-set KEY=VALUE``; None: it takes none)."""

    def check_backbone(self, spec, cls) -> None:
        """Refuse (BadInput, one line) a backbone whose kind the task cannot use: a causal LM is
        never pooled into features for the encoder tasks, and generation needs one. ``cls`` is
        the family's backbone class (None: not known until an ``hf:`` id is on disk)."""
        from ..errors import BadInput

        if cls is None:
            return
        if cls.causal_lm and not self.needs_causal_lm:
            raise BadInput(f"backbone {spec.name!r} is a causal language model: it generates text and is never mean-pooled "
                           f"as an encoder for the task {self.name!r}; use it with --task generation, or choose an encoder "
                           "(see `headstart models`)")
        if self.needs_causal_lm and not cls.causal_lm:
            raise BadInput(f"the task {self.name!r} needs a causal language model and backbone {spec.name!r} is not one; "
                           "choose smollm2-135m-instruct, gemma3-270m, hf:Qwen/Qwen2.5-0.5B-Instruct or a local causal-LM "
                           "folder")

    def options(self, values: dict | None):
        """The task's options from ``--task-set`` values (unknown names refused, values checked)."""
        from dataclasses import fields

        from ..errors import BadInput, did_you_mean

        values = dict(values or {})
        if self.options_cls is None:
            if values:
                raise BadInput(f"the task {self.name!r} takes no --task-set options (got {sorted(values)[0]!r})")
            return None
        known = {f.name for f in fields(self.options_cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise BadInput(f"task {self.name!r} has no option {unknown[0]!r}.{did_you_mean(unknown[0], known)} "
                           f"Its options: {', '.join(sorted(known))}")
        opts = self.options_cls(**values)
        opts.validate()
        return opts

    def suite_cells(self, run, path, metrics: tuple[str, ...], *, n_resamples: int, seed: int) -> tuple[dict, str, str]:
        """A suite dataset scored by ``run`` for a task without labels: ``({metric: {"value",
        "ci", "n"}}, source, fingerprint)``."""
        from ..errors import BadInput

        raise BadInput(f"suites do not check {self.name} runs yet")

    def example_values(self, run, path, metrics: tuple[str, ...]) -> tuple[dict[str, tuple[Any, Any, Any]], str]:
        """Per-example values of ``metrics`` on the data at ``path`` scored by ``run`` (``{metric:
        (y_true, y_pred, statistic)}`` as :meth:`run_values`) and the data's fingerprint: what
        ``drift --suite`` compares for a task without labels."""
        from ..errors import BadInput

        raise BadInput(f"drift --suite does not cover {self.name} runs yet; drift without --suite (the run's own test set)")

    def moved_example(self, row: dict) -> tuple[str, str] | None:
        """(input, label) naming one ``predictions.csv`` row when drift lists the examples whose
        primary metric moved most (:meth:`run_values` order); None: the task lists none."""
        return None

    def run_values(self, run_path, manifest: dict) -> dict[str, tuple[Any, Any, Any]] | None:
        """Per-example values behind the compared metrics of a finished run, read from its
        ``predictions.csv``: ``{metric: (y_true, y_pred, statistic)}`` for
        :func:`headstart.evaluate.bootstrap.bootstrap_ci`; None when the file lacks them."""
        return None

    def default_backbone(self, data) -> str:
        """The backbone ``adapt`` uses when none is named (may look at the data's language)."""
        return "minilm-l6"

    def default_method(self, backbone: str) -> str:
        """The method ``adapt`` uses when none is named."""
        return "linear-probe"

    def describe_data(self, manifest: dict) -> str:
        """One line on a run's data for the command line."""
        split = manifest["data"]["split"]
        return f"{split['train']} train / {split['val']} validation / {split['test']} test"

    # -- the pipeline ---------------------------------------------------------------------------
    @abstractmethod
    def read(self, recipe: Recipe) -> TaskData:
        """Read and check the recipe's data and test files and split them (seeded), or raise a
        one-line BadInput naming the file, row and fix."""

    def context(self, data: TaskData) -> dict:
        """Extra :class:`~headstart.methods.base.FitContext` fields (classification: classes)."""
        return {}

    @abstractmethod
    def score(self, method: Method, backbone: Backbone, test: Any, ctx: FitContext, *, n_resamples: int = 1000) -> Scored:
        """The adapted model's metrics on ``test`` with per-example values and intervals."""

    @abstractmethod
    def read_eval(self, run, data, *, text_col: str | None = None, header: bool | None = None) -> tuple[Any, str, str]:
        """Labelled data for ``headstart eval``: (the task's test object, its source, fingerprint)."""

    # -- trained methods ------------------------------------------------------------------------
    @abstractmethod
    def preset(self, method: str, train: Any) -> tuple[str, dict]:
        """(regime, option values) a trained method starts from for this training data."""

    @abstractmethod
    def build_model(self, backbone: Backbone, cfg: Any, ctx: FitContext) -> nn.Module:
        """The module the trainer trains: ``.body`` is the backbone's module (the method
        freezes/injects into it), plus whatever the task adds (``.head`` when ``has_head``)."""

    def head_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return list(model.head.parameters()) if self.has_head else []

    def model_start(self, backbone: Backbone, train: Any, val: Any, cfg: Any,
                    ctx: FitContext) -> Callable[[nn.Module], None] | None:
        """Work on the body as loaded (before the method changes it) that gives the added weights
        their start, as a function applied to the built model (classification: a probe head for
        LP-FT); None: they start as built."""
        return None

    @abstractmethod
    def training(self, model: nn.Module, train: Any, val: Any, cfg: Any, ctx: FitContext) -> Training:
        """Lengths, collate, the objective and the sampler for the trainer."""

    def examples(self, data: Any) -> int:
        return len(data)

    def frozen_proba(self, backbone, data, ctx) -> np.ndarray | None:
        """Class probabilities of the frozen body itself, for a task that labels without a trained
        head (zero-shot: class prompts through a dual encoder); None: the task needs a head."""
        return None

    def verbs(self, modality: str) -> tuple:
        """What ``headstart serve`` offers for a run of this task (:class:`~.verbs.Verb`s), for
        inputs of ``modality``; none by default."""
        return ()

    def export(self, run, out, *, merge: bool = False) -> dict:
        from ..errors import BadInput

        raise BadInput(f"export: runs of the task {self.name!r} cannot be exported yet; use the run folder itself")

    def onnx_graph(self, method: Method, backbone: Backbone, ctx: FitContext, texts: list[str]):
        """What the ONNX export (:mod:`headstart.export_onnx`) puts on the run's pooled body, as an
        :class:`~headstart.export_onnx.OnnxGraph`: the module on the features, the output's name,
        the run's own outputs on the check ``texts`` (fp32 ``ctx``) and the record's task fields."""
        from ..errors import BadInput

        raise BadInput(f"export: runs of the task {self.name!r} cannot be exported to ONNX yet; use --format hf or the run "
                       "folder")

    def metric(self, name: str) -> MetricSpec:
        for m in self.metrics:
            if m.name == name:
                return m
        from ..errors import BadInput, did_you_mean

        raise BadInput(f"task {self.name!r} has no metric {name!r}.{did_you_mean(name, [m.name for m in self.metrics])} "
                       f"Its metrics: {', '.join(m.name for m in self.metrics)}")


def sized_preset(what: str, method: str, n: int, presets: dict, common: dict, epochs: dict | None = None,
                 bounds: tuple[int, int] = (500, 5000)) -> tuple[str, dict]:
    """(regime, option values) of ``method`` for ``n`` training examples: few <= ``bounds[0]`` <
    medium <= ``bounds[1]`` < large; ``common[regime]`` under the method's own ``presets`` entry,
    and ``epochs[regime]`` where the method's entry names none. A method without an entry is one
    line naming the ones that have."""
    from ..errors import BadInput

    regime = "few" if n <= bounds[0] else "medium" if n <= bounds[1] else "large"
    if method not in presets:
        raise BadInput(f"method {method!r} has no {what} preset; choose one of {', '.join(presets)}")
    values = {**common[regime], **presets[method]}
    if epochs is not None:
        values["epochs"] = presets[method].get("epochs", epochs[regime])
    return regime, values


def seeded_split(n: int, recipe, source: str, unit: str) -> tuple[list[int], list[int], list[int], float]:
    """(train, validation, test indices, the test fraction used) of ``n`` examples shuffled with
    the recipe's split seed (no test part when the recipe names a test file); too few left to
    train on is one line naming ``source`` and what to change."""
    from ..errors import BadInput

    test_fraction = 0.0 if recipe.test is not None else recipe.test_fraction
    order = np.random.default_rng(recipe.seed_of_split).permutation(n)
    n_test = max(1, int(round(n * test_fraction))) if test_fraction > 0 else 0
    n_val = max(1, int(round(n * recipe.val_fraction)))
    if n - n_test - n_val < 2:
        raise BadInput(f"{source}: {n} {unit} leave too few to train on after the split; add {unit} or lower "
                       "--val-fraction/--test-fraction")
    train, val, test = (sorted(p.tolist()) for p in (order[n_test + n_val:], order[n_test:n_test + n_val], order[:n_test]))
    return train, val, test, test_fraction


__all__ = ["Objective", "Scored", "Task", "TaskData", "Training", "seeded_split", "sized_preset"]
