"""Speech (issue 14): Whisper on spoken digits (FSDD), headstart against transformers' own
Seq2SeqTrainer recipe on equal terms, zero-shot baselines, and a digit-classification probe.

Data: the Free Spoken Digit Dataset (``shared/data/fsdd/recordings/{digit}_{speaker}_{idx}.wav``,
8 kHz, read and resampled to 16 kHz by ``headstart.data.audio.read_audio`` for both tools). The
official split: idx 0-4 is the test set (300 clips), the rest training. A seeded subset (seed 0,
``random.Random(0).shuffle``) of ``--train`` training clips plus 12 validation clips (headstart splits
them off itself with ``val_fraction = 12 / (train + 12)``), and ``--test-clips`` of the test clips.
Transcripts are the digit words ("zero" ... "nine").

1. Zero-shot: ``hs.adapt(..., task="asr", method="frozen")`` of whisper-tiny.en and whisper-base
   (the frozen model reads 30 s windows).
2. headstart: ``hs.adapt(..., task="asr", backbone="whisper-tiny.en", method="lora" | "finetune")``
   with the task's presets (LoRA r16 / alpha 32 / dropout 0.05 on every attention projection of
   encoder and decoder, lr 1e-3; finetune lr 1e-5), warmup ratio 0.06 (1 step of 12), weight decay
   0.01, gradient clipping 1.0, batch 8, 1 epoch, fp32, seed 0. LoRA in both encoder-input modes:
   ``auto`` (a trained model reads each clip's own frames) and ``30s`` (a catalog copy
   ``whisper-tiny.en-30s`` registered in the child process).
3. Peer: the Hugging Face Whisper fine-tuning guide ("Fine-Tune Whisper For Multilingual ASR with
   Transformers"): ``WhisperProcessor`` (the feature extractor pads every clip to 30 s; features
   computed before training, as the guide's ``dataset.map`` does), ``labels = tokenizer(text).input_ids``,
   the guide's ``DataCollatorSpeechSeq2SeqWithPadding`` (labels padded with -100, the leading
   start token stripped when every row has it), ``Seq2SeqTrainer`` with
   ``Seq2SeqTrainingArguments(use_cpu=True, predict_with_generate=False, ...)``, ``max_steps`` =
   headstart's step count, the same batch, lr, warmup steps, weight decay, clipping and seed; LoRA
   is ``peft.get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
   target_modules=[the same 8 projection names]))`` (trainable counts of both sides printed).
   Test transcripts: greedy ``model.generate(input_features, max_new_tokens=20)`` in batches of 16.
   Both tools are scored by ``headstart.evaluate.speech.utterance_errors`` (corpus WER = sum of
   word errors / sum of reference words; CER likewise).
4. Audio classification: ``hs.adapt(csv(file,label), backbone="whisper-tiny.en",
   method="linear-probe", test=...)`` with label = digit, on ``--probe-train`` training clips
   (headstart splits its validation off them); accuracy on the same test clips.

Throughput is training examples per second of training only: headstart's ``train_s`` minus its
validation passes (timed at ``Trainer.evaluate``; its own ``examples_per_s`` includes them and is
printed too), the peer's ``trainer.train()`` wall time. Peak RSS is sampled every 10 ms during
training (each run in its own fresh child process).

    python benchmarks/speech.py                 # everything, defaults (96+12 train, 100 test, 500 probe)
    python benchmarks/speech.py --quick         # 48+12 train, 30 test, 200 probe, no whisper-base, no peer finetune
    python benchmarks/speech.py --only zs-tiny,hs-lora-clip,peer-lora
    python benchmarks/speech.py --only peer-zs,hs-finetune-30s --json benchmarks/results/speech_extra.json

``peer-zs`` is a decoding check (transformers' ``generate`` on the untouched tiny.en, to compare with
headstart's frozen row); ``hs-finetune-30s`` is full fine-tuning at 30 s windows. Neither is in the default set.

Prints the tables and the issue's floors (PASS/FAIL); writes every measurement to
``benchmarks/results/speech*.json`` (after each child, so an interrupted run keeps what it measured).
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _measure import code_state, cpu_name  # noqa: E402
DATA = HERE.parents[1] / "shared" / "data" / "fsdd" / "recordings"
RESULTS = HERE / "results"

_THREADS = os.environ.get("SPEECH_BENCH_THREADS", "1")
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, _THREADS)
os.environ.setdefault("HEADSTART_PROGRESS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

WORDS = "zero one two three four five six seven eight nine".split()
VAL_CLIPS = 12
SEED = 0
RECIPE = {"batch_size": 8, "epochs": 1.0, "warmup_ratio": 0.06, "weight_decay": 0.01, "max_grad_norm": 1.0}
METHODS = {
    "lora": {"lr": 1e-3, "rank": 16, "alpha": 32.0, "lora_dropout": 0.05},
    "finetune": {"lr": 1e-5},
}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
"""PEFT target names: matched by suffix, these are exactly the self_attn and encoder_attn projections
of Whisper's encoder and decoder blocks (Whisper has no other module of these names)."""
GEN_BATCH = 16
PEER_MAX_NEW_TOKENS = 20
FLOOR_WER, FLOOR_SPEEDUP, FLOOR_WER_TOL, FLOOR_ACC = 0.05, 1.5, 0.01, 0.95
TINY30 = "whisper-tiny.en-30s"


# -- shared pieces ------------------------------------------------------------------------------------


def _threads() -> int:
    import torch

    n = int(_THREADS)
    torch.set_num_threads(n)
    return n


def split_files(n_train: int, n_test: int, n_probe: int) -> dict:
    """The official FSDD split (test = idx 0-4), shuffled with seed 0; the first clips of each."""
    files = sorted(glob.glob(str(DATA / "*.wav")))
    idx = lambda f: int(f.rsplit("_", 1)[1][:-4])  # noqa: E731
    test = [f for f in files if idx(f) <= 4]
    train = [f for f in files if idx(f) > 4]
    rng = random.Random(SEED)
    rng.shuffle(train)
    rng.shuffle(test)
    return {"train": train[: n_train + VAL_CLIPS], "test": test[:n_test], "probe": train[:n_probe],
            "pool": {"train": len(train), "test": len(test)}}


def digit(path: str) -> int:
    return int(os.path.basename(path)[0])


def write_tables(folder: Path, split: dict) -> dict:
    paths = {}
    for name, files, header in (("train", split["train"], "audio,transcript"), ("test", split["test"], "audio,transcript"),
                                ("probe_train", split["probe"], "file,label"), ("probe_test", split["test"], "file,label")):
        p = folder / f"{name}.csv"
        with open(p, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header.split(","))
            for x in files:
                w.writerow([x, WORDS[digit(x)] if header.startswith("audio") else str(digit(x))])
        paths[name] = str(p)
    return paths


def register_30s() -> None:
    import dataclasses

    from headstart.catalog import CATALOG, register

    if TINY30 not in CATALOG:
        base = CATALOG["whisper-tiny.en"]
        register(dataclasses.replace(base, name=TINY30,
                                     preprocessing=dataclasses.replace(base.preprocessing, encoder_input="30s")))


def corpus_rates(refs: list[str], hyps: list[str]) -> dict:
    from headstart.evaluate.speech import utterance_errors

    we = ww = ce = cc = 0
    for r, h in zip(refs, hyps, strict=True):
        e = utterance_errors(r, h)
        we += e["wer_errors"]
        ww += e["wer_words"]
        ce += e["cer_errors"]
        cc += e["cer_chars"]
    return {"wer": round(we / max(1, ww), 6), "cer": round(ce / max(1, cc), 6), "word_errors": we, "words": ww}


# -- children --------------------------------------------------------------------------------------------


def child_headstart(tables: dict, backbone: str, method: str, n_train: int) -> dict:
    sys.path.insert(0, str(HERE))
    from _measure import instrument_trainer

    threads = _threads()
    register_30s()
    evals, fit_measure = instrument_trainer()
    import headstart as hs

    options = {}
    if method != "frozen":
        options = {**RECIPE, **METHODS[method], "eval_every": RECIPE["epochs"], "patience": 100}
    with tempfile.TemporaryDirectory(prefix="bench-speech-") as tmp:
        t0 = time.perf_counter()
        run = hs.adapt(tables["train"], task="asr", backbone=backbone, method=method, test=tables["test"],
                       val_fraction=VAL_CLIPS / (n_train + VAL_CLIPS), out=Path(tmp) / "runs", store=Path(tmp) / "store.db",
                       method_options=options, seed=SEED, precision="fp32")
        wall = time.perf_counter() - t0
        manifest = run.manifest
        with open(run.path / "predictions.csv", newline="", encoding="utf-8") as f:
            preds = [{"audio": os.path.basename(r["audio"]), "reference": r["reference"], "hypothesis": r["hypothesis"]}
                     for r in csv.DictReader(f)]
    s = manifest["metrics"]["test"]["summary"]
    out = {"tool": "headstart", "backbone": backbone, "method": method, "threads": threads, "wall_s": round(wall, 2),
           "precision": manifest.get("precision", {}).get("used"), "split": manifest["data"]["split"],
           "wer": s["wer"], "wer_ci": s.get("wer_ci"), "cer": s["cer"], "cer_ci": s.get("cer_ci"),
           "utterances": s.get("utterances"), "encoder_input": s.get("encoder_input"),
           "rescored": corpus_rates([p["reference"] for p in preds], [p["hypothesis"] for p in preds]),
           "hypotheses_sample": preds[:10], "timings": manifest.get("timings"),
           "wrong": [p for p in preds if corpus_rates([p["reference"]], [p["hypothesis"]])["wer"] > 0][:20]}
    if method != "frozen":
        fit = manifest["method"]["fit"]
        m = fit_measure["m"]
        val_s = sum(evals)
        train_only = fit["train_s"] - val_s
        out.update({"options": manifest["method"].get("options", options), "steps": fit["steps"],
                    "best_step": fit.get("best_step"), "stopped_by": fit.get("stopped_by"), "history": fit.get("history"),
                    "examples_seen": fit["examples_seen"], "train_s_reported": fit["train_s"],
                    "examples_per_s_reported": fit["examples_per_s"], "val_passes": len(evals), "val_s": round(val_s, 2),
                    "train_only_s": round(train_only, 2), "examples_per_s": round(fit["examples_seen"] / train_only, 3),
                    "peak_rss_train_mb": round(m.peak_rss_mb, 1), "peak_extra_train_mb": round(m.peak_extra_mb, 1),
                    "trainable_params": fit.get("trainable_params")})
    return out


def child_peer(tables: dict, method: str, steps: int, n_train: int) -> dict:
    """The HF guide's recipe on headstart's training clips (headstart's own split, reproduced)."""
    sys.path.insert(0, str(HERE))
    from dataclasses import dataclass

    from _measure import measure

    threads = _threads()
    import torch
    from transformers import (PrinterCallback, Seq2SeqTrainer, Seq2SeqTrainingArguments, WhisperForConditionalGeneration,
                              WhisperProcessor)
    from transformers.utils import logging as hf_logging

    from headstart.backbones import open_backbone
    from headstart.data.audio import read_audio
    from headstart.recipe import Recipe
    from headstart.tasks import get_task

    hf_logging.set_verbosity_error()
    folder = open_backbone("whisper-tiny.en")[0].hf_folder()
    # headstart's split of the same table (the call hs.adapt makes): the peer trains on exactly its clips.
    td = get_task("asr").read(Recipe(data=tables["train"], task="asr", test=tables["test"], seed=SEED,
                                     val_fraction=VAL_CLIPS / (n_train + VAL_CLIPS)))
    train, test = td.train, td.test
    recipe = {**RECIPE, **METHODS[method]}
    warmup = int(round(recipe["warmup_ratio"] * steps))  # headstart's count (transformers would ceil a ratio)

    processor = WhisperProcessor.from_pretrained(folder)
    tok, fe = processor.tokenizer, processor.feature_extractor
    quirks = []
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
        quirks.append("tokenizer had no pad token: set to eos (<|endoftext|>)")
    model = WhisperForConditionalGeneration.from_pretrained(folder)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
        quirks.append("model.config.pad_token_id was None: set to the tokenizer's pad id")
    if getattr(model.generation_config, "forced_decoder_ids", None) is not None:
        model.generation_config.forced_decoder_ids = None  # as the guide does
    total_params = sum(p.numel() for p in model.parameters())
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=recipe["rank"], lora_alpha=recipe["alpha"],
                                                 lora_dropout=recipe["lora_dropout"], target_modules=LORA_TARGETS))
        targeted = sorted({n.split(".lora_A")[0].rsplit(".", 2)[-2] + "." + n.split(".lora_A")[0].rsplit(".", 1)[-1]
                           for n, _ in model.named_modules() if n.endswith(".lora_A")})
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    def samples(paths):
        return [read_audio(p, sample_rate=16000, max_seconds=30.0) for p in paths]

    t0 = time.perf_counter()
    rows = []
    for wav, text in zip(samples(train.audio), train.transcripts, strict=True):  # the guide's prepare_dataset
        rows.append({"input_features": fe(wav, sampling_rate=16000).input_features[0],
                     "labels": tok(text).input_ids})
    prep_s = time.perf_counter() - t0

    class ListDataset(torch.utils.data.Dataset):
        def __init__(self, r):
            self.r = r

        def __len__(self):
            return len(self.r)

        def __getitem__(self, i):
            return self.r[i]

    @dataclass
    class DataCollatorSpeechSeq2SeqWithPadding:  # the guide's collator, verbatim in substance
        processor: object
        decoder_start_token_id: int

        def __call__(self, features):
            input_features = [{"input_features": f["input_features"]} for f in features]
            batch = self.processor.feature_extractor.pad(input_features, return_tensors="pt")
            label_features = [{"input_ids": f["labels"]} for f in features]
            labels_batch = self.processor.tokenizer.pad(label_features, return_tensors="pt")
            labels = labels_batch["input_ids"].masked_fill(labels_batch.attention_mask.ne(1), -100)
            if (labels[:, 0] == self.decoder_start_token_id).all().cpu().item():
                labels = labels[:, 1:]
            batch["labels"] = labels
            return batch

    seen = [0]
    collator_inner = DataCollatorSpeechSeq2SeqWithPadding(processor, model.config.decoder_start_token_id
                                                          if method != "lora" else model.base_model.model.config.decoder_start_token_id)

    def collator(features):
        seen[0] += len(features)
        return collator_inner(features)

    if steps == 0:  # zero-shot check: the guide's generate on the untouched model
        refs, hyps, wrong = _peer_generate(model, fe, tok, test, samples)
        return {"tool": "peer (generate)", "method": "frozen", "threads": threads, "steps": 0, **corpus_rates(refs, hyps),
                "test_clips": len(test), "wrong": wrong[:20], "quirks": quirks}
    with tempfile.TemporaryDirectory(prefix="bench-speech-peer-") as tmp:
        args = Seq2SeqTrainingArguments(
            output_dir=tmp, per_device_train_batch_size=recipe["batch_size"], max_steps=steps, learning_rate=recipe["lr"],
            warmup_steps=warmup, lr_scheduler_type="linear", weight_decay=recipe["weight_decay"],
            max_grad_norm=recipe["max_grad_norm"], seed=SEED, use_cpu=True, predict_with_generate=False,
            eval_strategy="no", save_strategy="no", logging_strategy="no", report_to=[], dataloader_num_workers=0,
            disable_tqdm=True, remove_unused_columns=False, label_names=["labels"])
        trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=ListDataset(rows), data_collator=collator)
        trainer.remove_callback(PrinterCallback)
        with measure() as m:
            result = trainer.train()
    train_s = m.wall_s

    # Test: greedy generate on 30 s features, batches of 16, scored by headstart's code.
    model.eval()
    base = model.get_base_model() if method == "lora" else model
    hyps = []
    t0 = time.perf_counter()
    test_wavs = samples(test.audio)
    with torch.inference_mode():
        for s in range(0, len(test_wavs), GEN_BATCH):
            feats = fe(test_wavs[s:s + GEN_BATCH], sampling_rate=16000, return_tensors="pt").input_features
            ids = base.generate(input_features=feats, max_new_tokens=PEER_MAX_NEW_TOKENS)
            hyps += [h.strip() for h in tok.batch_decode(ids, skip_special_tokens=True)]
    test_s = time.perf_counter() - t0
    rates = corpus_rates(list(test.transcripts), hyps)
    wrong = [{"audio": os.path.basename(a), "reference": r, "hypothesis": h}
             for a, r, h in zip(test.audio, test.transcripts, hyps, strict=True) if corpus_rates([r], [h])["wer"] > 0]
    out = {"tool": "peer (Seq2SeqTrainer)", "method": method, "threads": threads, "steps": int(result.global_step),
           "warmup_steps": warmup, "examples_seen": seen[0], "train_only_s": round(train_s, 2),
           "examples_per_s": round(seen[0] / train_s, 3), "train_loss": round(float(result.training_loss), 4),
           "feature_prep_s": round(prep_s, 2), "peak_rss_train_mb": round(m.peak_rss_mb, 1),
           "peak_extra_train_mb": round(m.peak_extra_mb, 1), "trainable_params": trainable, "total_params": total_params,
           "train_clips": len(train), "test_clips": len(test), "test_s": round(test_s, 2), **rates,
           "hypotheses_sample": [{"audio": os.path.basename(a), "reference": r, "hypothesis": h}
                                 for a, r, h in list(zip(test.audio, test.transcripts, hyps))[:10]],
           "wrong": wrong[:20], "quirks": quirks, "label_example": tok.convert_ids_to_tokens(rows[0]["labels"])}
    if method == "lora":
        out["lora_targets"] = targeted
    return out


def _peer_generate(model, fe, tok, test, samples):
    import torch

    model.eval()
    hyps = []
    with torch.inference_mode():
        wavs = samples(test.audio)
        for s in range(0, len(wavs), GEN_BATCH):
            feats = fe(wavs[s:s + GEN_BATCH], sampling_rate=16000, return_tensors="pt").input_features
            ids = model.generate(input_features=feats, max_new_tokens=PEER_MAX_NEW_TOKENS)
            hyps += [h.strip() for h in tok.batch_decode(ids, skip_special_tokens=True)]
    refs = list(test.transcripts)
    wrong = [{"audio": os.path.basename(a), "reference": r, "hypothesis": h}
             for a, r, h in zip(test.audio, refs, hyps, strict=True) if corpus_rates([r], [h])["wer"] > 0]
    return refs, hyps, wrong


def child_probe(tables: dict) -> dict:
    sys.path.insert(0, str(HERE))
    threads = _threads()
    import headstart as hs

    with tempfile.TemporaryDirectory(prefix="bench-speech-probe-") as tmp:
        t0 = time.perf_counter()
        run = hs.adapt(tables["probe_train"], backbone="whisper-tiny.en", method="linear-probe", test=tables["probe_test"],
                       out=Path(tmp) / "runs", store=Path(tmp) / "store.db", seed=SEED, precision="fp32")
        wall = time.perf_counter() - t0
        manifest = run.manifest
    s = manifest["metrics"]["test"]["summary"]
    return {"tool": "headstart", "method": "linear-probe", "backbone": "whisper-tiny.en", "threads": threads,
            "wall_s": round(wall, 2), "accuracy": s.get("accuracy"), "accuracy_ci": s.get("accuracy_ci"),
            "macro_f1": s.get("macro_f1"), "split": manifest["data"]["split"], "timings": manifest.get("timings")}


# -- parent ------------------------------------------------------------------------------------------------


def spawn(args: list[str]) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}",
                "child_wall_s": round(time.perf_counter() - t0, 1)}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["child_wall_s"] = round(time.perf_counter() - t0, 1)
    print(f"  [{out['child_wall_s']:.0f} s]", file=sys.stderr, flush=True)
    return out


def f(v, spec=".4f"):
    return "n/a" if v is None else format(v, spec)


RUNS = {  # key: (description, child args builder)
    "zs-tiny": "zero-shot whisper-tiny.en (frozen, 30 s windows)",
    "zs-base": "zero-shot whisper-base (frozen, 30 s windows)",
    "hs-lora-clip": "headstart LoRA, encoder input auto (clip)",
    "hs-lora-30s": "headstart LoRA, encoder input 30s",
    "hs-finetune-clip": "headstart finetune, encoder input auto (clip)",
    "hs-finetune-30s": "headstart finetune, encoder input 30s",
    "peer-lora": "peer LoRA (Seq2SeqTrainer + PEFT, 30 s features)",
    "peer-finetune": "peer finetune (Seq2SeqTrainer, 30 s features)",
    "peer-zs": "zero-shot whisper-tiny.en, transformers generate (a decoding check)",
    "probe": "headstart linear probe, digit classification",
}
DEFAULT_RUNS = ["zs-tiny", "hs-lora-clip", "peer-lora", "hs-lora-30s", "hs-finetune-clip", "peer-finetune", "probe", "zs-base"]


def print_tables(res: dict) -> None:
    r = res["runs"]
    ok = lambda k: k in r and "error" not in r[k]  # noqa: E731
    print("\n## WER / CER on the FSDD test clips (corpus level; headstart's scoring for both tools)\n")
    print("| run | encoder input | steps | WER | WER 95% CI | CER | test clips |")
    print("|---|---|---|---|---|---|---|")
    for k in RUNS:
        if k == "probe" or k not in r:
            continue
        x = r[k]
        if "error" in x:
            print(f"| {RUNS[k]} | - | - | error: {x['error'][:80]} | | | |")
            continue
        ci = x.get("wer_ci")
        print(f"| {RUNS[k]} | {x.get('encoder_input', '30s')} | {x.get('steps', 0)} | {f(x['wer'])} | "
              f"{('[' + f(ci[0]) + ', ' + f(ci[1]) + ']') if ci else '-'} | {f(x['cer'])} | "
              f"{x.get('utterances', x.get('test_clips'))} |")
    print("\n## Training throughput and memory (training only)\n")
    print("| method | tool | encoder input | trainable params | steps | examples | training s | val passes inside (s) "
          "| examples/s | vs peer | as reported (incl. val) ex/s | peak RSS training (MB) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for method in METHODS:
        peer = r.get(f"peer-{method}") if ok(f"peer-{method}") else None
        for k in (f"peer-{method}", f"hs-{method}-clip", f"hs-{method}-30s"):
            if not ok(k):
                continue
            x = r[k]
            ratio = f"{x['examples_per_s'] / peer['examples_per_s']:.2f}x" if peer else "n/a"
            val = f"{x['val_passes']} ({x['val_s']:.1f})" if "val_s" in x else "-"
            print(f"| {method} | {'peer' if k.startswith('peer') else 'headstart'} | {x.get('encoder_input', '30s')} | "
                  f"{x.get('trainable_params')} | {x['steps']} | {x['examples_seen']} | {x['train_only_s']:.1f} | {val} | "
                  f"{x['examples_per_s']:.2f} | {ratio} | {f(x.get('examples_per_s_reported'), '.2f')} | "
                  f"{x['peak_rss_train_mb']:.0f} |")
    if ok("probe"):
        p = r["probe"]
        print("\n## Digit classification, linear probe on whisper-tiny.en features\n")
        print(f"accuracy {f(p['accuracy'])} (95% CI {p.get('accuracy_ci')}), macro-F1 {f(p.get('macro_f1'))}, "
              f"split {p['split']}, whole adapt {p['wall_s']:.0f} s")


def floors(res: dict) -> list[dict]:
    r = res["runs"]
    ok = lambda k: k in r and "error" not in r[k]  # noqa: E731
    out = []
    for k in ("hs-lora-clip", "hs-lora-30s", "hs-finetune-clip", "hs-finetune-30s"):
        if ok(k):
            out.append({"floor": f"{RUNS[k]}: adapted WER <= {FLOOR_WER}", "value": f"{r[k]['wer']:.4f}",
                        "pass": r[k]["wer"] <= FLOOR_WER})
    for method in METHODS:
        if not ok(f"peer-{method}"):
            continue
        p = r[f"peer-{method}"]
        for k in (f"hs-{method}-clip", f"hs-{method}-30s"):
            if not ok(k):
                continue
            h = r[k]
            ratio = h["examples_per_s"] / p["examples_per_s"]
            equal = abs(h["wer"] - p["wer"]) <= FLOOR_WER_TOL + 1e-9
            out.append({"floor": f"{RUNS[k]}: training ex/s >= {FLOOR_SPEEDUP}x the peer at equal WER (+-1 pt)",
                        "value": f"{ratio:.2f}x ({h['examples_per_s']:.2f} vs {p['examples_per_s']:.2f} ex/s); WER "
                                 f"{h['wer']:.4f} vs {p['wer']:.4f} ({'equal' if equal else 'NOT equal'} within 1 pt)",
                        "pass": ratio >= FLOOR_SPEEDUP and equal})
            out.append({"floor": f"{RUNS[k]}: trainable parameters equal the peer's",
                        "value": f"{h.get('trainable_params')} vs {p['trainable_params']}",
                        "pass": h.get("trainable_params") == p["trainable_params"]})
    if ok("probe"):
        out.append({"floor": f"digit classification by linear probe >= {FLOOR_ACC}", "value": f"{r['probe']['accuracy']:.4f}",
                    "pass": r["probe"]["accuracy"] >= FLOOR_ACC})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Runs: " + "; ".join(f"{k} = {v}" for k, v in RUNS.items())
                                 + f". Default: {','.join(DEFAULT_RUNS)}.")
    ap.add_argument("--train", type=int, default=96, help="training clips (plus 12 validation clips)")
    ap.add_argument("--test-clips", type=int, default=100, help="test clips of the 300 official ones")
    ap.add_argument("--probe-train", type=int, default=500, help="training clips for the linear probe (validation split off)")
    ap.add_argument("--only", default=None, help="comma-separated runs (see below); default all but hs-finetune-30s and peer-zs")
    ap.add_argument("--quick", action="store_true", help="48 train, 30 test, 200 probe clips; no whisper-base, no finetune")
    ap.add_argument("--threads", type=int, default=int(_THREADS), help="torch threads for every child (both tools)")
    ap.add_argument("--json", type=Path, default=None, help="default benchmarks/results/speech[_quick].json")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        kind, tables, rest = args.child[0], json.loads(args.child[1]), args.child[2:]
        if kind == "headstart":
            out = child_headstart(tables, rest[0], rest[1], int(rest[2]))
        elif kind == "peer":
            out = child_peer(tables, rest[0], int(rest[1]), int(rest[2]))
        else:
            out = child_probe(tables)
        print(json.dumps(out))
        return 0

    os.environ["SPEECH_BENCH_THREADS"] = str(args.threads)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    runs = DEFAULT_RUNS
    if args.quick:
        args.train, args.test_clips, args.probe_train = 48, 30, 200
        runs = ["zs-tiny", "hs-lora-clip", "peer-lora", "hs-lora-30s", "probe"]
    if args.only:
        runs = [k.strip() for k in args.only.split(",") if k.strip()]
        bad = [k for k in runs if k not in RUNS]
        if bad:
            raise SystemExit(f"unknown run {bad[0]!r}: choose from {', '.join(RUNS)}")
    if not DATA.exists():
        raise SystemExit(f"data not found: {DATA}")

    import platform

    import torch

    path = args.json or RESULTS / ("speech_quick.json" if args.quick else "speech.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-speech-data-"))
    split = split_files(args.train, args.test_clips, args.probe_train)
    tables = write_tables(work, split)
    tj = json.dumps(tables)
    res: dict = {"machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": args.threads, "torch": torch.__version__,
                             "python": platform.python_version(), "load_avg_start": os.getloadavg()},
                 "recipe": {**RECIPE, "methods": METHODS, "seed": SEED, "val_clips": VAL_CLIPS, "precision": "fp32",
                            "peer_lora_targets": LORA_TARGETS, "peer_max_new_tokens": PEER_MAX_NEW_TOKENS},
                 "data": {"train_clips": args.train, "val_clips": VAL_CLIPS, "test_clips": len(split["test"]),
                          "probe_clips": len(split["probe"]), "pool": split["pool"], "split": "official (idx 0-4 test)"},
                 "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "code": code_state(HERE.parent), "runs": {}}

    def save() -> None:
        path.write_text(json.dumps(res, indent=2) + "\n")

    t_start = time.perf_counter()
    steps = {}
    for k in runs:
        print(f"{k}: {RUNS[k]}", file=sys.stderr, flush=True)
        if k == "zs-tiny":
            out = spawn(["--child", "headstart", tj, "whisper-tiny.en", "frozen", str(args.train)])
        elif k == "zs-base":
            out = spawn(["--child", "headstart", tj, "whisper-base", "frozen", str(args.train)])
        elif k.startswith("hs-"):
            _, method, mode = k.split("-")
            out = spawn(["--child", "headstart", tj, "whisper-tiny.en" if mode == "clip" else TINY30, method, str(args.train)])
            if "steps" in out:
                steps[method] = out["steps"]
        elif k == "peer-zs":
            out = spawn(["--child", "peer", tj, "finetune", "0", str(args.train)])
        elif k.startswith("peer-"):
            method = k.split("-")[1]
            n = steps.get(method) or steps.get("lora") or -(-args.train // RECIPE["batch_size"])
            out = spawn(["--child", "peer", tj, method, str(n), str(args.train)])
        else:
            out = spawn(["--child", "probe", tj])
        res["runs"][k] = out
        save()
    res["wall_s"] = round(time.perf_counter() - t_start, 1)
    res["machine"]["load_avg_end"] = os.getloadavg()
    print_tables(res)
    res["floors"] = floors(res)
    print("\n## Floors\n")
    for fl in res["floors"]:
        print(f"- {'PASS' if fl['pass'] else 'FAIL'}: {fl['floor']}: {fl['value']}")
    print(f"\nwhole benchmark: {res['wall_s'] / 60:.1f} min, {args.threads} thread(s), load average at start "
          f"{res['machine']['load_avg_start'][0]:.2f}, at end {res['machine']['load_avg_end'][0]:.2f}")
    save()
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
