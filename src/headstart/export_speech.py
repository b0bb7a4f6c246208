"""Export of a speech-recognition run as a plain Hugging Face Whisper folder.

The folder holds the adapted ``WhisperForConditionalGeneration`` (LoRA/DoRA merged into the
weights), its tokenizer, feature extractor and generation config, so that
``transformers.pipeline("automatic-speech-recognition", model=folder)`` and
``WhisperForConditionalGeneration.from_pretrained(folder)`` load it. Before the folder is written
the export is checked twice: the reloaded weights give the run's logits (within
:data:`LOGIT_TOLERANCE`) on real test clips, and the pipeline transcribes them; how many of its
transcripts equal the run's is recorded in ``headstart.json`` (the pipeline always pads to 30 s,
while a run with ``encoder_input="clip"`` reads only the clip's frames, so a rare difference is
expected there and reported, not hidden).
"""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import torch

from .errors import BadInput

LOGIT_TOLERANCE = 1e-3
"""Largest |logit difference| allowed between the run's model and the reloaded export (fp32; the
merge of a LoRA update into the weights reorders float sums)."""
CHECK_CLIPS = 8


def export_whisper(run, out: Path, *, merge: bool = False) -> dict:
    from .export import open_for_export, plain_body, write_folder_atomically
    from .methods._layers import LoRALinear
    from .tasks.asr import _collate, _label_ids, prompt_for, transcribe

    run, method, bb, ctx = open_for_export(run)
    model = method.task_model(bb, ctx)
    clips = _check_clips(run)
    prompt = prompt_for(bb)
    before_text = transcribe(model, clips, desc="checking the export") if clips else []
    probe = None
    if clips:
        from .tasks.asr import SpeechSet

        prepared = bb.prepare(clips[:2])
        labels = _label_ids(bb, prompt, SpeechSet(audio=clips[:2], transcripts=before_text[:2], source="check"))
        probe = _collate(bb, prepared, labels, prompt)
        with torch.inference_mode():
            before_logits = model(probe).float()
    body = plain_body(method, bb)
    leftovers = [n for n, m in body.named_modules() if isinstance(m, LoRALinear) or type(m).__name__ in ("Adapter", "Linear4bit")]
    if leftovers:
        raise BadInput(f"export: {leftovers[0]} is not a plain Whisper layer (a {run.manifest['method']['name']} run); "
                       "use the run folder itself")

    def fill(tmp: Path) -> None:
        from transformers import WhisperForConditionalGeneration, pipeline

        body.save_pretrained(tmp, safe_serialization=True)
        bb.tokenizer_.save_pretrained(tmp)
        bb.extractor_.save_pretrained(tmp)
        record = {"run": run.id, "task": "asr", "backbone": run.manifest["backbone"]["name"],
                  "backbone_sha256": run.manifest["backbone"]["sha256"], "method": run.manifest["method"]["name"],
                  "merged": run.manifest["method"]["name"] in ("lora", "dora", "qlora"),
                  "encoder_input": bb.encoder_input}
        if probe is not None:
            from .backbones.speech import encode
            from .tasks.asr import decoder_logits

            reloaded = WhisperForConditionalGeneration.from_pretrained(tmp).eval()
            with torch.inference_mode():
                after = decoder_logits(reloaded, encode(reloaded.model.encoder, probe["input_features"]), probe)
            diff = float((after.float() - before_logits).abs().max())
            if diff > LOGIT_TOLERANCE:
                raise BadInput(f"export: the saved model's logits differ from the run's by {diff:.2e} (> {LOGIT_TOLERANCE:g}); "
                               "nothing was written")
            asr = pipeline("automatic-speech-recognition", model=str(tmp), device="cpu")
            from .data.audio import read_audio

            limit = {"max_new_tokens": min(200, reloaded.config.max_target_positions - len(prompt.ids))}
            heard = [asr({"raw": read_audio(c), "sampling_rate": 16000}, generate_kwargs=limit)["text"].strip() for c in clips]
            same = sum(a == b for a, b in zip(heard, before_text, strict=True))
            record.update(max_abs_logit_diff=diff, pipeline_checked=len(clips), pipeline_same_transcript=same,
                          checked=f"checked on {len(clips)} test clips: max |logit_export - logit_run| = {diff:.1e} "
                          f"(tolerance {LOGIT_TOLERANCE:g}, fp32); pipeline('automatic-speech-recognition') transcribed "
                          f"{same} of {len(clips)} as the run")
            if same < len(clips):
                warnings.warn(f"export: transformers' pipeline transcribed {same} of {len(clips)} test clips exactly as the "
                              "run does (it pads every clip to 30 s; the run's encoder_input is "
                              f"{record['encoder_input']!r})", stacklevel=2)
        record.setdefault("checked", "not checked: the run's test clips are gone (predictions.csv names none that exist)")
        (tmp / "headstart.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")

    write_folder_atomically(out, run.id, fill)
    return json.loads((out / "headstart.json").read_text(encoding="utf-8"))


def _check_clips(run) -> list[str]:
    """Up to :data:`CHECK_CLIPS` test clips of the run that still exist (from predictions.csv)."""
    try:
        with open(Path(run.path) / "predictions.csv", newline="", encoding="utf-8") as f:
            paths = [r["audio"] for r in csv.DictReader(f) if r.get("audio")]
    except (OSError, KeyError):
        return []
    return [p for p in paths if Path(p).is_file()][:CHECK_CLIPS]


__all__ = ["export_whisper"]
