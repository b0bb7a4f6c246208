"""Export a text run as one ONNX graph of its own forward, for ONNX Runtime (``--format onnx``).

::

    <out>/
      model.onnx        inputs ``input_ids``, ``attention_mask`` (and ``token_type_ids`` when the
                        tokenizer makes them), int64, axes (batch, sequence); one fp32 output:
                        classification ``probabilities`` (batch, n_classes): pooling, head and
                        softmax inside the graph; retrieval ``embeddings`` (batch, dim), pooled and
                        normalised as the run embeds
      tokenizer files   ``model_max_length`` set to the run's max length
      headstart.json    task, classes or prompts, source run, max length, output name, opset,
                        onnxruntime version and the measured agreement with the run

Any method of an ``hf-text`` run exports: the body as the method left it (LoRA/DoRA/QLoRA merged
into the weights, adapters kept as layers of the graph, fine-tuned weights), traced in fp32 with
the legacy TorchScript exporter (``torch.onnx.export(..., dynamo=False)``; the torch.export-based
one needs ``onnxscript``, which the ``onnx-export`` extra does not bring). What sits on the body is
the task's (:meth:`headstart.tasks.Task.onnx_graph`): classification and retrieval define it
(similarity runs inherit retrieval's: ``embeddings``, both sentences as queries); other tasks and
other backbone families are refused in one line.

Before anything is written, :class:`OnnxRun` (onnxruntime + the tokenizer, no torch) runs the
folder on up to :data:`~headstart.export.CHECK_EXAMPLES` test texts of the run (each role of a
retrieval run: queries and documents) and its outputs must agree with the run's own within
:data:`TOLERANCE`, or nothing is written (:class:`~headstart.errors.CheckFailed`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BadInput, CheckFailed
from .export_st import check_texts, write_json

TOLERANCE = 1e-4
"""Max |out_onnx - out_run| over the check texts' output entries (probabilities or embedding
entries), both in fp32."""
OPSET = 17
"""ONNX opset of the graph (onnxruntime >= 1.17 runs it)."""
FAMILY = "hf-text"
"""The backbone family whose runs export to ONNX (Hugging Face text encoders)."""
EXTRA = "onnx-export"
"""The pip extra that brings onnx and onnxruntime."""
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
"""The graph's possible inputs, in order (``token_type_ids`` only when the tokenizer makes them)."""
FORMAT = "headstart.onnx/1"


@dataclass
class OnnxGraph:
    """What a task puts on the pooled body for the ONNX graph (:meth:`headstart.tasks.Task.onnx_graph`).

    ``top`` maps the backbone's (B, D) pooled features to the graph's output (classification:
    head + softmax; retrieval: nothing, :class:`torch.nn.Identity`), in eval mode. ``reference``
    holds the run's own outputs on the check texts by role (``None``: the texts as given;
    ``"query"`` / ``"document"``: with that role's prefix, which ``fields["prompts"]`` records so
    that :class:`OnnxRun` applies it)."""

    top: Any
    output: str
    reference: dict[str | None, np.ndarray]
    fields: dict = field(default_factory=dict)


def export_onnx(run, out: Path) -> dict:
    """Write ``run`` as ``model.onnx`` + tokenizer + ``headstart.json`` in ``out`` (a new or empty
    folder, checked by :func:`headstart.export.export_run`); returns the ``headstart.json`` record."""
    from .export import CHECK_EXAMPLES, MERGE_METHODS, open_for_export, plain_body, write_folder_atomically

    manifest = run.manifest
    spec = manifest["backbone"]["spec"]
    family = spec.get("family")
    if family != FAMILY:
        raise BadInput(f"export --format onnx: backbone {manifest['backbone']['name']!r} is of the {family} family; ONNX "
                       f"export covers text classification and retrieval runs on {FAMILY} backbones (Hugging Face text "
                       "encoders); use --format hf or the run folder itself")
    _, ort = _require_onnx()
    texts = check_texts(run.path, CHECK_EXAMPLES)
    method_name = manifest["method"]["name"]
    run, method, bb, ctx = open_for_export(run)
    graph = run.task.onnx_graph(method, bb, ctx, texts)  # the run's own outputs first: merging changes the body
    plain_body(method, bb)  # LoRA/DoRA merged, 4-bit layers dequantised, in bb.module itself
    tokenizer = bb.tokenizer_
    pre = bb.spec.preprocessing
    names = _input_names(tokenizer, bb.module)
    module = _text_graph(bb, names, graph.top).to("cpu").eval()
    example = _example_inputs(tokenizer, texts, pre.max_length, names)
    record: dict = {}

    def fill(tmp: Path) -> None:
        _trace(module, example, names, graph.output, tmp / "model.onnx")
        tokenizer.model_max_length = pre.max_length  # tokenizer(..., truncation=True) cuts as the run
        tokenizer.padding_side = "right"  # the run pads on the right (a [CLS] pooling reads position 0)
        tokenizer.save_pretrained(tmp)
        record.update({
            "format": FORMAT,
            "task": run.task.name,
            "source_run": run.id,
            # who embeds: the run's identity, so an index built with the run serves this export's
            # queries (the graph gives the run's embeddings within TOLERANCE, checked below)
            "producer": run.producer,
            "backbone": {"name": manifest["backbone"]["name"], "sha256": manifest["backbone"]["sha256"]},
            "method": method_name,
            "merged": method_name in MERGE_METHODS,
            **graph.fields,
            "pooling": pre.pooling,
            "normalize": bool(pre.normalize),
            "max_length": pre.max_length,
            "inputs": list(names),
            "output": graph.output,
            "opset": OPSET,
            "precision": "fp32",
            "onnxruntime": ort.__version__,
        })
        write_json(tmp / "headstart.json", record)
        loader = OnnxRun(tmp)
        diffs = {str(role): float(np.abs(loader._outputs(texts, role) - ref).max()) for role, ref in graph.reference.items()}
        diff = max(diffs.values())
        roles = [r for r in graph.reference if r is not None]
        record["check"] = {"texts": len(texts), "roles": roles, "max_abs_diff": diff, "by_role": diffs,
                           "tolerance": TOLERANCE, "precision": "fp32", "loader": "OnnxRun (CPUExecutionProvider)"}
        as_roles = f" (as {' and as '.join(r + 's' for r in roles)})" if roles else ""
        record["checked"] = (f"checked on {len(texts)} test texts{as_roles} with OnnxRun (onnxruntime {ort.__version__}): "
                             f"max |{graph.output} onnx - run| = {diff:.1e} (tolerance {TOLERANCE:.0e}, fp32)")
        if not diff <= TOLERANCE:
            raise CheckFailed(f"export of run {run.id}: the ONNX graph's {graph.output} differ from the run's by {diff:.2e} "
                              f"(> {TOLERANCE:.0e}) on {len(texts)} texts ({diffs}); nothing was written")
        write_json(tmp / "headstart.json", record)

    write_folder_atomically(out, run.id, fill)
    return record


def _text_graph(backbone, names: tuple[str, ...], top):
    """``forward(input_ids, attention_mask[, token_type_ids])`` = ``top(backbone.forward_features(batch))``:
    the run's forward with the tokenised inputs as separate tensors, as an ONNX graph takes them."""
    from torch import nn

    class TextGraph(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = backbone.module  # registered, so its weights travel with .to() and the trace
            self.top = top

        def forward(self, *tensors):
            return self.top(backbone.forward_features(dict(zip(names, tensors, strict=True))))

    return TextGraph()


def _require_onnx():
    """(onnx, onnxruntime), or one line naming the extra to install."""
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise BadInput(f"export --format onnx needs the onnx and onnxruntime packages ({e.name} is missing): "
                       f"pip install 'headstart[{EXTRA}]'") from None
    return onnx, onnxruntime


def _input_names(tokenizer, module) -> tuple[str, ...]:
    """input_ids, attention_mask, and token_type_ids when the tokenizer makes them and the body takes them."""
    import inspect

    takes = inspect.signature(module.forward).parameters
    uses_types = "token_type_ids" in getattr(tokenizer, "model_input_names", ()) and "token_type_ids" in takes
    return INPUTS if uses_types else INPUTS[:2]


def _example_inputs(tokenizer, texts: list[str], max_length: int, names: tuple[str, ...]):
    """Two rows of unequal length (one padded) to trace with, so the graph is traced with the mask in use."""
    import torch

    ids = tokenizer(texts[:1], truncation=True, max_length=max_length)["input_ids"][0]
    rows = [ids, ids[: max(1, len(ids) // 2)]]
    arrays = _pad(rows, tokenizer.pad_token_id or 0, names)
    return tuple(torch.from_numpy(arrays[n]) for n in names)


def _trace(module, example: tuple, names: tuple[str, ...], output: str, path: Path) -> None:
    """``torch.onnx.export`` (TorchScript exporter) with dynamic batch/sequence axes, its warnings
    and prints silenced; the written graph is then validated with ``onnx.checker``."""
    import contextlib
    import io
    import warnings

    import onnx
    import torch

    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes[output] = {0: "batch"}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and TracerWarnings (the check covers them)
        try:
            torch.onnx.export(module, example, str(path), dynamo=False, input_names=list(names), output_names=[output],
                              dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True)
        except (RuntimeError, TypeError, ValueError, torch.onnx.errors.OnnxExporterError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise CheckFailed(f"export --format onnx: torch.onnx.export could not trace {type(module.body).__name__} "
                              f"({first}); nothing was written. Use --format hf or the run folder") from None
    onnx.checker.check_model(str(path))


def _pad(rows: list[list[int]], pad_id: int, names: tuple[str, ...], types: list[list[int]] | None = None) -> dict:
    """Right-padded int64 arrays of token ids (as the run's collate pads), the mask and the token types."""
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    kinds = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
        if types is not None:
            kinds[i, : len(r)] = types[i]
    arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": kinds}
    return {n: arrays[n] for n in names}


class OnnxRun:
    """An exported ONNX folder, run with onnxruntime (CPU) and the folder's tokenizer; no torch.

    >>> clf = OnnxRun("my-onnx/")                      # a classification export
    >>> clf.task, clf.classes                          # ("classification", ["billing", ...])
    >>> clf.predict_proba(["my card was charged twice"])           # (1, n_classes) float32
    >>> enc = OnnxRun("my-encoder-onnx/")              # a retrieval export
    >>> enc.embed(["how do I reset my pin"], role="query")         # (1, dim) float32

    Texts are tokenised as the run tokenises (truncated to ``max_length``, right-padded), batched
    by length (``batch_size`` texts per call of the session) and returned in input order. A
    retrieval export's ``prompts`` (the backbone's query / document prefixes) are put in front of
    the texts of that role. ``intra_op_num_threads`` sets onnxruntime's threads for one session
    (1 by default: serve several requests in parallel rather than one on many threads).

    For a server: the ONNX Runtime session may be called from several threads, the Hugging Face
    fast tokenizer (which truncates here) is not safe to share between threads, so give each
    worker thread its own ``OnnxRun`` or call one from a single thread. Errors in the input
    (a text that is not a string, an unknown role, the other task's verb) raise
    :class:`~headstart.errors.BadInput` with one line.
    """

    def __init__(self, folder: str | Path, *, intra_op_num_threads: int = 1):
        import onnxruntime as ort
        from transformers import AutoTokenizer

        self.folder = Path(folder)
        self.meta: dict = json.loads((self.folder / "headstart.json").read_text(encoding="utf-8"))
        """The folder's ``headstart.json`` record."""
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.folder))
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(intra_op_num_threads)
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
        self._inputs = tuple(i.name for i in self.session.get_inputs())

    @property
    def task(self) -> str:
        """The run's task: ``"classification"`` (:meth:`predict_proba`), or ``"retrieval"`` / ``"similarity"``
        (:meth:`embed`; :attr:`meta` ``["output"]`` says which verb applies)."""
        return self.meta["task"]

    @property
    def classes(self) -> list[str]:
        """Class names in the probability columns' order (empty for a retrieval export)."""
        return list(self.meta.get("classes", []))

    @property
    def max_length(self) -> int:
        """Tokens kept per text (longer texts are truncated, as in the run)."""
        return int(self.meta["max_length"])

    def predict_proba(self, texts: list[str], *, batch_size: int = 32) -> np.ndarray:
        """(N, n_classes) float32 probabilities of a classification export, columns in :attr:`classes` order."""
        self._expect("probabilities", "predict_proba", "embed(texts, role=...)")
        return self._outputs(texts, None, batch_size)

    def embed(self, texts: list[str], *, role: str = "query", batch_size: int = 32) -> np.ndarray:
        """(N, dim) float32 embeddings of a retrieval export; ``role`` is "query" or "document"
        (its prefix from ``headstart.json`` goes in front of each text, as in the run)."""
        self._expect("embeddings", "embed", "predict_proba(texts)")
        if role not in ("query", "document"):
            raise BadInput(f"embed: role must be 'query' or 'document' (got {role!r})")
        return self._outputs(texts, role, batch_size)

    def _expect(self, output: str, verb: str, other: str) -> None:
        if self.meta["output"] != output:
            raise BadInput(f"OnnxRun.{verb}: {self.folder} is a {self.task} export (output {self.meta['output']!r}); "
                           f"use {other}")

    def _outputs(self, texts: list[str], role: str | None, batch_size: int = 32) -> np.ndarray:
        """The graph's output for ``texts`` (with ``role``'s prefix; None: as given), in input order."""
        texts = list(texts)
        if any(not isinstance(t, str) for t in texts):
            raise BadInput("OnnxRun: texts must be strings")
        if not texts:
            return np.empty((0, self.session.get_outputs()[0].shape[1]), dtype=np.float32)
        prefix = ((self.meta.get("prompts") or {}).get(role) or "") if role else ""
        enc = self.tokenizer([prefix + t for t in texts], truncation=True, max_length=self.max_length)
        ids, types = enc["input_ids"], enc.get("token_type_ids")
        out: np.ndarray | None = None
        order = np.argsort([len(r) for r in ids], kind="stable")[::-1]  # longest first: little padding per batch
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            feed = _pad([ids[i] for i in idx], self.tokenizer.pad_token_id or 0, self._inputs,
                        [types[i] for i in idx] if types is not None else None)
            result = self.session.run(None, feed)[0]  # (B, n_classes) or (B, dim)
            if out is None:
                out = np.empty((len(texts), result.shape[1]), dtype=np.float32)
            out[idx] = result
        return out


__all__ = ["EXTRA", "OPSET", "OnnxGraph", "OnnxRun", "TOLERANCE", "export_onnx"]
