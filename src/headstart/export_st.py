"""Export a retrieval run as a sentence-transformers folder.

::

    <out>/
      config.json, model.safetensors   the body: base, fine-tuned, or LoRA/DoRA/QLoRA merged in
      tokenizer files                  ``model_max_length`` set to the run's max length
      modules.json                     Transformer -> Pooling (-> Normalize when the run normalises)
      sentence_bert_config.json        ``max_seq_length``
      1_Pooling/config.json            the run's pooling (mean or [CLS])
      2_Normalize/                     present when the run L2-normalises
      config_sentence_transformers.json  ``prompts``: the backbone's query / document prefixes
      headstart.json                   source run, base hash, and the measured agreement

``sentence_transformers.SentenceTransformer(str(out))`` loads it; ``model.encode(texts,
prompt_name="query")`` (or ``"document"``) gives the run's embeddings. Before the folder is
written, the export embeds the run's test queries both ways (as queries and as documents) with
the run and with :class:`ExportedEncoder` (transformers only), and with ``SentenceTransformer``
when sentence-transformers is installed, and refuses (nothing written) when any differs by more
than :data:`TOLERANCE`; ``headstart.json`` records which loaders were checked.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch

from .errors import BadInput, CheckFailed

TOLERANCE = 1e-4
"""Max |e_export - e_run| over the check texts' embedding entries, both in fp32."""
CHECK_TEXTS = 32


def export_sentence_transformer(run, out: Path, *, merge: bool = False) -> dict:
    from .data import Dataset
    from .export import MERGE_METHODS, open_for_export, plain_body, write_folder_atomically
    from .tasks.retrieval import prefixed

    manifest = run.manifest
    method_name = manifest["method"]["name"]
    run, method, bb, ctx = open_for_export(run)
    texts = check_texts(run.path)
    pre = bb.spec.preprocessing
    reference = {role: method.embed(bb, Dataset(inputs=prefixed(pre, texts, role), labels=None, modality="text",
                                                source="<export check>"), ctx)
                 for role in ("query", "document")}
    body = plain_body(method, bb)
    record: dict = {}

    def fill(tmp: Path) -> None:
        body.save_pretrained(tmp)
        tokenizer = bb.tokenizer_
        tokenizer.model_max_length = pre.max_length
        tokenizer.save_pretrained(tmp)
        modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                   {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
        if pre.normalize:
            modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
            (tmp / "2_Normalize").mkdir()
        write_json(tmp / "modules.json", modules)
        write_json(tmp / "sentence_bert_config.json", {"max_seq_length": pre.max_length, "do_lower_case": False})
        (tmp / "1_Pooling").mkdir()
        write_json(tmp / "1_Pooling" / "config.json", {
            "word_embedding_dimension": bb.feature_dim, "pooling_mode_cls_token": pre.pooling == "cls",
            "pooling_mode_mean_tokens": pre.pooling == "mean", "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False,
            "pooling_mode_lasttoken": False, "include_prompt": True})
        write_json(tmp / "config_sentence_transformers.json", {
            "prompts": {"query": pre.query_prefix, "document": pre.document_prefix}, "default_prompt_name": None,
            "similarity_fn_name": "cosine", "model_type": "SentenceTransformer"})
        record.update({
            "format": "headstart.export/1",
            "task": "retrieval",
            "source_run": run.id,
            "backbone": {"name": manifest["backbone"]["name"], "sha256": manifest["backbone"]["sha256"]},
            "method": method_name,
            "merged": method_name in MERGE_METHODS,
            "pooling": pre.pooling,
            "normalize": pre.normalize,
            "max_length": pre.max_length,
            "prompts": {"query": pre.query_prefix, "document": pre.document_prefix},
        })
        loaders = {"ExportedEncoder": ExportedEncoder(tmp)}
        st = _sentence_transformer(tmp)
        if st is not None:
            loaders["SentenceTransformer"] = st
        diffs = {}
        for name, loader in loaders.items():
            diffs[name] = max(float(np.abs(loader.encode(texts, prompt_name=role) - reference[role]).max())
                              for role in ("query", "document"))
        diff = max(diffs.values())
        record["check"] = {"texts": len(texts), "roles": ["query", "document"], "max_abs_diff": diff,
                           "tolerance": TOLERANCE, "precision": "fp32", "loaders": diffs,
                           "sentence_transformers": "checked" if st is not None else
                           "not installed here (pip install sentence-transformers to check it too)"}
        if not diff <= TOLERANCE:
            raise CheckFailed(f"export of run {run.id}: the folder's embeddings differ from the run's by {diff:.2e} "
                              f"(> {TOLERANCE:.0e}) on {len(texts)} texts ({diffs}); nothing was written")
        write_json(tmp / "headstart.json", record)

    write_folder_atomically(out, run.id, fill)
    return record


class ExportedEncoder:
    """The reference loader of an exported retrieval folder, with transformers and torch only:
    the body, the pooling from ``1_Pooling/config.json``, ``2_Normalize`` when present, and the
    prompts of ``config_sentence_transformers.json``.

    >>> enc = ExportedEncoder("my-encoder")
    >>> enc.encode(["how do I reset my card pin"], prompt_name="query")   # (1, dim) float32
    """

    def __init__(self, folder: str | Path):
        from transformers import AutoModel, AutoTokenizer

        self.folder = Path(folder)
        self.model = AutoModel.from_pretrained(str(self.folder)).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.folder))
        pooling = json.loads((self.folder / "1_Pooling" / "config.json").read_text(encoding="utf-8"))
        self.cls = bool(pooling.get("pooling_mode_cls_token"))
        self.normalize = (self.folder / "2_Normalize").is_dir()
        self.max_length = json.loads((self.folder / "sentence_bert_config.json").read_text(encoding="utf-8"))["max_seq_length"]
        config = self.folder / "config_sentence_transformers.json"
        self.prompts = json.loads(config.read_text(encoding="utf-8")).get("prompts", {}) if config.is_file() else {}

    def encode(self, texts: list[str], *, prompt_name: str | None = None, batch_size: int = 32) -> np.ndarray:
        prefix = self.prompts.get(prompt_name, "") if prompt_name else ""
        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                enc = self.tokenizer([prefix + t for t in texts[start:start + batch_size]], padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt")
                states = self.model(**enc).last_hidden_state  # (B, T, D)
                if self.cls:
                    pooled = states[:, 0]
                else:
                    mask = enc["attention_mask"].unsqueeze(-1).to(states.dtype)
                    pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                if self.normalize:
                    pooled = torch.nn.functional.normalize(pooled, dim=-1)
                out.append(pooled.float().numpy())
        return np.concatenate(out)


class _STLoader:
    def __init__(self, model):
        self.model = model

    def encode(self, texts: list[str], *, prompt_name: str) -> np.ndarray:
        return np.asarray(self.model.encode(texts, prompt_name=prompt_name, convert_to_numpy=True, batch_size=32))


def _sentence_transformer(folder: Path):
    """The folder as ``SentenceTransformer(str(folder))`` loads it, or None when the library is
    not installed (the record says so)."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return None
    return _STLoader(SentenceTransformer(str(folder), device="cpu"))


def check_texts(run_path: Path, n: int = CHECK_TEXTS) -> list[str]:
    """Up to ``n`` of the run's test texts (predictions.csv ``input``; a similarity run's first
    sentences): what an export form is checked on."""
    with open(run_path / "predictions.csv", newline="", encoding="utf-8") as f:
        texts = [row.get("input") or row.get("sentence1") or "" for _, row in zip(range(n), csv.DictReader(f), strict=False)]
    texts = [t for t in texts if t]
    if not texts:
        raise BadInput(f"export: run {run_path.name} has no recorded test texts in predictions.csv to check the export with")
    return texts


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


__all__ = ["ExportedEncoder", "TOLERANCE", "export_sentence_transformer"]
