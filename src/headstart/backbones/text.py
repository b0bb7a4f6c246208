"""Text backbones: any Hugging Face encoder (BERT, MiniLM, MPNet, XLM-R...) with pooling."""

from __future__ import annotations

import torch

from ..catalog import TextPreprocessing
from .base import Backbone, quiet_transformers


class TextBackbone(Backbone):
    modality = "text"
    batch_budget = (2048, 128)
    """Measured on MiniLM/banking77 with 2 CPU cores: ~2-3k tokens per batch beat 8k-32k by 10-40%."""

    @property
    def pre(self) -> TextPreprocessing:
        assert isinstance(self.spec.preprocessing, TextPreprocessing)
        return self.spec.preprocessing

    def load(self) -> TextBackbone:
        from transformers import AutoModel, AutoTokenizer

        quiet_transformers()
        self.tokenizer_ = AutoTokenizer.from_pretrained(self.path)
        # On the CPU, eager attention beat SDPA for sentence-length inputs (MiniLM on banking77,
        # bf16: ~750 vs ~650 sentences/s); on a GPU SDPA is the better kernel.
        attn = "eager" if self.device.type == "cpu" else "sdpa"
        try:
            self.module_ = AutoModel.from_pretrained(self.path, attn_implementation=attn)
        except (ValueError, ImportError):  # architectures without that attention implementation
            self.module_ = AutoModel.from_pretrained(self.path)
        self.module_.eval()
        return self

    def reinitialize(self) -> None:
        """The architecture's own initialisation (e.g. N(0, 0.02) for BERT) via ``from_config``."""
        from transformers import AutoModel

        config = self.module.config
        self.module_ = AutoModel.from_config(config, attn_implementation=config._attn_implementation)
        self.module_.eval()

    @property
    def feature_dim(self) -> int:
        return int(self.module.config.hidden_size)

    def prepare(self, inputs: list[str]) -> list[list[int]]:
        self.module  # noqa: B018 - loads the tokenizer with the module
        enc = self.tokenizer_(inputs, truncation=True, max_length=self.pre.max_length, add_special_tokens=True)
        return enc["input_ids"]

    def cost(self, prepared: list[int]) -> int:
        return len(prepared)

    def collate(self, prepared: list[list[int]]) -> dict[str, torch.Tensor]:
        width = max(len(ids) for ids in prepared)
        pad = self.tokenizer_.pad_token_id or 0
        ids = torch.full((len(prepared), width), pad, dtype=torch.long)
        mask = torch.zeros((len(prepared), width), dtype=torch.long)
        for row, seq in enumerate(prepared):
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def forward_features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        states = self.module(**batch).last_hidden_state  # (B, T, H)
        if self.pre.pooling == "cls":
            pooled = states[:, 0].float()
        else:
            mask = batch["attention_mask"].unsqueeze(-1).to(torch.float32)  # (B, T, 1)
            pooled = (states.float() * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, H)
        if self.pre.normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled
