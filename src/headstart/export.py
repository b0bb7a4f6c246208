"""Export a run as a plain Hugging Face model folder, head included.

::

    <out>/
      config.json, model.safetensors   the body: base, fine-tuned, or LoRA/DoRA/QLoRA merged in;
                                       model.safetensors also holds the head (``headstart_head.*``)
                                       and the guards described below
      modeling_headstart.py            ``HeadstartForSequenceClassification``: the body class + the
                                       run's pooling + the head (``auto_map`` in config.json)
      tokenizer files                  ``model_max_length`` set to the run's max length
      classifier.safetensors           the task head: ``weight`` (n_classes, hidden), ``bias``
      headstart.json                   classes, pooling, normalisation, source run, and the
                                       measured agreement with the run it came from

``config.json`` carries ``id2label``/``label2id``. :class:`ExportedClassifier` is the reference
loader, using only transformers + safetensors (no headstart objects), and the export is checked
with it: predictions of the folder and of the run must agree within :data:`TOLERANCE` (max
absolute difference in probability, both in fp32) or nothing is written.

**The standard loader.** ``AutoModel.from_pretrained(out)`` gives the (trained) body.
``AutoModelForSequenceClassification.from_pretrained(out)`` cannot give the run's model with a
built-in class: headstart's head is linear on the mean-pooled (or [CLS]) state, optionally L2
normalised, while BERT's built-in head reads the [CLS] state through the tanh pooler and MPNet's /
RoBERTa's through a dense+tanh layer, so no mapping of the trained head into those weights gives
the same probabilities (not even for ``cls`` pooling). Left alone, transformers 5.x builds that
class with a *random* head and only logs a "MISSING ... newly initialized" load report. So:

- with ``trust_remote_code=True`` (also ``pipeline("text-classification", model=out,
  trust_remote_code=True)``) the ``auto_map`` entry loads ``modeling_headstart.py``, which
  subclasses the body's own transformers class and adds the pooling and the head: the run's
  probabilities, checked at export like the reference loader (:data:`TOLERANCE`);
- without it, the folder holds zero-size tensors under the built-in head's parameter names
  (:func:`_guard_tensors`), so transformers stops with a size-mismatch error ("You set
  `ignore_mismatched_sizes` to `False`, thus raising an error") instead of a random head; the
  export check confirms the refusal. A plain ``AutoModel`` load lists those tensors, and the head,
  as UNEXPECTED and ignores them.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import BadInput, CheckFailed, WriteFailed

TOLERANCE = 1e-4
"""Max |p_export - p_run| over the check examples, both computed in fp32."""
CHECK_EXAMPLES = 64
MERGE_METHODS = ("lora", "dora", "qlora")


def export_run(run, out: str | Path, *, merge: bool = False, format: str = "hf") -> dict:
    """Write ``run`` as a folder the standard loader of its task reads (classification: a Hugging
    Face folder with the head; retrieval: a sentence-transformers folder); returns the
    ``headstart.json`` record. The form is the task's (:meth:`headstart.tasks.Task.export`);
    ``format="onnx"``: one ONNX graph of the run's forward instead (:mod:`headstart.export_onnx`)."""
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BadInput(f"--out {out} exists and is not an empty folder; choose a new folder")
    if format == "onnx":  # one traced graph of the run's own forward: its own checks (any method)
        from .export_onnx import export_onnx

        return export_onnx(run, out)
    if format != "hf":
        raise BadInput(f"export: --format {format!r} is not one of hf, onnx")
    manifest = run.manifest
    method_name = manifest["method"]["name"]
    family = manifest["backbone"]["spec"].get("family")
    if family not in ("hf-text", "hf-image", "clip", "whisper", "causal-lm"):
        raise BadInput(f"export writes Hugging Face folders; backbone {manifest['backbone']['name']!r} ({family}) is not a "
                       "Hugging Face model: use the run folder itself")
    if method_name == "adapter":
        raise BadInput("export: bottleneck adapters add layers a plain Hugging Face architecture does not have, so an adapter run "
                       "cannot become a plain folder; use the run folder itself, or adapt with --method lora to export")
    if method_name in MERGE_METHODS and not merge and not run.task.exports_adapters:
        raise BadInput(f"export: a {method_name} run becomes a plain Hugging Face folder only with its low-rank updates merged "
                       "into the weights; add --merge")
    if manifest["modality"] in ("image", "audio") and run.task.has_head and run.task.predicts:
        raise BadInput(f"export: {manifest['modality']} classification runs cannot be exported yet; use the run folder itself")
    return run.task.export(run, out, merge=merge)


def fresh_copy(run):
    """The run opened anew: export merges into the model in place, and a run that already
    predicted holds a model built at its own precision (QLoRA's 4-bit layers fix their dtype)."""
    from .api import Run

    return Run(run.path, store=run.store, allow_base_change=run.allow_base_change)


def open_for_export(run):
    """(fresh run, method, backbone, fp32 context): what every export form starts from."""
    run = fresh_copy(run)
    method, bb = run.open_model()
    ctx = run.fit_context()
    ctx.precision = "fp32"
    return run, method, bb, ctx


def plain_body(method, bb) -> nn.Module:
    """The run's body as a plain transformers module: LoRA/DoRA merged, 4-bit layers dequantised
    (in place: call on a :func:`fresh_copy`); the base module for methods that train no body."""
    from .methods._layers import LoRALinear, NF4Embedding, replace_module
    from .methods.trained import TrainedMethod

    if not isinstance(method, TrainedMethod):
        return bb.module
    body = method.model_.body
    for name, mod in list(body.named_modules()):
        if isinstance(mod, LoRALinear):
            replace_module(body, name, mod.merged())
    for name, mod in list(body.named_modules()):
        if isinstance(mod, NF4Embedding):
            dense = nn.Embedding(mod.num_embeddings, mod.embedding_dim, padding_idx=mod.padding_idx)
            dense.weight.data.copy_(mod.weight)
            replace_module(body, name, dense)
        elif type(mod).__name__ == "Linear4bit":
            replace_module(body, name, _dequantized_linear(mod))
    return body


def write_folder_atomically(out: Path, run_id: str, fill) -> None:
    """Call ``fill(tmp)`` on a private temporary folder beside ``out`` and rename it to ``out``
    only when it returned; on any failure nothing is left, and a full or read-only disk is one line."""
    parent_existed = out.parent.exists()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out.name}-", dir=out.parent))  # mode 0700; opened up below
    try:
        fill(tmp)
        _open_modes(tmp)
        if out.exists():
            out.rmdir()
        os.rename(tmp, out)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if not parent_existed and not any(out.parent.iterdir()):
            out.parent.rmdir()
        from safetensors import SafetensorError

        if isinstance(e, (OSError, SafetensorError)):  # a full or read-only disk: one line, nothing left
            reason = getattr(e, "strerror", None) or str(e).split("I/O error: ")[-1]
            raise WriteFailed(f"export of run {run_id} to {out}: cannot write ({reason}); nothing was written. "
                              "Free space or choose another --out") from None
        raise


def classifier_head(method) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight (n_classes, D), bias (n_classes,)) of a classification run's linear head, fp32 on the
    CPU; call after the method predicted (a trained method builds its model then)."""
    from .methods.trained import TrainedMethod

    if isinstance(method, TrainedMethod):
        head_w, head_b = method.model_.head.weight.detach(), method.model_.head.bias.detach()
    else:  # linear probe: the body is the base; contrastive: the base tuned in place by predict_proba
        head_w, head_b = method.weight_, method.bias_
    return head_w.float().contiguous().cpu(), head_b.float().contiguous().cpu()


def export_classifier(run, out: Path, *, merge: bool = False) -> dict:
    """The classification export: the body, the pooling and the head (see the module docstring)."""
    manifest = run.manifest
    method_name = manifest["method"]["name"]
    run, method, bb, ctx = open_for_export(run)
    sample = _check_inputs(run.path)
    reference = method.predict_proba(bb, _texts(sample, manifest["modality"]), ctx)

    body = plain_body(method, bb)
    head_w, head_b = classifier_head(method)

    pre = manifest["backbone"]["spec"]["preprocessing"]
    classes = run.classes
    record: dict = {}

    def fill(tmp: Path) -> None:
        body.config.id2label = dict(enumerate(classes))
        body.config.label2id = {c: i for i, c in enumerate(classes)}
        body.config.auto_map = {"AutoModelForSequenceClassification": f"{MODELING_FILE[:-3]}.{STANDARD_CLASS}"}
        guards = _guard_tensors(body.config, {k for k, _ in body.state_dict().items()})
        state = {**body.state_dict(), "headstart_head.weight": head_w, "headstart_head.bias": head_b, **guards}
        body.save_pretrained(tmp, state_dict=state)
        modeling = _modeling_source(type(body).__name__, sorted(guards), pre.get("pooling", "mean"), bool(pre.get("normalize", False)))
        (tmp / MODELING_FILE).write_text(modeling, encoding="utf-8")
        tokenizer = bb.tokenizer_
        tokenizer.model_max_length = pre.get("max_length", 512)  # tokenizer(..., truncation=True) as the run
        tokenizer.save_pretrained(tmp)
        from safetensors.torch import save_file

        save_file({"weight": head_w, "bias": head_b}, str(tmp / "classifier.safetensors"))
        record.update({
            "format": "headstart.export/1",
            "source_run": run.id,
            "backbone": {"name": manifest["backbone"]["name"], "sha256": manifest["backbone"]["sha256"]},
            "method": method_name,
            "merged": method_name in MERGE_METHODS,
            "classes": classes,
            "pooling": pre.get("pooling", "mean"),
            "normalize": bool(pre.get("normalize", False)),
            "max_length": pre.get("max_length", 512),
        })
        (tmp / "headstart.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        diffs = {"reference": ExportedClassifier(tmp).predict_proba(sample),
                 "standard": _standard_loader_proba(tmp, sample)}
        diffs = {k: float(np.abs(v - reference).max()) for k, v in diffs.items()}
        diff = max(diffs.values())
        record["check"] = {"examples": len(sample), "max_abs_prob_diff": diff, "tolerance": TOLERANCE, "precision": "fp32",
                           "loaders": {"ExportedClassifier": diffs["reference"],
                                       "AutoModelForSequenceClassification(trust_remote_code=True)": diffs["standard"]},
                           "plain_auto_class_refuses": _plain_auto_class_refuses(tmp)}
        if not diff <= TOLERANCE:
            raise CheckFailed(f"export of run {run.id}: the folder's probabilities differ from the run's by {diff:.2e} "
                              f"(> {TOLERANCE:.0e}) on {len(sample)} examples ({diffs}); nothing was written")
        if not record["check"]["plain_auto_class_refuses"]:
            raise CheckFailed(f"export of run {run.id}: AutoModelForSequenceClassification without trust_remote_code loaded "
                              "the folder with a random head instead of refusing; nothing was written")
        (tmp / "headstart.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    write_folder_atomically(out, run.id, fill)
    return record


MODELING_FILE = "modeling_headstart.py"
STANDARD_CLASS = "HeadstartForSequenceClassification"

_MODELING_TEMPLATE = '''"""Written by `headstart export`: the exported body + headstart's pooling + the trained head.

    AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)

gives the run's probabilities (checked at export). Needs only torch and transformers.
"""

import json
import os

import torch
from torch import nn
from transformers import {body_class} as _Body
from transformers.modeling_outputs import SequenceClassifierOutput

POOLING, NORMALIZE = {pooling!r}, {normalize!r}


class {cls}(_Body):
    # Zero-size guard tensors under the built-in classification head's names: they make a load
    # without trust_remote_code fail instead of building a random head; this class ignores them.
    _keys_to_ignore_on_load_unexpected = {guards!r}

    def __init__(self, config):
        super().__init__(config)
        self.headstart_head = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, return_dict=None):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        extra = {{}} if token_type_ids is None else {{"token_type_ids": token_type_ids}}
        states = super().forward(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        if POOLING == "cls":
            pooled = states[:, 0].float()
        else:
            mask = attention_mask.unsqueeze(-1).float()  # (B, T, 1)
            pooled = (states.float() * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, H)
        if NORMALIZE:
            pooled = nn.functional.normalize(pooled, dim=-1)
        logits = self.headstart_head(pooled)  # (B, n_classes)
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)
'''


def _modeling_source(body_class: str, guards: list[str], pooling: str, normalize: bool) -> str:
    import re

    import transformers

    if not hasattr(transformers, body_class):
        raise CheckFailed(f"export: the body's class {body_class} is not a transformers class, so "
                          f"{MODELING_FILE} cannot subclass it; predict from the run folder")
    return _MODELING_TEMPLATE.format(body_class=body_class, cls=STANDARD_CLASS, guards=[f"^{re.escape(g)}$" for g in guards],
                                     pooling=pooling, normalize=normalize)


def _guard_tensors(config, body_keys: set[str]) -> dict[str, torch.Tensor]:
    """Zero-size tensors named like the parameters of the built-in sequence-classification head
    (``classifier.weight`` for BERT): loading the folder into that class then stops with a size
    mismatch instead of initialising a random head. Empty when transformers has no such class."""
    from transformers import AutoModelForSequenceClassification

    try:
        with torch.device("meta"):
            full = AutoModelForSequenceClassification.from_config(config)
    except ValueError:  # no built-in sequence-classification class: transformers refuses on its own
        return {}
    prefix = full.base_model_prefix
    names = [k for k in full.state_dict() if not k.startswith(prefix + ".") and k not in body_keys]
    return {k: torch.zeros(0) for k in names}
def _standard_loader_proba(folder: Path, texts: list[str]) -> np.ndarray:
    """Probabilities from ``AutoModelForSequenceClassification.from_pretrained(folder,
    trust_remote_code=True)``: the same class and ``from_pretrained`` call, with the module imported
    from the folder directly (transformers would first copy it into its modules cache)."""
    from transformers import AutoConfig, AutoTokenizer

    spec = importlib.util.spec_from_file_location(f"_headstart_export_check_{os.getpid()}", folder / MODELING_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = AutoConfig.from_pretrained(folder)
    model = getattr(module, config.auto_map["AutoModelForSequenceClassification"].split(".")[-1])
    model = model.from_pretrained(folder, config=config).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), 32):
            enc = tokenizer(texts[i : i + 32], padding=True, truncation=True, return_tensors="pt")  # to max_length
            out.append(torch.softmax(model(**enc).logits.float(), dim=-1).numpy())
    sys.modules.pop(spec.name, None)
    return np.concatenate(out)


def _plain_auto_class_refuses(folder: Path) -> bool:
    """Whether ``AutoModelForSequenceClassification.from_pretrained(folder)`` (no remote code)
    raises rather than building a random head."""
    from transformers import AutoModelForSequenceClassification

    try:
        with _quiet_load_reports():  # the report of the refused load is expected here
            AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=False)
    except (RuntimeError, ValueError):
        return True
    return False


@contextlib.contextmanager
def _quiet_load_reports():
    """transformers' load reports off (the guards and the head are UNEXPECTED for a plain body)."""
    import transformers

    before = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(before)


def _open_modes(folder: Path) -> None:
    """Give the folder ``open()``/``mkdir()``'s modes under the umask (0644/0755 under 022):
    ``tempfile`` made it 0700, and safetensors writes its files 0600."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o777 & ~umask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~umask)


def _dequantized_linear(q) -> nn.Linear:
    from .methods._layers import dense_weight

    w = dense_weight(q).float()
    lin = nn.Linear(q.in_features, q.out_features, bias=q.bias is not None)
    with torch.no_grad():
        lin.weight.copy_(w)
        if q.bias is not None:
            lin.bias.copy_(q.bias.float())
    return lin


def _check_inputs(run_path: Path) -> list[str]:
    """Up to CHECK_EXAMPLES test inputs recorded in the run, for the agreement check."""
    with open(run_path / "predictions.csv", newline="", encoding="utf-8") as f:
        rows = [r["input"] for _, r in zip(range(CHECK_EXAMPLES), csv.DictReader(f), strict=False)]
    if not rows:
        raise BadInput(f"{run_path}: the run has no recorded test predictions to check the export against")
    return rows


def _texts(texts: list[str], modality: str):
    from .data import Dataset

    return Dataset(inputs=list(texts), labels=None, modality=modality, source="<export check>")


class ExportedClassifier:
    """Reference loader for an exported text folder: transformers + safetensors only.

    >>> clf = ExportedClassifier("exported/")
    >>> clf.predict_proba(["my card was charged twice"])   # (1, n_classes)
    """

    def __init__(self, folder: str | Path):
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoTokenizer

        folder = Path(folder)
        self.meta = json.loads((folder / "headstart.json").read_text(encoding="utf-8"))
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        with _quiet_load_reports():  # the guard tensors and headstart_head are UNEXPECTED for the plain body
            self.model = AutoModel.from_pretrained(folder).eval()
        head = load_file(str(folder / "classifier.safetensors"))
        self.weight, self.bias = head["weight"], head["bias"]
        self.classes = self.meta["classes"]

    @torch.inference_mode()
    def predict_proba(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        out = []
        for i in range(0, len(texts), batch_size):
            enc = self.tokenizer(texts[i : i + batch_size], padding=True, truncation=True,
                                 max_length=self.meta["max_length"], return_tensors="pt")
            states = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
            if self.meta["pooling"] == "cls":
                pooled = states[:, 0]
            else:
                mask = enc["attention_mask"].unsqueeze(-1).float()  # (B, T, 1)
                pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, H)
            if self.meta["normalize"]:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            out.append(torch.softmax(pooled @ self.weight.T + self.bias, dim=-1).numpy())
        return np.concatenate(out)
