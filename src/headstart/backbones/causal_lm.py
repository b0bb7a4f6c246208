"""Causal language models (Llama, SmolLM2, Qwen2, Gemma 3, Mistral, Phi...): the body the
``generation`` task adapts.

A causal LM is never an encoder here: it has no pooled features (:meth:`forward_features`
refuses), so classification and retrieval refuse it before anything loads
(:meth:`headstart.tasks.Task.check_backbone`). Its tokenizer and chat template come with it.

Packaged bases are GGUF files (quantised); :mod:`.gguf` dequantises one once into a plain
Hugging Face folder cached by the file's sha256, which stays the base's identity. ``hf:`` ids and
local folders load directly.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import BadInput
from .base import Backbone, quiet_transformers


class CausalLMBackbone(Backbone):
    modality = "text"
    causal_lm = True
    batch_budget = (4096, 16)

    def gguf_file(self) -> Path | None:
        """The GGUF file the base comes from: the path itself, or the one ``.gguf`` file of a
        folder without ``config.json`` (a GGUF assembled from packaged parts); None otherwise."""
        if self.path.is_file():
            return self.path if self.path.suffix == ".gguf" else None
        if not (self.path / "config.json").is_file():
            found = sorted(self.path.glob("*.gguf"))
            if len(found) == 1:
                return found[0]
        return None

    def hf_folder(self) -> Path:
        """The Hugging Face folder the model loads from (a GGUF file is dequantised once)."""
        gguf = self.gguf_file()
        if gguf is not None:
            from ..catalog import identity
            from .gguf import dequantised_folder

            return dequantised_folder(gguf, identity(gguf))
        return self.path

    def load(self) -> CausalLMBackbone:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        quiet_transformers()
        folder = self.hf_folder()
        self.tokenizer_ = AutoTokenizer.from_pretrained(folder)
        if self.tokenizer_.pad_token_id is None:  # padding positions are masked; any id serves
            self.tokenizer_.pad_token = self.tokenizer_.eos_token
        self.module_ = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="sdpa")
        self.module_.eval()
        return self

    def reinitialize(self) -> None:
        from transformers import AutoModelForCausalLM

        config = self.module.config
        self.module_ = AutoModelForCausalLM.from_config(config, attn_implementation=config._attn_implementation)
        self.module_.eval()

    @property
    def tokenizer(self):
        self.module  # noqa: B018 - loads the tokenizer with the module
        return self.tokenizer_

    @property
    def feature_dim(self) -> int:
        return int(self.module.config.hidden_size)

    @property
    def max_positions(self) -> int:
        """Tokens the model's position encoding covers (``max_position_embeddings``)."""
        return int(getattr(self.module.config, "max_position_embeddings", 2048) or 2048)

    def _refuse(self):
        raise BadInput(f"backbone {self.spec.name!r} is a causal language model: it generates text and has no pooled "
                       "features; use it with --task generation, or choose an encoder (see `headstart models`)")

    def prepare(self, inputs: list) -> list:
        self._refuse()

    def cost(self, prepared) -> int:
        return len(prepared)

    def collate(self, prepared: list) -> dict[str, torch.Tensor]:
        self._refuse()

    def forward_features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        self._refuse()


__all__ = ["CausalLMBackbone"]
