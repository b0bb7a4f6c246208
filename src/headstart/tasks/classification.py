"""Classification: one label per example (text, image; later audio), a linear head on the pooled
body, cross-entropy, accuracy to select on; a run stores each test example's probabilities."""

from __future__ import annotations

from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from ..evaluate.metrics import MetricSpec
from .base import Objective, Scored, Task, TaskData, Training


class ClassifierModel(nn.Module):
    """Backbone body + dropout + linear head: ``logits = head(dropout(features(batch)))``."""

    def __init__(self, backbone, n_classes: int, dropout: float):
        super().__init__()
        self.body = backbone.feature_module
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.feature_dim, n_classes)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self._backbone = [backbone]  # a list: not registered as a submodule (the body already is)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.drop(self._backbone[0].forward_features(batch)))


AUGMENTS = ("none", "crop-flip")


@dataclass
class ClassificationOptions:
    streaming: bool | None = None
    """Read the table a chunk at a time from disk (linear probe only, see
    :mod:`headstart.data.large`): None when it has more than LARGE_ROWS rows, true always, false never."""
    augment: str = "none"
    """Training-time augmentation of images (methods that train: finetune, scratch, lora, dora,
    adapter): 'crop-flip' is a random resized crop (0.5-1 of the area) and a random horizontal
    flip of every training image, drawn from the run's seed; validation, test and prediction
    images are never augmented. 'none': off."""

    def validate(self) -> None:
        from ..errors import BadInput

        if self.streaming is not None and not isinstance(self.streaming, bool):
            raise BadInput(f"classification option streaming must be true or false (got {self.streaming!r})")
        if self.augment not in AUGMENTS:
            raise BadInput(f"classification option augment must be one of {', '.join(AUGMENTS)} (got {self.augment!r})")


class Classification(Task):
    name: ClassVar[str] = "classification"
    options_cls: ClassVar[type] = ClassificationOptions
    primary: ClassVar[MetricSpec] = MetricSpec("accuracy")
    metrics: ClassVar[tuple[MetricSpec, ...]] = (MetricSpec("accuracy"), MetricSpec("macro_f1"))
    shown: ClassVar[dict[str, str]] = {"accuracy": "accuracy", "macro_f1": "macro-F1"}
    compared: ClassVar[tuple[str, str]] = ("accuracy", "macro_f1")

    def run_values(self, run_path, manifest):
        """(true, predicted) class indices of the test examples; None when a row lacks them."""
        import csv

        from ..evaluate.bootstrap import MacroF1, accuracy

        classes = list(manifest["classes"])
        index = {c: i for i, c in enumerate(classes)}
        truth, pred = [], []
        try:
            with open(Path(run_path) / "predictions.csv", newline="", encoding="utf-8") as f:
                for rec in csv.DictReader(f):
                    if rec.get("label") not in index or rec.get("predicted") not in index:
                        return None
                    truth.append(index[rec["label"]])
                    pred.append(index[rec["predicted"]])
        except OSError:
            return None
        if not truth:
            return None
        y, p = np.array(truth, dtype=np.int64), np.array(pred, dtype=np.int64)
        return {"accuracy": (y, p, accuracy), "macro_f1": (y, p, MacroF1(len(classes)))}

    def describe_data(self, manifest: dict) -> str:
        return f"{super().describe_data(manifest)}, {len(manifest['classes'])} classes"

    # -- data ------------------------------------------------------------------------------------
    def read(self, recipe) -> TaskData:
        from ..data import load_dataset
        from ..data.large import LARGE_ROWS, open_table, streams, table_kind

        text_col, label_col, fmt, header = recipe.text_col, recipe.label_col, recipe.fmt, recipe.header
        opts = self.options(recipe.task_options)
        forced = opts.streaming
        if streams(recipe.data, fmt, forced):
            table = open_table(recipe.data, fmt=fmt, header=header, text_col=text_col, label_col=label_col)
            small_arrow = table_kind(Path(recipe.data).expanduser(), fmt) == "arrow" and table.n_rows <= LARGE_ROWS
            if forced or not small_arrow:
                if opts.augment != "none":
                    _check_augment(opts.augment, "text", recipe.method)  # streamed tables hold texts
                return self._read_table(recipe, table)
            full = table.to_dataset()  # a small Arrow IPC table: read like any other
        else:
            full = load_dataset(recipe.data, text_col=text_col, label_col=label_col, fmt=fmt, header=header)
        data = self._read_dataset(recipe, full)
        if opts.augment != "none":
            _check_augment(opts.augment, data.modality, recipe.method)
            data.info["task_info"] = {"augment": opts.augment}
        return data

    def _read_dataset(self, recipe, full) -> TaskData:
        from ..data import load_dataset, stratified_split
        from ..errors import BadInput

        text_col, label_col, fmt, header = recipe.text_col, recipe.label_col, recipe.fmt, recipe.header
        classes = full.classes
        if len(classes) < 2:
            raise BadInput(f"{full.source}: only one class ({classes[0]!r}); a classifier needs at least two labels")
        test_data = None
        if recipe.test is not None:
            test_path = Path(recipe.test).expanduser()
            if test_path.is_file() and full.modality == "text" and not (text_col or label_col):
                test_data = load_with_hint(test_path, full.columns, labels_required=True, fmt=fmt, header=header)
            else:
                test_data = load_dataset(recipe.test, text_col=text_col, label_col=label_col, fmt=fmt, header=header)
            if test_data.modality != full.modality:
                raise BadInput(f"{test_data.source} holds {test_data.modality} but {full.source} holds {full.modality}")
            check_known_labels(test_data, classes)
        test_fraction = 0.0 if test_data is not None else recipe.test_fraction
        split = stratified_split(full, val_fraction=recipe.val_fraction, test_fraction=test_fraction, seed=recipe.seed_of_split)
        test_set = test_data if test_data is not None else split.test
        return TaskData(
            train=split.train, val=split.val, test=test_set, modality=full.modality,
            train_record={"source": str(full.source), "fingerprint": full.fingerprint, "examples": len(full),
                          "columns": full.columns},
            test_record={"source": str(test_set.source) if test_data is not None else "held out from train",
                         "fingerprint": test_set.fingerprint, "examples": len(test_set)},
            split_record={"val_fraction": recipe.val_fraction, "test_fraction": test_fraction, "seed": recipe.seed_of_split,
                          **split.sizes(), "test": len(test_set)},
            info={"classes": classes}, separate_test=test_data is not None, texts=full,
        )

    def _read_table(self, recipe, table) -> TaskData:
        """A streamed table (:mod:`headstart.data.large`): the splits are row-index views, and only
        the linear probe fits on them."""
        from ..data.large import LARGE_ROWS, open_table, split_table
        from ..errors import BadInput

        if recipe.method != "linear-probe":
            raise BadInput(f"{table.source}: {table.n_rows:,} rows are streamed from disk (more than {LARGE_ROWS:,}, or "
                           f"--task-set streaming=true) and only the linear probe streams; use --method linear-probe, or "
                           f"sample the table to at most {LARGE_ROWS:,} rows for {recipe.method!r}")
        if len(table.classes) < 2:
            raise BadInput(f"{table.source}: only one class ({table.classes[0]!r}); a classifier needs at least two labels")
        test_table = None
        if recipe.test is not None:
            named = recipe.text_col or recipe.label_col
            test_table = open_table(recipe.test, fmt=recipe.fmt, header=recipe.header, text_col=recipe.text_col,
                                    label_col=recipe.label_col, hint=None if named else table.columns, classes=table.classes)
        test_fraction = 0.0 if test_table is not None else recipe.test_fraction
        train, val, test = split_table(table, val_fraction=recipe.val_fraction, test_fraction=test_fraction,
                                       seed=recipe.seed_of_split)
        if test_table is not None:
            import numpy as np

            test = test_table.rows_view(np.arange(test_table.n_rows), "test")
        sizes = {"train": len(train), "val": len(val), "test": len(test)}
        return TaskData(
            train=train, val=val, test=test, modality="text",
            train_record={"source": table.source, "fingerprint": table.fingerprint, "examples": table.n_rows,
                          "columns": table.columns, "streamed": True},
            test_record={"source": test_table.source if test_table is not None else "held out from train",
                         "fingerprint": test_table.fingerprint if test_table is not None else _rows_fingerprint(test),
                         "examples": len(test)},
            split_record={"val_fraction": recipe.val_fraction, "test_fraction": test_fraction, "seed": recipe.seed_of_split,
                          **sizes},
            info={"classes": table.classes}, separate_test=test_table is not None, texts=table.sample(),
        )

    def context(self, data: TaskData) -> dict:
        return {"classes": data.info["classes"], **({"task_info": data.info["task_info"]} if "task_info" in data.info else {})}

    def read_eval(self, run, data, *, text_col=None, header=None):
        ds = run.as_dataset(data, labels_required=True, text_col=text_col, header=header)
        ds.require_labels()
        check_known_labels(ds, run.classes)
        return ds, str(ds.source), ds.fingerprint

    # -- scoring ---------------------------------------------------------------------------------
    def score(self, method, backbone, test, ctx, *, n_resamples: int = 1000, intervals: bool = False) -> Scored:
        """Accuracy, macro-F1 and per-class scores of the method's predictions on ``test``;
        ``intervals`` adds 95% bootstrap intervals over examples (``accuracy_ci``, ...)."""
        from ..evaluate import classification_metrics
        from ..runs.run import Predictions

        from ..data.large import TableRows

        if isinstance(test, TableRows):
            return self._score_table(method, backbone, test, ctx, n_resamples=n_resamples, intervals=intervals)
        classes = ctx.classes
        preds = Predictions(classes, method.predict_proba(backbone, test, ctx))
        index = {c: i for i, c in enumerate(classes)}
        y = np.array([index[c] for c in test.labels])
        metrics = classification_metrics(y, preds.indices, classes)
        if intervals:
            from ..evaluate.suite import evaluate_slices

            whole = evaluate_slices(y, preds.indices, classes, {}, ("accuracy", "macro_f1"), n_resamples=n_resamples)["all"]
            metrics.update(accuracy_ci=whole["accuracy"]["ci"], macro_f1_ci=whole["macro_f1"]["ci"], ci_level=0.95,
                           ci_resamples=n_resamples)
        records = []
        for rec, truth in zip(preds.records(list(test.inputs)), test.labels, strict=True):
            row = {"input": rec["input"], "label": truth, "predicted": rec["label"]}
            row.update({f"p[{c}]": p for c, p in rec["probabilities"].items()})
            records.append(row)
        summary = {k: v for k, v in metrics.items() if k != "per_class"}
        return Scored(summary=summary, detail=metrics, records=records)

    def _score_table(self, method, backbone, test, ctx, *, n_resamples: int, intervals: bool) -> Scored:
        """:meth:`score` on the rows of a streamed table: predictions a block at a time into int
        arrays for the metrics; ``predictions.csv`` rows are produced lazily when written."""
        from ..evaluate import classification_metrics

        classes = ctx.classes
        y = test.codes.astype(np.int64)
        pred = np.empty(len(test), dtype=np.int64)
        at = 0
        for _, proba in method.predict_table(backbone, test, ctx):
            pred[at : at + len(proba)] = proba.argmax(1)
            at += len(proba)
        metrics = classification_metrics(y, pred, classes)
        if intervals:
            from ..evaluate.suite import evaluate_slices

            whole = evaluate_slices(y, pred, classes, {}, ("accuracy", "macro_f1"), n_resamples=n_resamples)["all"]
            metrics.update(accuracy_ci=whole["accuracy"]["ci"], macro_f1_ci=whole["macro_f1"]["ci"], ci_level=0.95,
                           ci_resamples=n_resamples)
        summary = {k: v for k, v in metrics.items() if k != "per_class"}
        return Scored(summary=summary, detail=metrics, records=StreamedRecords(method, backbone, test, ctx))

    # -- trained methods -------------------------------------------------------------------------
    def preset(self, method: str, train) -> tuple[str, dict]:
        from ..methods.presets import preset, regime_for

        per_class = median(Counter(train.labels).values())
        return regime_for(per_class), preset(method, per_class)

    def build_model(self, backbone, cfg, ctx) -> nn.Module:
        return ClassifierModel(backbone, len(ctx.classes), cfg.dropout)

    def model_start(self, backbone, train, val, cfg, ctx):
        """LP-FT (Kumar et al. 2022): with ``head_init="probe"`` the head starts from a linear
        probe on the frozen body's features (cached)."""
        if cfg.head_init != "probe":
            return None
        from ..methods.linear_probe import LinearProbe, LinearProbeConfig

        probe = LinearProbe(LinearProbeConfig(refit=False))
        probe.fit(backbone, train, val, ctx)
        weight, bias = probe.weight_.float(), probe.bias_.float()

        def start(model: nn.Module) -> None:
            with torch.no_grad():
                model.head.weight.copy_(weight)
                model.head.bias.copy_(bias)

        return start

    def training(self, model, train, val, cfg, ctx) -> Training:
        bb = model._backbone[0]
        index = {c: i for i, c in enumerate(ctx.classes)}
        prepared_train = bb.prepare(list(train.inputs))
        prepared_val = bb.prepare(list(val.inputs))
        train_labels = torch.tensor([index[c] for c in train.labels], dtype=torch.long)
        val_labels = torch.tensor([index[c] for c in val.labels], dtype=torch.long)
        budget, max_batch = bb.batch_budget
        objective = self.objective(train_labels, bb.batches(prepared_val, budget, max_batch), val_labels,
                                   lambda idx: bb.collate([prepared_val[i] for i in idx]), bb.device)
        augment = (ctx.task_info or {}).get("augment", "none")
        if augment == "none":
            return Training(lengths=[bb.cost(p) for p in prepared_train],
                            collate=lambda idx: bb.collate([prepared_train[i] for i in idx]), objective=objective)
        return Training(lengths=[bb.cost(p) for p in prepared_train],
                        collate=augmented_collate(bb, prepared_train, ctx.seed), objective=objective,
                        record={"augment": augment})

    def objective(self, train_labels: torch.Tensor, val_batches: list[list[int]], val_labels: torch.Tensor,
                  collate_val, device: torch.device) -> Objective:
        """Cross-entropy on logits (labels by example index); validation accuracy, ties by the
        validation cross-entropy."""

        def loss(logits: torch.Tensor, idx: list[int]) -> torch.Tensor:
            return nn.functional.cross_entropy(logits.float(), train_labels[idx].to(logits.device), reduction="none")

        def evaluate(model: nn.Module) -> dict[str, float]:
            correct, loss_sum, n = 0, 0.0, 0
            for idx in val_batches:
                batch = {k: v.to(device) for k, v in collate_val(idx).items()}
                logits = model(batch).float()
                y = val_labels[idx].to(device)
                loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
                correct += int((logits.argmax(1) == y).sum())
                n += len(idx)
            return {"accuracy": correct / max(1, n), "loss": loss_sum / max(1, n)}

        return Objective(loss=loss, evaluate=evaluate, metric=self.primary, val_examples=sum(len(b) for b in val_batches))

    def predict_proba(self, model: nn.Module, data, ctx) -> np.ndarray:
        """(N, n_classes) softmax probabilities of a :class:`ClassifierModel` on ``data``."""
        from ..backbones.base import bf16_inference

        bb = model._backbone[0]
        model.eval()
        prepared = bb.prepare(list(data.inputs))
        out = np.empty((len(prepared), len(ctx.classes)), dtype=np.float32)
        budget, max_batch = bb.batch_budget
        numerics = bf16_inference(model, bb.device) if ctx.precision == "bf16" else nullcontext()
        with torch.inference_mode(), numerics:
            for idx in bb.batches(prepared, budget, max_batch):
                batch = {k: v.to(bb.device) for k, v in bb.collate([prepared[i] for i in idx]).items()}
                out[idx] = torch.softmax(model(batch).float(), dim=-1).cpu().numpy()
        return out

    def verbs(self, modality: str) -> tuple:
        from .verbs import Verb

        item = "text" if modality == "text" else modality
        return (Verb("predict", "label and class probabilities of each input", item=item, field="inputs",
                     call=_predict_verb, needs=("predict_proba", "classes"), result="predictions",
                     example="where is my card?" if item == "text" else None),)

    def export(self, run, out, *, merge: bool = False) -> dict:
        from ..export import export_classifier

        return export_classifier(run, out, merge=merge)

    def onnx_graph(self, method, backbone, ctx, texts):
        """The run's linear head and softmax on the pooled body: output ``probabilities`` (B, n_classes)."""
        from ..data import Dataset
        from ..export import classifier_head
        from ..export_onnx import OnnxGraph

        data = Dataset(inputs=list(texts), labels=None, modality="text", source="<export check>")
        reference = method.predict_proba(backbone, data, ctx)  # a trained method builds its model here
        weight, bias = classifier_head(method)
        head = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            head.weight.copy_(weight)
            head.bias.copy_(bias)
        return OnnxGraph(top=nn.Sequential(head, nn.Softmax(dim=-1)).eval(), output="probabilities",
                         reference={None: reference}, fields={"classes": list(ctx.classes)})


def _check_augment(augment: str, modality: str, method: str | None) -> None:
    """``augment`` needs images and a method that trains on them (one line otherwise)."""
    from ..errors import BadInput
    from ..methods import get_method
    from ..methods.trained import TrainedMethod

    if modality != "image":
        raise BadInput(f"classification option augment={augment} augments images, and this data holds {modality}; "
                       "leave it out")
    if method is not None and not issubclass(get_method(method), TrainedMethod):
        raise BadInput(f"classification option augment={augment} changes training batches, and {method} trains no "
                       "batches of images; use it with finetune, scratch, lora, dora or adapter, or leave it out")


def augmented_collate(bb, prepared: list, seed: int):
    """``collate(idx)`` for training batches with ``augment=crop-flip``: the n-th batch's draws come
    from a generator seeded with ``(seed, n)``, so a run repeats with its seed (a resumed run draws
    anew from its restart)."""
    import itertools

    calls = itertools.count()

    def collate(idx: list[int]) -> dict[str, torch.Tensor]:
        return bb.collate_augmented([prepared[i] for i in idx], np.random.default_rng([seed, next(calls)]))

    return collate


class StreamedRecords:
    """``predictions.csv`` rows of a streamed test split (``input,label,predicted,p[<class>]...``,
    as :meth:`Classification.score` writes them), made a chunk at a time as the run folder is
    written: the sequence interface :func:`headstart.runs.run.write_run_folder` reads (length,
    the first row for the columns, iteration)."""

    def __init__(self, method, backbone, rows, ctx):
        self.method, self.backbone, self.rows, self.ctx = method, backbone, rows, ctx

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        if i != 0:
            raise IndexError("streamed records are read in order; only the first is indexed")
        return next(iter(self))

    def __iter__(self):
        classes = self.ctx.classes
        probs = _rows_of(self.method.predict_table(self.backbone, self.rows, self.ctx))
        for idx, texts in self.rows.table.iter_texts(self.rows.rows):
            block = probs(len(idx))
            for text, truth, p in zip(texts, self.rows.table.codes[idx], block, strict=True):
                row = {"input": text, "label": classes[truth], "predicted": classes[int(p.argmax())]}
                row.update({f"p[{c}]": round(float(v), 6) for c, v in zip(classes, p, strict=True)})
                yield row


def _rows_of(blocks):
    """``take(m)``: the next ``m`` rows of the arrays ``blocks`` yields as ``(index, array)``."""
    held: list[np.ndarray] = []
    count = 0

    def take(m: int) -> np.ndarray:
        nonlocal count
        while count < m:
            _, arr = next(blocks)
            held.append(arr)
            count += len(arr)
        both = np.concatenate(held) if len(held) > 1 else held[0]
        held[:] = [both[m:]] if len(both) > m else []
        count -= m
        return both[:m]

    return take


def _rows_fingerprint(rows) -> str:
    """Content hash of a split of a streamed table: the table's fingerprint and the split's rows."""
    import hashlib

    return hashlib.sha256(rows.table.fingerprint.encode() + rows.rows.tobytes()).hexdigest()


def load_with_hint(path: Path, cols: dict, labels_required: bool, fmt: str | None = None, text_col: str | None = None,
                   header: bool | None = None):
    """Read with the training data's column names when the file has them, else infer."""
    from ..data import load_dataset
    from ..data.readers import read_with_hint

    if not path.is_file():
        return load_dataset(path, fmt=fmt, labels_required=labels_required, header=header)  # raises the one-line error
    return read_with_hint(path, cols, labels_required=labels_required, fmt=fmt, text_col=text_col, header=header)[0]


def check_known_labels(data, classes: list[str]) -> None:
    from ..errors import BadInput

    known = set(classes)
    unseen = Counter(label for label in data.labels if label not in known)
    if unseen:
        first = next(i for i, label in enumerate(data.labels) if label not in known)
        where = data.origin[first] if data.origin else data.source
        shown = ", ".join(f"{c!r} ({n} rows)" for c, n in unseen.most_common(5))
        raise BadInput(
            f"{data.source}: labels never seen in training: {shown}, first at {where}; "
            "remove those rows or add training examples of them"
        )


__all__ = ["Classification", "ClassifierModel", "check_known_labels", "load_with_hint"]


def _predict_verb(served, items: list, params: dict) -> list[dict]:
    """``POST /v1/predict``: ``{"label", "probabilities": {class: p}}`` per input."""
    from .verbs import decoded_files

    if served.modality == "text":
        proba = served.predict_proba(items)
    else:
        with decoded_files(items, served.modality) as paths:
            proba = served.predict_proba(paths)
    classes = served.classes
    return [{"label": classes[int(row.argmax())], "probabilities": {c: round(float(p), 6) for c, p in zip(classes, row, strict=True)}}
            for row in proba]
