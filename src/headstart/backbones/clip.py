"""Image-text dual encoders: CLIP and SigLIP folders (``CLIPModel`` / ``SiglipModel``).

As an image backbone (modality ``image``) the features are the *projected, L2-normalised image
embeddings* (``get_image_features``, then ``x / ||x||``), so the linear probe and every image
classification path use it unchanged. The text tower is reached through :meth:`embed_texts`
(projected, L2-normalised text embeddings) and :attr:`logit_scale` (``exp`` of the learned
temperature): the zero-shot task (:mod:`headstart.tasks.zero_shot`) scores an image against a
class prompt as ``logit_scale * image . text``.

Preprocessing is read from the folder's ``preprocessor_config.json`` when the folder is resolved
(:func:`headstart.catalog.clip_preprocessing`) and mapped onto
:class:`~headstart.catalog.ImagePreprocessing`, so images are decoded by :func:`~headstart.backbones.vision.load_image` (Pillow only, no
torchvision). Text: CLIP pads to the longest prompt and pools at its end-of-text token; SigLIP
was trained on prompts padded to the full ``max_position_embeddings`` without an attention mask
and pools the last position, so its prompts are padded the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from ..catalog import BackboneSpec
from ..errors import BadInput
from .base import quiet_transformers
from .vision import ImageBackbone

class ImageTower(torch.nn.Module):
    """The image side of a dual encoder (its vision model and, for CLIP, the projection), the same
    module objects as in the whole model: what image classification trains and adapts, so the
    text tower is neither counted nor changed."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.vision_model = model.vision_model
        if getattr(model, "visual_projection", None) is not None:
            self.visual_projection = model.visual_projection

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pooled = self.vision_model(pixel_values=pixel_values, return_dict=True).pooler_output
        return self.visual_projection(pooled) if hasattr(self, "visual_projection") else pooled


class ClipBackbone(ImageBackbone):
    """A CLIP or SigLIP dual encoder via ``AutoModel``; features = normalised image embeddings."""

    dual_encoder: ClassVar[bool] = True
    """It embeds texts in the images' space (:meth:`embed_texts`): what zero-shot tasks need."""
    projections_pretrained: ClassVar[bool] = True
    """Its projections and temperature are trained already: the frozen model is a zero-shot model."""
    default_towers: ClassVar[str] = "both"
    """Which towers an image-text method adapts by default (:mod:`headstart.tasks.image_text`)."""
    text_batch: ClassVar[int] = 64

    def __init__(self, spec: BackboneSpec, path: Path, device: torch.device | None = None):
        super().__init__(spec, path, device)
        self.tokenizer_ = None
        self._tower: tuple[torch.nn.Module, ImageTower] | None = None

    @property
    def feature_module(self) -> torch.nn.Module:
        """The image tower (:class:`ImageTower`), built once per loaded model."""
        if self._tower is None or self._tower[0] is not self.module:
            self._tower = (self.module, ImageTower(self.module))
        return self._tower[1]

    def load(self) -> ClipBackbone:
        from transformers import AutoModel, AutoTokenizer

        quiet_transformers()
        self.module_ = AutoModel.from_pretrained(self.path)
        self.module_.eval()
        self.tokenizer_ = AutoTokenizer.from_pretrained(self.path)
        return self

    def reinitialize(self) -> None:
        """The architecture's own initialisation via ``from_config``."""
        from transformers import AutoModel

        self.module_ = AutoModel.from_config(self.module.config)
        self.module_.eval()

    @property
    def tokenizer(self):
        if self.tokenizer_ is None:
            self.load()
        return self.tokenizer_

    @property
    def feature_dim(self) -> int:
        proj = getattr(self.module, "visual_projection", None)  # CLIP; SigLIP's pooled output is the embedding
        return int(proj.out_features) if proj is not None else int(self.module.config.vision_config.hidden_size)

    def param_count(self) -> int | None:
        """Parameters of the whole dual encoder; before loading, counted from the safetensors
        headers (the zero-shot run's frozen method reports them without loading the model)."""
        if self.module_ is not None:
            return super().param_count()
        from math import prod

        from safetensors import safe_open

        files = sorted(self.path.glob("*.safetensors"))
        if not files:
            return None
        total = 0
        for file in files:
            with safe_open(str(file), framework="pt") as st:
                total += sum(prod(st.get_slice(k).get_shape()) for k in st.keys())
        return total

    @property
    def logit_scale(self) -> float:
        """``exp(logit_scale)``: the learned inverse temperature of image-text similarities."""
        return float(self.module.logit_scale.detach().float().exp())

    def forward_features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        emb = self.feature_module(batch["pixel_values"])  # (B, D): get_image_features' embedding
        return torch.nn.functional.normalize(emb.float(), dim=-1)

    def _tokens(self, texts: list[str]) -> dict[str, torch.Tensor]:
        if self.module.config.model_type == "siglip":
            length = int(self.module.config.text_config.max_position_embeddings)
            enc = self.tokenizer(texts, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
            return {"input_ids": enc["input_ids"]}
        length = int(self.module.config.text_config.max_position_embeddings)
        enc = self.tokenizer(texts, padding=True, max_length=length, truncation=True, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    @property
    def contrastive(self) -> str:
        """The image-text loss the model was trained with: SigLIP's pairwise sigmoid loss, CLIP's InfoNCE."""
        return "sigmoid" if self.module.config.model_type == "siglip" else "infonce"

    def temperature(self) -> tuple[float, float | None]:
        """(the model's log logit scale, its logit bias: SigLIP's, None for CLIP)."""
        bias = getattr(self.module, "logit_bias", None)
        return float(self.module.logit_scale.detach().float()), None if bias is None else float(bias.detach().float())

    def sides(self):
        """The vision and text transformers, pooled before their projections (CLIP's
        ``visual_projection`` / ``text_projection``; SigLIP's towers end in their own heads, so its
        projections are the identity)."""
        from torch import nn

        from .dual import Side

        model = self.module
        vision, text = model.vision_model, model.text_model

        def image_features(batch):
            return vision(pixel_values=batch["pixel_values"], return_dict=True).pooler_output

        def text_features(batch):
            return text(**batch, return_dict=True).pooler_output

        def projection(name: str):
            proj = getattr(model, name, None)
            return nn.Identity() if proj is None else proj

        head = getattr(text, "head", None)
        text_dim = int(head.out_features) if isinstance(head, nn.Linear) else int(model.config.text_config.hidden_size)
        signature = self.preprocessing_signature()
        return (Side("image", vision, image_features, self.prepare, self.cost, self.collate,
                     int(model.config.vision_config.hidden_size), projection("visual_projection"),
                     {"side": "image", **signature}, augment=self.collate_augmented),
                Side("text", text, text_features, list, lambda t: max(1, len(t) // 4), self._tokens, text_dim,
                     projection("text_projection"), {"side": "text", **signature}, batch_budget=(4096, 64)))

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """(N, D) float32 projected, L2-normalised text embeddings, in input order."""
        if not texts:
            raise BadInput("embed_texts: no texts given")
        module = self.module.to(self.device)
        module.eval()
        out = np.empty((len(texts), self.feature_dim), dtype=np.float32)
        with torch.inference_mode():
            for at in range(0, len(texts), self.text_batch):
                chunk = texts[at : at + self.text_batch]
                batch = {k: v.to(self.device) for k, v in self._tokens(chunk).items()}
                emb = module.get_text_features(**batch)
                emb = emb if isinstance(emb, torch.Tensor) else emb.pooler_output  # (B, D)
                out[at : at + len(chunk)] = torch.nn.functional.normalize(emb.float(), dim=-1).cpu().numpy()
        return out
