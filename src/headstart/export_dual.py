"""Export an image-text run on CLIP or SigLIP as the model's own Hugging Face folder.

The folder is what ``CLIPModel`` / ``SiglipModel`` (``AutoModel``), ``AutoProcessor`` and
``pipeline("zero-shot-image-classification")`` load: the towers with LoRA/DoRA merged (or as
fine-tuned), the trained projections, and the learned temperature (``logit_scale``, SigLIP's
``logit_bias``) written back into the model, beside the backbone's tokenizer and preprocessor
files. Before anything is kept, the folder is loaded with ``AutoModel`` and its
``get_image_features`` / ``get_text_features`` (normalised) must match the run's own embeddings
within :data:`TOLERANCE` on test images and captions of the run. A locked-image pair has no single
standard model class; its runs are used from the run folder.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import torch

from .errors import BadInput, CheckFailed

TOLERANCE = 1e-4
CHECK_ITEMS = 8
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


def _check_items(run_path: Path) -> tuple[list[str], list[str]]:
    """Up to :data:`CHECK_ITEMS` test images (that still exist) and captions from ``predictions.csv``."""
    images, texts = [], []
    with open(run_path / "predictions.csv", newline="", encoding="utf-8") as f:
        for rec in csv.DictReader(f):
            if rec["direction"] == "image->text" and len(images) < CHECK_ITEMS and Path(rec["query"]).is_file():
                images.append(rec["query"])
            elif rec["direction"] == "text->image" and len(texts) < CHECK_ITEMS:
                texts.append(rec["query"])
    return images, texts


def export_dual_encoder(run, out: Path, *, merge: bool = False) -> dict:
    from .export import MERGE_METHODS, fresh_copy, plain_body, write_folder_atomically
    from .methods.trained import TrainedMethod

    manifest = run.manifest
    if manifest["backbone"]["spec"].get("family") != "clip":
        raise BadInput(f"export: backbone {manifest['backbone']['name']!r} is a locked-image pair of two towers, which no "
                       "single standard model class loads; use the run folder (run.embed_images / run.embed_texts)")
    method_name = manifest["method"]["name"]
    run = fresh_copy(run)
    method, bb = run.open_model()
    ctx = run.fit_context()
    ctx.precision = "fp32"
    images, texts = _check_items(run.path)
    if not images or not texts:
        raise BadInput(f"export of run {run.id}: its predictions.csv names no test image that still exists; the export "
                       "check embeds a few of them")
    reference = (run.task.embed_items(method, bb, images, ctx, "image"), run.task.embed_items(method, bb, texts, ctx, "text"))
    model = method.task_model(bb, ctx)
    if isinstance(method, TrainedMethod):
        plain_body(method, bb)  # LoRA/DoRA merged into the towers, which are the model's own modules
    clip = bb.module
    with torch.no_grad():
        clip.logit_scale.copy_(model.head.log_scale.detach().to(clip.logit_scale.dtype))
        if model.head.bias is not None and getattr(clip, "logit_bias", None) is not None:
            clip.logit_bias.copy_(model.head.bias.detach().to(clip.logit_bias.dtype).reshape(clip.logit_bias.shape))
    record: dict = {}

    def fill(tmp: Path) -> None:
        from transformers import AutoModel

        clip.save_pretrained(tmp)
        bb.tokenizer.save_pretrained(tmp)
        for name in PROCESSOR_FILES:
            if (bb.path / name).is_file():
                shutil.copyfile(bb.path / name, tmp / name)
        loaded = AutoModel.from_pretrained(tmp).eval()
        pre_bb = type(bb)(bb.spec, tmp, bb.device).load()  # the folder's own tokenizer and preprocessing
        with torch.no_grad():
            pixels = pre_bb.collate(images)["pixel_values"]
            img = loaded.get_image_features(pixel_values=pixels)
            txt = loaded.get_text_features(**pre_bb._tokens(texts))
        got = [torch.nn.functional.normalize((x if isinstance(x, torch.Tensor) else x.pooler_output).float(), dim=-1).numpy()
               for x in (img, txt)]
        diff = max(float(np.abs(g - r).max()) for g, r in zip(got, reference, strict=True))
        scale_diff = abs(float(loaded.logit_scale.detach()) - float(model.head.log_scale.detach()))
        record.update({
            "format": "headstart.export/1", "source_run": run.id, "task": "image-text",
            "backbone": {"name": manifest["backbone"]["name"], "sha256": manifest["backbone"]["sha256"]},
            "method": method_name, "merged": method_name in MERGE_METHODS, "model_type": clip.config.model_type,
            "templates": (manifest.get("task_info") or {}).get("templates"),
            "check": {"images": len(images), "texts": len(texts), "max_abs_embedding_diff": diff,
                      "logit_scale_diff": scale_diff, "tolerance": TOLERANCE, "precision": "fp32", "loader": "AutoModel"},
        })
        record["checked"] = (f"checked on {len(images)} test images and {len(texts)} captions with AutoModel: max "
                             f"|e_export - e_run| = {diff:.1e}, logit scale within {scale_diff:.1e} (tolerance "
                             f"{TOLERANCE:.0e}, fp32); pipeline('zero-shot-image-classification') loads the folder")
        if not (diff <= TOLERANCE and scale_diff <= TOLERANCE):
            raise CheckFailed(f"export of run {run.id}: the folder's embeddings differ from the run's by {diff:.2e} (logit "
                              f"scale by {scale_diff:.2e}; tolerance {TOLERANCE:.0e}); nothing was written")
        (tmp / "headstart.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    write_folder_atomically(out, run.id, fill)
    return record


__all__ = ["export_dual_encoder"]
