"""Speech recognition (ASR): (audio, transcript) pairs; Whisper's own decoder and LM head.

Data
    A table (CSV/TSV/JSONL/Parquet) with an audio-path column (named ``audio``/``path``/``file``...
    or any column of ``.wav``/``.flac``/``.ogg``/``.mp3`` paths; ``--text-col`` names it) and a
    transcript column (``transcript``/``text``/``sentence``...; ``--label-col`` names it). Relative
    paths are read against the table's folder; the data fingerprint covers the audio bytes. The
    split is seeded, by utterance; ``--test FILE`` gives a test set of its own.

Model and loss
    The whole encoder-decoder is the body (:class:`SpeechToTextModel`): the method injects into or
    fine-tunes it (LoRA's default targets: the attention projections of encoder and decoder). The
    decoder reads Whisper's prompt -- start of transcript, the language and ``transcribe`` for a
    multilingual model, no timestamps -- then the transcript; the loss is the cross-entropy on the
    transcript's tokens and the end token only (the prompt is masked), averaged per utterance. The
    state kept is the one with the lowest validation WER (ties: the lower validation loss).

Decoding
    Greedy or beam search with the decoder's key/value cache (:func:`decode`), the tokens Whisper's
    generation config suppresses suppressed, and every special token but the end token.

Metrics
    WER (primary) and CER on normalised text (:mod:`headstart.evaluate.speech`: case, punctuation,
    numbers as words; the normaliser's version is recorded in the run), corpus-level (errors /
    reference words), with 95% bootstrap intervals over utterances; ``predictions.csv`` holds every
    utterance's reference, hypothesis and error counts, so compare's intervals and drift's paired
    bootstrap are computed over the same utterances.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..evaluate.metrics import MetricSpec
from .base import Objective, Scored, Task, TaskData, Training, seeded_split

TRANSCRIPT_NAMES = ("transcript", "transcription", "text", "sentence", "sentences", "normalized_text", "label")
MAX_NEW_TOKENS = 200
"""The most tokens one utterance decodes (Whisper's decoder holds 448 positions, prompt included)."""
VAL_BATCH = 16
"""Utterances per validation/decoding batch."""
LORA_TARGETS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
                "encoder_attn.q_proj", "encoder_attn.k_proj", "encoder_attn.v_proj", "encoder_attn.out_proj")
"""LoRA's default targets for speech recognition: every attention projection of the encoder and
decoder blocks (the feed-forward layers stay frozen)."""


@dataclass(frozen=True, eq=False)
class SpeechSet:
    """Utterances: audio file paths with their transcripts (None for transcription inputs)."""

    audio: list[str]
    transcripts: list[str] | None
    source: str
    origin: list[str] = field(default_factory=list)
    columns: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.audio)

    @cached_property
    def fingerprint(self) -> str:
        """sha256 over each clip's bytes and its transcript, in order."""
        h = hashlib.sha256(b"asr")
        for i, path in enumerate(self.audio):
            digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            text = self.transcripts[i] if self.transcripts is not None else ""
            h.update(f"{digest}\t{text}\n".encode())
        return h.hexdigest()

    def subset(self, index: list[int]) -> SpeechSet:
        return SpeechSet(audio=[self.audio[i] for i in index],
                         transcripts=None if self.transcripts is None else [self.transcripts[i] for i in index],
                         source=self.source, origin=[self.origin[i] for i in index] if self.origin else [],
                         columns=self.columns)


def load_speech(path, *, audio_col: str | None = None, transcript_col: str | None = None, fmt: str | None = None,
                header: bool | None = None, transcripts_required: bool = True) -> SpeechSet:
    """(audio, transcript) rows of a table, checked: every path an existing audio file, every
    transcript non-empty; a one-line BadInput naming the file and row otherwise."""
    from ..data.readers import _audio_column, _by_name, audio_paths, is_audio_column, is_blank, read_table
    from ..errors import BadInput

    p = Path(path).expanduser()
    if not p.exists():
        raise BadInput(f"{p}: no such file; give a table (CSV/TSV/JSONL/Parquet) of audio paths and transcripts")
    if p.is_dir():
        raise BadInput(f"{p} is a folder: speech recognition reads a table with an audio-path column and a transcript "
                       "column (CSV/TSV/JSONL/Parquet)")
    columns, origin = read_table(p, fmt=fmt, header=header, names=(audio_col, transcript_col))
    names = list(columns)
    for opt, col in (("--text-col", audio_col), ("--label-col", transcript_col)):
        if col is not None and col not in columns:
            raise BadInput(f"{p}: {opt} {col!r} is not a column; columns are {', '.join(map(repr, names))}")
    audio = audio_col or _audio_column(columns, exclude=transcript_col)
    if audio is None or not is_audio_column(columns[audio]):
        what = f"column {audio!r} does not hold only audio file paths" if audio else "no column of audio file paths"
        raise BadInput(f"{p}: {what} (.wav, .flac, .ogg, .mp3); name the audio column with --text-col")
    text = transcript_col or _by_name(names, TRANSCRIPT_NAMES, exclude=audio)
    if text is None and transcripts_required:
        others = [n for n in names if n != audio]
        text = others[0] if len(others) == 1 else None
    if text is None and transcripts_required:
        raise BadInput(f"{p}: no transcript column among {', '.join(map(repr, names))} (named like "
                       f"{', '.join(TRANSCRIPT_NAMES[:3])}, ...); name it with --label-col")
    transcripts = None
    if text is not None:
        values = columns[text]
        bad = [i for i, v in enumerate(values) if is_blank(v)]
        if bad and transcripts_required:
            raise BadInput(f"{origin[bad[0]]}: empty transcript in column {text!r}"
                           + (f" ({len(bad)} rows in all)" if len(bad) > 1 else "")
                           + "; transcribe or remove those rows")
        transcripts = None if bad else [" ".join(str(v).split()) for v in values]
    cols = {"audio": audio, **({"transcript": text} if transcripts is not None else {})}
    return SpeechSet(audio=audio_paths(p, columns[audio], origin, audio), transcripts=transcripts, source=str(p),
                     origin=origin, columns=cols)


class SpeechToTextModel(nn.Module):
    """Whisper as the task trains it: ``forward`` maps a batch (mel features, decoder inputs) to
    the decoder's logits (B, L, vocab). ``.body`` is the whole encoder-decoder."""

    def __init__(self, backbone):
        super().__init__()
        self.body = backbone.module
        self._backbone = [backbone]

    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        from ..backbones.speech import encode

        return encode(self.body.model.encoder, batch["input_features"])

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return decoder_logits(self.body, self.encode(batch), batch)


def decoder_logits(body: nn.Module, states: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The decoder's logits (B, L, vocab) of a Whisper ``body`` for encoder ``states`` and the
    batch's decoder inputs (teacher forcing)."""
    from transformers.modeling_outputs import BaseModelOutput

    return body(encoder_outputs=BaseModelOutput(last_hidden_state=states), decoder_input_ids=batch["decoder_input_ids"],
                decoder_attention_mask=batch["decoder_attention_mask"], use_cache=False).logits


@dataclass(frozen=True)
class Prompt:
    """Whisper's decoder prompt and the ids decoding treats specially."""

    ids: tuple[int, ...]
    eot: int
    suppress: tuple[int, ...]
    begin_suppress: tuple[int, ...]
    language: str | None


def prompt_for(backbone, language: str | None = "en") -> Prompt:
    """The prompt ``<|startoftranscript|>[<|lang|><|transcribe|>]<|notimestamps|>`` for the
    backbone's tokenizer (language and task tokens only for a multilingual model)."""
    from ..errors import BadInput

    tok = backbone.tokenizer_
    gen = backbone.module.generation_config
    vocab = tok.get_vocab()

    def tid(token: str) -> int:
        if token not in vocab:
            raise BadInput(f"backbone {backbone.spec.name!r}: its tokenizer lacks Whisper's {token} token; use a Whisper "
                           "tokenizer (tokenizer.json from the same model)")
        return int(vocab[token])

    multilingual = bool(getattr(gen, "is_multilingual", False)) or "<|fr|>" in vocab and "<|transcribe|>" in vocab \
        and backbone.module.config.vocab_size >= 51865
    if not multilingual and language not in (None, "en"):
        raise BadInput(f"backbone {backbone.spec.name!r} is English-only; --language {language} needs a multilingual Whisper "
                       "(whisper-base, hf:openai/whisper-small, ...)")
    ids = [tid("<|startoftranscript|>")]
    if multilingual:
        lang = language or "en"
        if f"<|{lang}|>" not in vocab:
            raise BadInput(f"backbone {backbone.spec.name!r} has no language token <|{lang}|>; give one of Whisper's "
                           "language codes (en, de, fr, es, zh, ...)")
        ids += [tid(f"<|{lang}|>"), tid("<|transcribe|>")]
    ids.append(tid("<|notimestamps|>"))
    eot = tid("<|endoftext|>")
    specials = tuple(range(eot + 1, backbone.module.config.vocab_size))
    suppress = tuple(sorted(set(int(t) for t in (getattr(gen, "suppress_tokens", None) or [])) | set(specials)))
    begin = tuple(int(t) for t in (getattr(gen, "begin_suppress_tokens", None) or [eot]))
    return Prompt(ids=tuple(ids), eot=eot, suppress=suppress, begin_suppress=begin,
                  language=(language or "en") if multilingual else None)


@torch.inference_mode()
def decode(model: SpeechToTextModel, batch: dict[str, torch.Tensor], prompt: Prompt, *, max_new_tokens: int = MAX_NEW_TOKENS,
           beams: int = 1) -> list[list[int]]:
    """Token ids of each utterance's transcript (prompt and end token excluded): greedy
    (``beams=1``) or beam search (``beams`` hypotheses, the highest mean log-probability per token
    wins, as transformers' length penalty 1.0 does), with the decoder's key/value cache."""
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache
    from transformers.modeling_outputs import BaseModelOutput

    body = model.body
    device = batch["input_features"].device
    states = model.encode(batch)
    n = states.shape[0]
    limit = min(max_new_tokens, body.config.max_target_positions - len(prompt.ids))
    suppress = torch.tensor(prompt.suppress, dtype=torch.long, device=device)
    begin = torch.tensor(prompt.begin_suppress, dtype=torch.long, device=device)
    if beams > 1:
        states = states.repeat_interleave(beams, dim=0)
    rows = states.shape[0]
    ids = torch.tensor([list(prompt.ids)] * rows, dtype=torch.long, device=device)
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    enc = BaseModelOutput(last_hidden_state=states)
    out_tokens: list[list[int]] = [[] for _ in range(rows)]
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    scores = torch.zeros(rows, dtype=torch.float32, device=device)
    if beams > 1:  # only the first copy of each utterance starts alive, so the beams do not repeat
        scores.view(n, beams)[:, 1:] = float("-inf")
    step_input = ids
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(n)]
    cache_arg = _cache_argument(body)
    for step in range(limit):
        logits = body(encoder_outputs=enc, decoder_input_ids=step_input, use_cache=True, **{cache_arg: cache}).logits[:, -1]
        logits = logits.float()
        logits[:, suppress] = float("-inf")
        if step == 0:
            logits[:, begin] = float("-inf")
        if beams == 1:
            nxt = logits.argmax(-1)
            for r in range(rows):
                if not done[r]:
                    if int(nxt[r]) == prompt.eot:
                        done[r] = True
                    else:
                        out_tokens[r].append(int(nxt[r]))
            if bool(done.all()):
                break
            step_input = nxt.masked_fill(done, prompt.eot).unsqueeze(1)
            continue
        logp = torch.log_softmax(logits, dim=-1)  # (n * beams, V)
        total = (scores.unsqueeze(1) + logp).view(n, -1)  # (n, beams * V)
        top, flat = total.topk(2 * beams, dim=-1)
        vocab = logp.shape[1]
        new_rows, new_tokens, new_scores, new_hyps = [], [], [], []
        for u in range(n):
            kept = 0
            for value, f in zip(top[u].tolist(), flat[u].tolist()):
                if kept == beams or value == float("-inf"):
                    break
                src, token = u * beams + f // vocab, f % vocab
                if token == prompt.eot:
                    hyp = out_tokens[src]
                    finished[u].append((value / (len(hyp) + 1), list(hyp)))
                    continue
                new_rows.append(src)
                new_tokens.append(token)
                new_scores.append(value)
                new_hyps.append(out_tokens[src] + [token])
                kept += 1
            while kept < beams:  # every continuation ended: pad with dead rows
                new_rows.append(u * beams)
                new_tokens.append(prompt.eot)
                new_scores.append(float("-inf"))
                new_hyps.append(list(out_tokens[u * beams]))
                kept += 1
        best_open = [max(new_scores[u * beams:(u + 1) * beams]) for u in range(n)]
        if all(finished[u] and max(s for s, _ in finished[u]) * 1.0 >= best_open[u] / (len(new_hyps[u * beams]) + 1)
               for u in range(n)) or all(b == float("-inf") for b in best_open):
            break
        index = torch.tensor(new_rows, dtype=torch.long, device=device)
        cache.reorder_cache(index)
        scores = torch.tensor(new_scores, dtype=torch.float32, device=device)
        out_tokens = new_hyps
        step_input = torch.tensor(new_tokens, dtype=torch.long, device=device).unsqueeze(1)
    if beams == 1:
        return out_tokens
    results = []
    for u in range(n):
        pool = finished[u] + [(float(scores[u * beams + b]) / (len(out_tokens[u * beams + b]) + 1), out_tokens[u * beams + b])
                              for b in range(beams) if float(scores[u * beams + b]) != float("-inf")]
        results.append(max(pool, key=lambda t: t[0])[1] if pool else [])
    return results


def _cache_argument(body: nn.Module) -> str:
    """The forward's name for the key/value cache: ``cache`` (transformers >= 5.2x) or ``past_key_values``."""
    import inspect

    return "cache" if "cache" in inspect.signature(body.forward).parameters else "past_key_values"


class SpeechRecognition(Task):
    name: ClassVar[str] = "asr"
    primary: ClassVar[MetricSpec] = MetricSpec("wer", higher_is_better=False, bounds=(0.0, float("inf")))
    metrics: ClassVar[tuple[MetricSpec, ...]] = (primary, MetricSpec("cer", higher_is_better=False, bounds=(0.0, float("inf"))))
    has_head: ClassVar[bool] = False
    predicts: ClassVar[bool] = False
    shown: ClassVar[dict[str, str]] = {"wer": "WER", "cer": "CER"}
    compared: ClassVar[tuple[str, str]] = ("wer", "cer")
    unit: ClassVar[str] = "utterances"
    takes_language: ClassVar[bool] = True

    def default_backbone(self, data) -> str:
        return "whisper-tiny.en"

    def default_method(self, backbone: str) -> str:
        return "lora"

    def describe_data(self, manifest: dict) -> str:
        split = manifest["data"]["split"]
        return f"{split['train']} train / {split['val']} validation / {split['test']} test utterances"

    # -- data ------------------------------------------------------------------------------------
    def read(self, recipe) -> TaskData:
        full = _load(recipe.data, recipe)
        n = len(full)
        *parts, test_fraction = seeded_split(n, recipe, full.source, "utterances")
        train, val, test = (full.subset(p) for p in parts)
        if recipe.test is not None:
            test = _load(recipe.test, recipe)
        return TaskData(
            train=train, val=val, test=test, modality="audio",
            train_record={"source": full.source, "fingerprint": full.fingerprint, "examples": n, "columns": full.columns,
                          "kind": "transcribed audio"},
            test_record={"source": test.source if recipe.test is not None else "held out from train",
                         "fingerprint": test.fingerprint, "examples": len(test)},
            split_record={"val_fraction": recipe.val_fraction, "test_fraction": test_fraction, "seed": recipe.seed_of_split,
                          "by": "utterance", "train": len(train), "val": len(val), "test": len(test)},
            separate_test=recipe.test is not None, info={"language": recipe.language},
        )

    def context(self, data: TaskData) -> dict:
        return {"language": data.info.get("language")}

    def read_eval(self, run, data, *, text_col=None, header=None):
        from ..errors import BadInput
        from ..recipe import Recipe

        if not isinstance(data, (str, Path)):
            raise BadInput("evaluating a speech-recognition run takes a table of audio paths and transcripts")
        cols = run.manifest["data"]["train"].get("columns", {})
        ds = _load(data, Recipe(data=str(data), text_col=text_col or None, header=header), hint=cols)
        return ds, ds.source, ds.fingerprint

    # -- scoring ---------------------------------------------------------------------------------
    def score(self, method, backbone, test, ctx, *, n_resamples: int = 1000, intervals: bool = True, seed: int = 0) -> Scored:
        from ..evaluate.speech import NORMALIZER_VERSION, utterance_errors

        model = method.task_model(backbone, ctx)
        hypotheses = transcribe(model, test.audio, language=_language(ctx), origins=test.origin)
        records = []
        for i, (path, ref, hyp) in enumerate(zip(test.audio, test.transcripts, hypotheses, strict=True)):
            e = utterance_errors(ref, hyp)
            records.append({"audio": path, "reference": ref, "hypothesis": hyp, "wer": round(float(e["wer"]), 6),
                            "cer": round(float(e["cer"]), 6), "word_errors": int(e["wer_errors"]),
                            "words": int(e["wer_words"]), "char_errors": int(e["cer_errors"]), "chars": int(e["cer_chars"])})
        summary: dict[str, Any] = {}
        for metric, errors, length in (("wer", "word_errors", "words"), ("cer", "char_errors", "chars")):
            value, low, high = _rate_interval(np.array([r[errors] for r in records]), np.array([r[length] for r in records]),
                                              n_resamples, seed)
            summary[metric] = round(value, 6)
            summary[f"{metric}_ci"] = [round(low, 6), round(high, 6)]
        summary.update(utterances=len(records), normalizer=NORMALIZER_VERSION, ci_level=0.95, ci_resamples=n_resamples)
        prompt = prompt_for(model._backbone[0], _language(ctx))
        summary["encoder_input"] = model._backbone[0].encoder_input
        detail = {**summary, "language": prompt.language, "decoding": "greedy"}
        return Scored(summary=summary, detail=detail, records=records)

    def run_values(self, run_path, manifest):
        """(reference lengths, errors, error-rate statistic) per metric, from ``predictions.csv``."""
        import csv

        from ..evaluate.speech import ErrorRate

        cols = {"wer": ("words", "word_errors"), "cer": ("chars", "char_errors")}
        values: dict[str, tuple[list[float], list[float]]] = {m: ([], []) for m in cols}
        try:
            with open(Path(run_path) / "predictions.csv", newline="", encoding="utf-8") as f:
                for rec in csv.DictReader(f):
                    for m, (length, errors) in cols.items():
                        values[m][0].append(float(rec[length]))
                        values[m][1].append(float(rec[errors]))
        except (OSError, KeyError, ValueError):
            return None
        if not values["wer"][0]:
            return None
        return {m: (np.array(lengths), np.array(errors), ErrorRate()) for m, (lengths, errors) in values.items()}

    def suite_cells(self, run, path, metrics, *, n_resamples: int, seed: int):
        """A table of audio paths and transcripts transcribed by the run; corpus WER/CER with
        intervals over its utterances."""
        data, source, fingerprint = self.read_eval(run, path)
        method, bb = run.open_model()
        scored = self.score(method, bb, data, run.fit_context(), n_resamples=n_resamples, seed=seed)
        cells = {m: {"value": scored.summary[m], "ci": scored.summary[f"{m}_ci"], "n": len(data)} for m in metrics}
        return cells, source, fingerprint

    # -- trained methods -------------------------------------------------------------------------
    def preset(self, method: str, train) -> tuple[str, dict]:
        from .base import sized_preset

        return sized_preset("speech-recognition", method, len(train), PRESETS, _COMMON)

    def build_model(self, backbone, cfg, ctx) -> nn.Module:
        """The encoder-decoder. Under ``encoder_input="auto"`` a LoRA/DoRA model reads the clips'
        own frames and every other model 30 s windows: measured on FSDD (benchmarks/README.md
        "Speech"), LoRA reading clips reached WER 0.03 with 9.9x the training throughput, while full
        fine-tuning at its preset (12 steps, lr 1e-5) kept zero-shot Whisper's looping on clips
        (WER 14) and reached 0.08 on 30 s windows; the frozen model (``cfg`` None) loops too."""
        from ..methods.lora import LoRAConfig

        backbone.adapted_ = type(cfg) is LoRAConfig
        return SpeechToTextModel(backbone)

    def training(self, model, train, val, cfg, ctx) -> Training:
        bb = model._backbone[0]
        prompt = prompt_for(bb, _language(ctx))
        clips = bb.prepare(list(train.audio), origins=train.origin or None)
        labels = _label_ids(bb, prompt, train)
        lengths = [bb.cost(c) + len(ids) for c, ids in zip(clips, labels, strict=True)]

        def collate(idx: list[int]) -> dict[str, torch.Tensor]:
            return _collate(bb, [clips[i] for i in idx], [labels[i] for i in idx], prompt)

        def loss(logits: torch.Tensor, idx: list[int]) -> torch.Tensor:
            return _token_loss(logits, [labels[i] for i in idx], prompt)

        val_clips = bb.prepare(list(val.audio), origins=val.origin or None)
        val_labels = _label_ids(bb, prompt, val)
        order = sorted(range(len(val_clips)), key=lambda i: -val_clips[i].frames)
        val_batches = [order[s:s + VAL_BATCH] for s in range(0, len(order), VAL_BATCH)]
        max_new = min(MAX_NEW_TOKENS, 2 * max(len(x) for x in val_labels) + 8)

        def evaluate(m: nn.Module) -> dict[str, float]:
            from ..evaluate.speech import utterance_errors

            errors = words = 0
            loss_sum = 0.0
            for idx in val_batches:
                batch = {k: v.to(bb.device) for k, v in _collate(bb, [val_clips[i] for i in idx],
                                                               [val_labels[i] for i in idx], prompt).items()}
                loss_sum += float(_token_loss(m(batch), [val_labels[i] for i in idx], prompt).sum())
                for i, tokens in zip(idx, decode(m, batch, prompt, max_new_tokens=max_new), strict=True):
                    e = utterance_errors(val.transcripts[i], bb.tokenizer_.decode(tokens, skip_special_tokens=True))
                    errors += e["wer_errors"]
                    words += e["wer_words"]
            return {"wer": errors / max(1, words), "loss": loss_sum / max(1, len(val_clips))}

        objective = Objective(loss=loss, evaluate=evaluate, metric=self.primary, val_examples=len(val_clips))
        return Training(lengths=lengths, collate=collate, objective=objective)

    def transcribe_files(self, method, backbone, paths: list, ctx, *, beams: int = 1) -> list[str]:
        """The task's verb (``Run.transcribe``, ``headstart transcribe``): transcripts of audio files."""
        from ..errors import BadInput

        if not paths:
            raise BadInput("nothing to transcribe: give at least one audio file")
        if not isinstance(beams, int) or isinstance(beams, bool) or not 1 <= beams <= 16:
            raise BadInput(f"beams must be an integer from 1 (greedy) to 16 (got {beams!r})")
        return transcribe(method.task_model(backbone, ctx), [str(p) for p in paths], language=_language(ctx), beams=beams)

    def verbs(self, modality: str) -> tuple:
        from .verbs import Param, Verb

        return (Verb("transcribe", "the transcript of each audio file (base64-encoded WAV, FLAC, OGG or MP3)", item="audio",
                     field="audio", call=_transcribe_verb, needs=("transcribe",), result="transcripts", max_batch=8,
                     params=(Param("beams", int, 1, "1: greedy; more: beam search", ge=1, le=16),)),)

    def export(self, run, out, *, merge: bool = False) -> dict:
        from ..export_speech import export_whisper

        return export_whisper(run, out)


def transcribe(model: SpeechToTextModel, audio: list[str], *, language: str | None = "en", beams: int = 1,
               origins: list[str] | None = None, desc: str = "transcribing") -> list[str]:
    """Transcripts of audio files with a (possibly adapted) Whisper model, in input order; clips of
    similar length are decoded together."""
    from .._util import progress

    bb = model._backbone[0]
    model.eval()
    prompt = prompt_for(bb, language)
    clips = bb.prepare(list(audio), origins=origins)
    order = sorted(range(len(clips)), key=lambda i: -clips[i].frames)
    out: list[str] = [""] * len(clips)
    with progress(len(clips), desc, unit="clip") as bar:
        for s in range(0, len(order), VAL_BATCH):
            idx = order[s:s + VAL_BATCH]
            batch = {k: v.to(bb.device) for k, v in bb.collate([clips[i] for i in idx]).items()}
            for i, tokens in zip(idx, decode(model, batch, prompt, beams=beams), strict=True):
                out[i] = bb.tokenizer_.decode(tokens, skip_special_tokens=True).strip()
            bar.update(len(idx))
    return out


def _language(ctx) -> str | None:
    return ctx.language or "en"


def _load(path, recipe, hint: dict | None = None) -> SpeechSet:
    hint = hint or {}
    return load_speech(path, audio_col=recipe.text_col or hint.get("audio"), transcript_col=recipe.label_col or
                       hint.get("transcript"), fmt=recipe.fmt, header=recipe.header)


def _label_ids(bb, prompt: Prompt, data: SpeechSet) -> list[list[int]]:
    """Prompt + transcript tokens + end token of every utterance; an over-long one is refused."""
    from ..errors import BadInput

    limit = bb.module.config.max_target_positions
    out = []
    for i, text in enumerate(data.transcripts):
        ids = list(prompt.ids) + bb.tokenizer_(" " + text.strip(), add_special_tokens=False)["input_ids"] + [prompt.eot]
        if len(ids) > limit:
            where = data.origin[i] if data.origin else data.source
            raise BadInput(f"{where}: the transcript is {len(ids)} tokens with Whisper's prompt, more than the decoder's "
                           f"{limit}; split the utterance or shorten the transcript")
        out.append(ids)
    return out


def _collate(bb, clips, labels: list[list[int]], prompt: Prompt) -> dict[str, torch.Tensor]:
    """Mel features + decoder inputs (each label sequence without its last token), padded with the
    end token; ``decoder_attention_mask`` marks the real positions."""
    batch = bb.collate(clips)
    width = max(len(x) for x in labels) - 1
    ids = torch.full((len(labels), width), prompt.eot, dtype=torch.long)
    mask = torch.zeros((len(labels), width), dtype=torch.long)
    for r, seq in enumerate(labels):
        ids[r, : len(seq) - 1] = torch.tensor(seq[:-1], dtype=torch.long)
        mask[r, : len(seq) - 1] = 1
    batch["decoder_input_ids"] = ids
    batch["decoder_attention_mask"] = mask
    return batch


def _token_loss(logits: torch.Tensor, labels: list[list[int]], prompt: Prompt) -> torch.Tensor:
    """Per-utterance mean cross-entropy over the transcript tokens and the end token (the prompt's
    own tokens are not predicted)."""
    n, width, _ = logits.shape
    target = torch.full((n, width), -100, dtype=torch.long, device=logits.device)
    skip = len(prompt.ids) - 1  # positions whose next token is still the prompt
    for r, seq in enumerate(labels):
        target[r, skip : len(seq) - 1] = torch.tensor(seq[skip + 1:], dtype=torch.long, device=logits.device)
    per_token = nn.functional.cross_entropy(logits.float().transpose(1, 2), target, reduction="none", ignore_index=-100)
    counts = (target != -100).sum(1).clamp(min=1)
    return per_token.sum(1) / counts


def _rate_interval(errors: np.ndarray, lengths: np.ndarray, n_resamples: int, seed: int = 0) -> tuple[float, float, float]:
    from ..evaluate.bootstrap import bootstrap_ci
    from ..evaluate.speech import ErrorRate

    value, low, high = bootstrap_ci(lengths, errors, ErrorRate(), n_resamples=n_resamples, seed=seed)
    return float(value), float(low), float(high)


_COMMON = {
    "few": {"epochs": 4.0, "batch_size": 8, "patience": 3, "eval_every": 1.0},
    "medium": {"epochs": 2.0, "batch_size": 16, "patience": 3, "eval_every": 0.5},
    "large": {"epochs": 1.0, "batch_size": 16, "patience": 2, "eval_every": 0.25},
}
_LORA = {"lr": 1e-3, "rank": 16, "alpha": 32.0, "lora_dropout": 0.05, "targets": list(LORA_TARGETS)}
PRESETS: dict[str, dict] = {
    "lora": _LORA,
    "dora": _LORA,
    "qlora": _LORA,
    "finetune": {"lr": 1e-5},
    "adapter": {"lr": 1e-3, "bottleneck": 64},
    "scratch": {"lr": 5e-4},
}


__all__ = ["Prompt", "SpeechRecognition", "SpeechSet", "SpeechToTextModel", "decode", "load_speech", "prompt_for",
           "transcribe"]


def _transcribe_verb(served, items: list, params: dict) -> list[dict]:
    """``POST /v1/transcribe``: ``{"text"}`` per audio file."""
    from .verbs import decoded_files

    with decoded_files(items, "audio") as paths:
        return [{"text": t} for t in served.transcribe(paths, beams=params["beams"])]
