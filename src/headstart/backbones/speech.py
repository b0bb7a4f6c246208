"""Speech backbones: Whisper (a Hugging Face ``WhisperForConditionalGeneration``).

One backbone serves two tasks. For classification its features are the encoder's states
mean-pooled over the clip's frames (:meth:`WhisperBackbone.forward_features`; the body a head sits
on is the encoder, :attr:`WhisperBackbone.feature_module`); for speech recognition (the ``asr``
task) the whole encoder-decoder is the body and the decoder's own LM head decodes.

Inputs are audio file paths. :meth:`prepare` reads each clip (mono, 16 kHz, checked:
:func:`headstart.data.audio.read_audio`) and :meth:`collate` turns a batch of waveforms into
log-mel features with transformers' ``WhisperFeatureExtractor`` (numpy only). With
``encoder_input="30s"`` every clip is padded to the model's input window (3,000 frames: 30 s) as
Whisper was trained; with ``"clip"`` the encoder reads only the longest clip's frames of the batch
(an even count, at least :data:`MIN_FRAMES`) and its positional embeddings are sliced to match
(:func:`encode`), so a 0.5 s clip costs 0.5 s -- but zero-shot Whisper then loops. ``"auto"``
(the default) reads clips for a model LoRA adapts to speech recognition and 30 s otherwise
(measured: see :class:`~headstart.catalog.AudioPreprocessing`).

Packaged weights are CTranslate2 folders; :mod:`.ct2_whisper` converts one once to a Hugging Face
folder cached by the source's sha256 (which stays the backbone's identity).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..catalog import AudioPreprocessing, identity, is_ct2_whisper
from .base import Backbone, quiet_transformers

HOP = 160
"""Samples per mel frame at 16 kHz (10 ms)."""
WINDOW_FRAMES = 3000
"""Whisper's input window: 30 s of 10 ms frames (a model's own is twice its ``max_source_positions``)."""
MIN_FRAMES = 400
"""The fewest frames the encoder reads in 'clip' mode (4 s; a shorter clip is padded with the
extractor's log-mel of silence). Measured on FSDD digits (clips of ~0.4 s), tiny.en LoRA 12 steps,
100 test clips, one run each: 100 frames WER 0.05, 200 frames 0.04, 400 frames 0.03 (the 30 s
window: 0.04; the Seq2SeqTrainer recipe: 0.03), training 17 s / 27 s / 44 s against 285 s at 30 s
on a loaded machine."""


class AudioClip:
    """A read clip: its samples (float32, 16 kHz) and its file."""

    __slots__ = ("path", "samples")

    def __init__(self, path: str, samples: np.ndarray):
        self.path = path
        self.samples = samples

    @property
    def frames(self) -> int:
        return int(np.ceil(len(self.samples) / HOP))


class WhisperBackbone(Backbone):
    modality = "audio"
    adapted_: bool = False
    """Set by the speech-recognition task for a model LoRA adapts: ``encoder_input="auto"`` then
    reads the clip's own frames (:meth:`headstart.tasks.asr.SpeechRecognition.build_model`)."""
    batch_budget = (16 * WINDOW_FRAMES, 32)
    """(frames per batch, clips per batch) for frozen features: 16 full windows or 32 clips."""

    @property
    def pre(self) -> AudioPreprocessing:
        assert isinstance(self.spec.preprocessing, AudioPreprocessing)
        return self.spec.preprocessing

    # -- loading ---------------------------------------------------------------------------------
    def hf_folder(self) -> Path:
        """The Hugging Face folder the model loads from (a CTranslate2 source is converted once)."""
        if is_ct2_whisper(self.path):
            from .ct2_whisper import converted_folder

            return converted_folder(self.path, identity(self.path))
        return self.path

    def load(self) -> WhisperBackbone:
        from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizerFast

        quiet_transformers()
        folder = self.hf_folder()
        self.tokenizer_ = WhisperTokenizerFast.from_pretrained(folder)
        self.extractor_ = WhisperFeatureExtractor.from_pretrained(folder)
        self.module_ = WhisperForConditionalGeneration.from_pretrained(folder, attn_implementation="sdpa")
        self.module_.eval()
        return self

    def reinitialize(self) -> None:
        from transformers import WhisperForConditionalGeneration

        config = self.module.config
        self.module_ = WhisperForConditionalGeneration(config)
        self.module_.eval()

    @property
    def feature_module(self) -> torch.nn.Module:
        """The encoder: what a classification head sits on (the decoder stays out of the model)."""
        return self.module.model.encoder

    @property
    def feature_dim(self) -> int:
        return int(self.module.config.d_model)

    # -- inputs ----------------------------------------------------------------------------------
    def prepare(self, inputs: list, origins: list[str] | None = None) -> list[AudioClip]:
        from ..data.audio import read_audio

        self.module  # noqa: B018 - loads the feature extractor with the module
        return [AudioClip(str(p), read_audio(p, sample_rate=self.pre.sample_rate, max_seconds=self.max_seconds,
                                             origin=origins[i] if origins else None))
                for i, p in enumerate(inputs)]

    @property
    def encoder_input(self) -> str:
        """'clip' or '30s': the preprocessing's choice, 'auto' resolved (see :class:`AudioPreprocessing`)."""
        mode = self.pre.encoder_input
        if mode == "auto":
            return "clip" if self.adapted_ else "30s"
        return mode

    @property
    def window_frames(self) -> int:
        """The model's input window in mel frames (3,000 for every released Whisper)."""
        return 2 * int(self.module.config.max_source_positions)

    @property
    def max_seconds(self) -> float:
        return min(self.pre.max_seconds, self.window_frames * HOP / self.pre.sample_rate)

    def frames_for(self, clips: list[AudioClip]) -> int:
        """Encoder input frames for a batch of clips (even: the second convolution has stride 2)."""
        window = self.window_frames
        if self.encoder_input == "30s":
            return window
        longest = max(max(c.frames for c in clips), MIN_FRAMES)
        return min(window, longest + longest % 2)

    def cost(self, prepared: AudioClip) -> int:
        return self.window_frames if self.encoder_input == "30s" else min(self.window_frames, max(prepared.frames, MIN_FRAMES))

    def collate(self, prepared: list[AudioClip]) -> dict[str, torch.Tensor]:
        frames = self.frames_for(prepared)
        feats = self.extractor_([c.samples for c in prepared], sampling_rate=self.pre.sample_rate, return_tensors="np",
                                padding="max_length", max_length=frames * HOP, truncation=True)["input_features"]
        lengths = [min(frames, c.frames) for c in prepared]
        return {"input_features": torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32)),
                "audio_frames": torch.tensor(lengths, dtype=torch.long)}

    # -- forward ---------------------------------------------------------------------------------
    def encode(self, batch: dict[str, torch.Tensor], encoder: torch.nn.Module | None = None) -> torch.Tensor:
        """Encoder states (B, frames / 2, d_model) for however many frames the batch has."""
        return encode(encoder if encoder is not None else self.module.model.encoder, batch["input_features"])

    def forward_features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        states = self.encode(batch).float()  # (B, T', H)
        valid = ((batch["audio_frames"] + 1) // 2).clamp(min=1, max=states.shape[1])  # frames after the stride-2 conv
        mask = (torch.arange(states.shape[1], device=states.device)[None, :] < valid[:, None].to(states.device))
        mask = mask.unsqueeze(-1).to(states.dtype)
        return (states * mask).sum(1) / mask.sum(1)

    def preprocessing_signature(self) -> dict[str, Any]:
        return {"family": self.spec.family, **self.spec.to_dict()["preprocessing"]}


def encode(encoder: torch.nn.Module, features: torch.Tensor) -> torch.Tensor:
    """A Hugging Face ``WhisperEncoder``'s forward on any (even) number of mel frames up to 3,000.

    transformers' own forward refuses inputs other than 3,000 frames; the computation is the same
    (two convolutions with GELU, positional embeddings, the layers, the final layer norm) with the
    positional embeddings sliced to the input's length, which is what makes short clips cheap."""
    from torch.nn import functional as F

    x = F.gelu(encoder.conv1(features.to(encoder.conv1.weight.dtype)))
    x = F.gelu(encoder.conv2(x)).permute(0, 2, 1)  # (B, T', H)
    x = x + encoder.embed_positions.weight[: x.shape[1]].to(x.dtype)
    x = F.dropout(x, p=encoder.dropout, training=encoder.training)
    for layer in encoder.layers:
        out = layer(x, attention_mask=None)
        x = out[0] if isinstance(out, tuple) else out
    return encoder.layer_norm(x)


__all__ = ["AudioClip", "WhisperBackbone", "encode"]
