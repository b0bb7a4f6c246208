"""Export a run as a plain Hugging Face model folder, head included.

::

    <out>/
      config.json, model.safetensors   the body: base, fine-tuned, or LoRA/DoRA/QLoRA merged in
      tokenizer files                  (text) or preprocessor_config.json (images)
      classifier.safetensors           the task head: ``weight`` (n_classes, hidden), ``bias``
      headstart.json                   classes, pooling, normalisation, source run, and the
                                       measured agreement with the run it came from

``config.json`` carries ``id2label``/``label2id``. :class:`ExportedClassifier` is the reference
loader, using only transformers + safetensors (no headstart objects), and the export is checked
with it: predictions of the folder and of the run must agree within :data:`TOLERANCE` (max
absolute difference in probability, both in fp32) or nothing is written.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import BadInput, CheckFailed

TOLERANCE = 1e-4
"""Max |p_export - p_run| over the check examples, both computed in fp32."""
CHECK_EXAMPLES = 64
MERGE_METHODS = ("lora", "dora", "qlora")


def export_run(run, out: str | Path, *, merge: bool = False) -> dict:
    """Write ``run`` as a Hugging Face folder at ``out``; returns the ``headstart.json`` record."""
    from .methods._layers import LoRALinear, NF4Embedding, replace_module
    from .methods.trained import TrainedMethod

    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BadInput(f"--out {out} exists and is not an empty folder; choose a new folder")
    manifest = run.manifest
    method_name = manifest["method"]["name"]
    family = manifest["backbone"]["spec"].get("family")
    if family not in ("hf-text", "hf-image"):
        raise BadInput(f"export writes Hugging Face folders; backbone {manifest['backbone']['name']!r} ({family}) is not a "
                       "Hugging Face model: use the run folder itself with `headstart predict`")
    if method_name == "adapter":
        raise BadInput("export: bottleneck adapters add layers a plain Hugging Face architecture does not have, so an adapter run "
                       "cannot become a plain folder; predict from the run folder, or adapt with --method lora to export")
    if method_name in MERGE_METHODS and not merge:
        raise BadInput(f"export: a {method_name} run becomes a plain Hugging Face folder only with its low-rank updates merged "
                       "into the weights; add --merge")
    if manifest["modality"] != "text":
        raise BadInput("export: only text runs can be exported for now; predict image runs from the run folder")

    from .api import Run

    # A fresh copy: the merge below rewrites the model in place, and a run that already predicted
    # holds a model built at its own precision (QLoRA's 4-bit layers fix their compute dtype).
    run = Run(run.path, store=run.store, allow_base_change=run.allow_base_change)
    method, bb = run._ready()
    ctx = run._ctx()
    ctx.precision = "fp32"
    sample = _check_inputs(run.path)
    reference = method.predict_proba(bb, _texts(sample, manifest["modality"]), ctx)

    if isinstance(method, TrainedMethod):
        model = method.model_
        body, head_w, head_b = model.body, model.head.weight.detach(), model.head.bias.detach()
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
    else:  # linear probe: the body is the base; contrastive: the base tuned in place by predict_proba above
        body = bb.module
        head_w, head_b = method.weight_.float(), method.bias_.float()

    pre = manifest["backbone"]["spec"]["preprocessing"]
    classes = run.classes
    tmp = out.with_name(f".tmp-{out.name}-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        body.config.id2label = dict(enumerate(classes))
        body.config.label2id = {c: i for i, c in enumerate(classes)}
        body.save_pretrained(tmp)
        bb.tokenizer_.save_pretrained(tmp)
        from safetensors.torch import save_file

        save_file({"weight": head_w.float().contiguous().cpu(), "bias": head_b.float().contiguous().cpu()}, str(tmp / "classifier.safetensors"))
        record = {
            "format": "headstart.export/1",
            "source_run": run.id,
            "backbone": {"name": manifest["backbone"]["name"], "sha256": manifest["backbone"]["sha256"]},
            "method": method_name,
            "merged": method_name in MERGE_METHODS,
            "classes": classes,
            "pooling": pre.get("pooling", "mean"),
            "normalize": bool(pre.get("normalize", False)),
            "max_length": pre.get("max_length", 512),
        }
        (tmp / "headstart.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        exported = ExportedClassifier(tmp).predict_proba(sample)
        diff = float(np.abs(exported - reference).max())
        record["check"] = {"examples": len(sample), "max_abs_prob_diff": diff, "tolerance": TOLERANCE, "precision": "fp32"}
        if not diff <= TOLERANCE:
            raise CheckFailed(f"export of run {run.id}: the folder's probabilities differ from the run's by {diff:.2e} "
                              f"(> {TOLERANCE:.0e}) on {len(sample)} examples; nothing was written")
        (tmp / "headstart.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if out.exists():
            out.rmdir()
        out.parent.mkdir(parents=True, exist_ok=True)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return record


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
