"""Generation (issue 15): SmolLM2-135M-Instruct adapted to Alpaca instructions, headstart's LoRA and
QLoRA against TRL's ``SFTTrainer`` + PEFT on equal terms, every model scored by one shared scorer.

Data. Training: ``shared/data/llamafactory_demo/data/alpaca_en_demo.json`` (1,000 Alpaca records).
The records whose output is at most ``--max-output-chars`` characters (short replies, so a step is
cheap), shuffled with ``random.Random(0)``; the first ``--train`` + ``--val`` of them are written to
one JSON file, and headstart splits the validation examples off itself (``val_fraction = val /
(train + val)``, its seeded split, by example). The peer trains on exactly headstart's training
examples: ``headstart.tasks.get_task("generation").read(Recipe(...))`` reproduces the split, and the
same conversations (user = instruction, plus a blank line and the input when there is one;
assistant = output: ``headstart.data.chat.load_chat``) become TRL's conversational prompt/completion
records (``prompt = [user turn]``, ``completion = [assistant turn]``). Held-out:
``shared/data/self_instruct/human_eval/user_oriented_instructions.jsonl`` (252 tasks; instruction +
``instances[0]`` input/output; the tasks whose instruction + input + output are at most
``--heldout-max-chars`` characters, so that none is truncated), ``random.Random(0).shuffle``, the first ``--heldout`` for loss and
perplexity, the first ``--rouge-prompts`` of those for greedy generation.

Model. ``smollm2-135m-instruct`` (the packaged GGUF, dequantised once by headstart into an HF
folder: ``open_backbone(...)[0].hf_folder()``); TRL loads that same folder, so both start from the
same weights, tokenizer and chat template (SmolLM2's template adds its default system prompt). fp32
on both sides, 1 torch thread.

Recipe (both tools): LoRA r 16, alpha 32, dropout 0 on q/k/v/o/gate/up/down_proj of every block
(headstart's generation defaults; PEFT ``target_modules`` = those 7 names, trainable counts of both
printed), AdamW, lr ``--lr`` (default 2e-4, headstart's preset), weight decay 0.01, clipping 1.0,
linear warmup of ``round(0.06 x steps)`` steps (headstart's count, given to TRL as ``warmup_steps``)
then linear decay to 0, batch ``--batch``, 1 epoch = ``train / batch`` steps (TRL: ``max_steps`` =
headstart's steps), ``max_length`` ``--max-length`` (longer examples truncated, keep-start, both),
seed 0, no packing. headstart: ``hs.adapt(train.json, task="generation", method="lora"|"qlora",
method_options={rank, alpha, lora_dropout, lr, batch_size, epochs 1, eval_every 1 epoch,
patience 100, ...}, task_options={max_length, max_new_tokens, samples 0}, precision="fp32",
test=<the ROUGE prompts>)``: it validates at step 0 and at the last step only; both passes are timed
at ``Trainer.evaluate`` and subtracted from its ``train_s``. QLoRA: headstart's NF4 base (bitsandbytes
``Linear4bit`` on the CPU, embeddings in NF4, double quantisation) with the same LoRA. TRL:
``SFTTrainer(model, args=SFTConfig(use_cpu=True, bf16=False, completion_only_loss=True,
max_length, packing=False, max_steps, per_device_train_batch_size, learning_rate,
lr_scheduler_type="linear", warmup_steps, weight_decay, max_grad_norm, seed, eval_strategy="no",
save_strategy="no", report_to=[], gradient_checkpointing=False), train_dataset, peft_config=
LoraConfig(...))``; training time is ``trainer.train()``'s wall time (it runs no evaluation).
``gradient_checkpointing`` is TRL's default True; it is set False for LoRA because headstart's LoRA
does not recompute activations (equal work per step; True would make TRL slower). The QLoRA pair
(``trl-qlora``: the same model loaded with ``BitsAndBytesConfig(load_in_4bit, nf4, double quant,
fp32 compute)``; ``hs-qlora``: headstart's qlora, whose generation preset recomputes activations)
both recompute, so they are compared like for like.

Throughput: tokens of the training examples (after templating and truncation, each seen once in
the one epoch) per second of training: ``total`` (every non-padding token) and ``supervised`` (reply
tokens, the ones the loss learns). The counts come from headstart's encoding; TRL's own tokenised
dataset is counted too and must agree (printed). Peak RSS: ``resource.getrusage`` max RSS of the
child's whole life, and the peak sampled every 10 ms during training alone (``_measure.measure``).

Shared scorer (``score()`` below, the same code for every model): headstart's
``Generation.encode_set`` (template, truncation at max_length) and ``_teacher_forced`` (summed NLL
of the reply tokens under teacher forcing, ``token_nll``) on the held-out examples; loss = total
NLL / reply tokens, perplexity = exp(loss); greedy ``generate_ids`` (``--max-new-tokens``) on the
ROUGE prompts, scored by ``headstart.evaluate.generation.rouge_l`` (mean over prompts). headstart's
models are the runs' own (``Run.open_model``); TRL's is its PEFT model merged
(``merge_and_unload``) and wrapped as headstart's ``CausalLMModel``; the base is the model as loaded.

    python benchmarks/generation.py            # 64 train + 8 val, batch 4 -> 16 steps; 24 held-out; 6 x 48 tokens
    python benchmarks/generation.py --quick    # 24 + 4, batch 4 -> 6 steps; 12 held-out; 4 x 32 tokens
    python benchmarks/generation.py --only base,hs-lora,trl-lora --train 128 --lr 1e-3

Prints the tables and the issue's floors (PASS/FAIL); writes ``benchmarks/results/generation*.json``
after every child.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _measure import code_state, cpu_name  # noqa: E402

SHARED = HERE.parents[1] / "shared" / "data"
TRAIN_DATA = SHARED / "llamafactory_demo" / "data" / "alpaca_en_demo.json"
HELDOUT_DATA = SHARED / "self_instruct" / "human_eval" / "user_oriented_instructions.jsonl"
RESULTS = HERE / "results"
BACKBONE = "smollm2-135m-instruct"

_THREADS = "1"
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = _THREADS
os.environ.setdefault("HEADSTART_PROGRESS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SEED = 0
LORA = {"rank": 16, "alpha": 32.0, "lora_dropout": 0.0}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
RECIPE = {"warmup_ratio": 0.06, "weight_decay": 0.01, "max_grad_norm": 1.0}
FLOOR_SPEEDUP, FLOOR_LOSS_TOL, FLOOR_RSS = 1.5, 0.02, 0.7

RUNS = {
    "base": "base model (smollm2-135m-instruct as loaded, no training)",
    "hs-lora": "headstart LoRA",
    "hs-qlora": "headstart QLoRA (NF4 base)",
    "trl-lora": "TRL SFTTrainer + PEFT LoRA",
    "trl-qlora": "TRL SFTTrainer + PEFT LoRA on a bitsandbytes NF4 base (QLoRA)",
}


# -- data ---------------------------------------------------------------------------------------------


def write_data(folder: Path, n_train: int, n_val: int, n_heldout: int, max_output_chars: int,
               heldout_max_chars: int) -> dict:
    records = [r for r in json.loads(TRAIN_DATA.read_text()) if len(r["output"]) <= max_output_chars]
    pool = len(records)
    random.Random(SEED).shuffle(records)
    train = records[: n_train + n_val]
    if len(train) < n_train + n_val:
        raise SystemExit(f"only {pool} records have outputs of <= {max_output_chars} characters")
    tasks = [json.loads(line) for line in HELDOUT_DATA.read_text().splitlines() if line.strip()]
    tasks = [t for t in tasks if len(t["instruction"]) + len(t["instances"][0].get("input", ""))
             + len(t["instances"][0]["output"]) <= heldout_max_chars]
    random.Random(SEED).shuffle(tasks)
    held = [{"instruction": t["instruction"], "input": t["instances"][0].get("input", ""),
             "output": t["instances"][0]["output"]} for t in tasks[:n_heldout]]
    paths = {"train": folder / "train.json", "heldout": folder / "heldout.json"}
    paths["train"].write_text(json.dumps(train, ensure_ascii=False))
    paths["heldout"].write_text(json.dumps(held, ensure_ascii=False))
    return {"paths": {k: str(v) for k, v in paths.items()}, "pool": pool, "heldout_pool": len(tasks)}


def rouge_file(cfg: dict) -> str:
    """The first ``rouge_prompts`` held-out examples, as their own file (headstart's ``test=``)."""
    p = Path(cfg["paths"]["heldout"]).with_name("rouge.json")
    if not p.exists():
        p.write_text(json.dumps(json.loads(Path(cfg["paths"]["heldout"]).read_text())[: cfg["rouge_prompts"]]))
    return str(p)


def headstart_split(cfg: dict):
    from headstart.recipe import Recipe
    from headstart.tasks import get_task

    return get_task("generation").read(Recipe(data=cfg["paths"]["train"], task="generation", test=rouge_file(cfg),
                                              seed=SEED, val_fraction=cfg["val"] / (cfg["train"] + cfg["val"]),
                                              task_options=task_options(cfg)))


def task_options(cfg: dict) -> dict:
    return {"max_length": cfg["max_length"], "max_new_tokens": cfg["max_new_tokens"], "samples": 0}


# -- the shared scorer ---------------------------------------------------------------------------------


def score(model, cfg: dict) -> dict:
    """Held-out loss / perplexity (teacher-forced reply tokens) and ROUGE-L of greedy generations,
    by headstart's own functions, for any model wrapped as ``CausalLMModel``."""
    import numpy as np

    from headstart.data.chat import load_chat
    from headstart.evaluate.generation import rouge_l
    from headstart.tasks.generation import Generation, GenerationOptions, _teacher_forced, generate_ids

    bb = model._backbone[0]
    opts = GenerationOptions(**task_options(cfg))
    held = load_chat(cfg["paths"]["heldout"])
    t0 = time.perf_counter()
    rows, counts = Generation().encode_set(bb, held, opts)
    if len(rows) != len(held):
        raise RuntimeError(f"held-out examples dropped by truncation: {counts}")
    nll, tokens = _teacher_forced(model, rows, bb)
    loss = float(nll.sum() / tokens.sum())
    t1 = time.perf_counter()
    k = cfg["rouge_prompts"]
    gens = generate_ids(model, [list(r.ids[: r.prompt_len]) for r in rows[:k]], max_new_tokens=cfg["max_new_tokens"])
    refs = held.references()[:k]
    rouges = [rouge_l(r, g) for r, g in zip(refs, gens, strict=True)]
    return {"heldout_examples": len(rows), "heldout_reply_tokens": int(tokens.sum()), "heldout_truncated": counts["truncated"],
            "loss": round(loss, 6), "perplexity": round(math.exp(loss), 4),
            "per_example_loss": [round(float(a / b), 4) for a, b in zip(nll, tokens, strict=True)],
            "rouge_l": round(float(np.mean(rouges)), 6), "rouge_l_each": [round(x, 4) for x in rouges],
            "generations": [{"reference": r[:300], "generation": g} for r, g in zip(refs, gens, strict=True)],
            "score_s": {"teacher_forced": round(t1 - t0, 1), "generate": round(time.perf_counter() - t1, 1)}}


def train_tokens(cfg: dict, bb) -> dict:
    """Token counts of headstart's training examples as templated and truncated (one epoch)."""
    from headstart.tasks.generation import Generation, GenerationOptions

    td = headstart_split(cfg)
    rows, counts = Generation().encode_set(bb, td.train, GenerationOptions(**task_options(cfg)))
    return {"examples": len(rows), "tokens": sum(len(r.ids) for r in rows),
            "supervised_tokens": sum(r.supervised_count for r in rows), "truncated": counts["truncated"],
            "dropped": counts["dropped"]}


def _threads() -> int:
    import torch

    torch.set_num_threads(int(_THREADS))
    return torch.get_num_threads()


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- children ------------------------------------------------------------------------------------------


def child_base(cfg: dict) -> dict:
    threads = _threads()
    from headstart.backbones import open_backbone
    from headstart.tasks.generation import CausalLMModel

    bb = open_backbone(BACKBONE)[0]
    model = CausalLMModel(bb)
    return {"tool": "base", "threads": threads, "scores": score(model, cfg), "train_counts": train_tokens(cfg, bb),
            "peak_rss_mb": round(_maxrss_mb(), 1)}


def child_headstart(cfg: dict, method: str) -> dict:
    from _measure import instrument_trainer

    threads = _threads()
    evals, fit_measure = instrument_trainer()
    import headstart as hs

    options = {**LORA, **RECIPE, "lr": cfg["lr"], "batch_size": cfg["batch"], "epochs": 1.0, "eval_every": 1.0,
               "patience": 100}
    with tempfile.TemporaryDirectory(prefix="bench-generation-") as tmp:
        t0 = time.perf_counter()
        run = hs.adapt(cfg["paths"]["train"], task="generation", backbone=BACKBONE, method=method, test=rouge_file(cfg),
                       val_fraction=cfg["val"] / (cfg["train"] + cfg["val"]), out=Path(tmp) / "runs",
                       store=Path(tmp) / "store.db", method_options=options, task_options=task_options(cfg), seed=SEED,
                       precision="fp32")
        wall = time.perf_counter() - t0
        rss_after_adapt = _maxrss_mb()
        manifest = run.manifest
        method_obj, bb = run.open_model()
        model = method_obj.task_model(bb, run.fit_context())
        scores = score(model, cfg)
        counts = train_tokens(cfg, bb)
    fit = manifest["method"]["fit"]
    m = fit_measure["m"]
    val_s = sum(evals)
    train_only = fit["train_s"] - val_s
    s = manifest["metrics"]["test"]["summary"]
    return {"tool": "headstart", "method": method, "threads": threads, "adapt_wall_s": round(wall, 1),
            "precision": manifest.get("precision", {}).get("used"), "split": manifest["data"]["split"],
            "options": manifest["method"].get("options", options), "steps": fit["steps"], "best_step": fit.get("best_step"),
            "history": fit.get("history"), "train_losses_head": fit.get("train_losses", [])[:3],
            "trainable_params": fit.get("trainable_params"), "examples_seen": fit.get("examples_seen"),
            "tokens_seen": fit.get("tokens_seen"), "padded_token_ratio": fit.get("padded_token_ratio"),
            "train_s_reported": fit["train_s"], "val_passes": len(evals), "val_s": round(val_s, 2),
            "train_only_s": round(train_only, 2), "train_counts": counts,
            "tokens_per_s": round(counts["tokens"] / train_only, 3),
            "supervised_tokens_per_s": round(counts["supervised_tokens"] / train_only, 3),
            "peak_rss_train_mb": round(m.peak_rss_mb, 1), "peak_extra_train_mb": round(m.peak_extra_mb, 1),
            "peak_rss_adapt_mb": round(rss_after_adapt, 1), "peak_rss_mb": round(_maxrss_mb(), 1),
            "fit": {k: v for k, v in fit.items() if k not in ("history",)},
            "own_test_summary": {k: s.get(k) for k in ("perplexity", "loss", "rouge_l", "chrf", "examples")},
            "scores": scores}


def child_trl(cfg: dict, steps: int, quantized: bool = False) -> dict:
    from _measure import measure

    threads = _threads()
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging
    from trl import SFTConfig, SFTTrainer

    from headstart.backbones import open_backbone
    from headstart.tasks.generation import CausalLMModel

    hf_logging.set_verbosity_error()
    bb = open_backbone(BACKBONE)[0]
    folder = bb.hf_folder()
    td = headstart_split(cfg)
    records = [{"prompt": [dict(m) for m in conv[:-1]], "completion": [dict(conv[-1])]} for conv in td.train.conversations]
    warmup = int(round(RECIPE["warmup_ratio"] * steps))  # headstart's count
    tok = AutoTokenizer.from_pretrained(folder)
    if quantized:  # QLoRA the transformers way: NF4 + double quantisation, fp32 compute, as headstart's qlora
        from transformers import BitsAndBytesConfig

        bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                 bnb_4bit_compute_dtype=torch.float32)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="sdpa",
                                                     quantization_config=bnb, device_map="cpu")
    else:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="sdpa")
    with tempfile.TemporaryDirectory(prefix="bench-generation-trl-") as tmp:
        args = SFTConfig(output_dir=tmp, use_cpu=True, bf16=False, fp16=False, completion_only_loss=True,
                         max_length=cfg["max_length"], packing=False, max_steps=steps,
                         per_device_train_batch_size=cfg["batch"], learning_rate=cfg["lr"], lr_scheduler_type="linear",
                         warmup_steps=warmup, weight_decay=RECIPE["weight_decay"], max_grad_norm=RECIPE["max_grad_norm"],
                         seed=SEED, data_seed=SEED, eval_strategy="no", save_strategy="no", report_to=[],
                         gradient_checkpointing=quantized, logging_steps=1, disable_tqdm=True, dataloader_num_workers=0)
        peft_config = LoraConfig(r=LORA["rank"], lora_alpha=LORA["alpha"], lora_dropout=LORA["lora_dropout"],
                                 target_modules=TARGETS, task_type="CAUSAL_LM")
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(records), processing_class=tok,
                             peft_config=peft_config)
        ds = trainer.train_dataset
        trl_counts = {"examples": len(ds), "tokens": int(sum(len(x) for x in ds["input_ids"])),
                      "supervised_tokens": int(sum(sum(1 for t in x if t != -100) for x in ds["labels"])),
                      "columns": list(ds.column_names)}
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        targeted = sorted({n.rsplit(".lora_A", 1)[0].rsplit(".", 1)[-1] for n, _ in trainer.model.named_modules()
                           if n.endswith(".lora_A")})
        with measure() as m:
            t0 = time.perf_counter()
            result = trainer.train()
            train_s = time.perf_counter() - t0
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        merged = trainer.model.merge_and_unload()
    merged.eval()
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    bb.tokenizer_, bb.module_ = tok, merged
    scores = score(CausalLMModel(bb), cfg)
    counts = train_tokens(cfg, bb)
    return {"tool": "trl", "method": "qlora" if quantized else "lora", "threads": threads, "steps": int(result.global_step), "warmup_steps": warmup,
            "trainable_params": trainable, "lora_targets": targeted, "train_only_s": round(train_s, 2),
            "train_counts": counts, "trl_counts": trl_counts,
            "tokens_per_s": round(counts["tokens"] / train_s, 3),
            "supervised_tokens_per_s": round(counts["supervised_tokens"] / train_s, 3),
            "train_losses_head": losses[:3], "train_loss": result.training_loss,
            "peak_rss_train_mb": round(m.peak_rss_mb, 1), "peak_extra_train_mb": round(m.peak_extra_mb, 1),
            "peak_rss_mb": round(_maxrss_mb(), 1), "scores": scores,
            "config": {"gradient_checkpointing": args.gradient_checkpointing, "bf16": args.bf16,
                       "optim": str(args.optim), "max_length": args.max_length, "packing": args.packing,
                       "completion_only_loss": args.completion_only_loss, "warmup_steps": args.warmup_steps,
                       "lr_scheduler_type": str(args.lr_scheduler_type)}}


# -- parent --------------------------------------------------------------------------------------------


def spawn(args: list[str]) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        lines = [x for x in proc.stderr.strip().splitlines() if x.strip()]
        return {"error": lines[-1] if lines else f"exit {proc.returncode}", "stderr_tail": proc.stderr[-3000:],
                "child_wall_s": round(time.perf_counter() - t0, 1)}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["child_wall_s"] = round(time.perf_counter() - t0, 1)
    print(f"  [{out['child_wall_s']:.0f} s]", file=sys.stderr, flush=True)
    return out


def f(v, spec=".4f"):
    return "n/a" if v is None else format(v, spec)


def print_tables(res: dict) -> None:
    r = res["runs"]
    ok = lambda k: k in r and "error" not in r[k]  # noqa: E731
    print(f"\n## Held-out ({res['data']['heldout']} Self-Instruct user-oriented tasks; one shared scorer)\n")
    print("| model | steps | held-out loss | perplexity | ROUGE-L (greedy, "
          f"{res['data']['rouge_prompts']} x {res['recipe']['max_new_tokens']} tokens) |")
    print("|---|---|---|---|---|")
    for k in RUNS:
        if k not in r:
            continue
        x = r[k]
        if "error" in x:
            print(f"| {RUNS[k]} | - | error: {x['error'][:120]} | | |")
            continue
        s = x["scores"]
        print(f"| {RUNS[k]} | {x.get('steps', 0)} | {f(s['loss'])} | {f(s['perplexity'], '.3f')} | {f(s['rouge_l'])} |")
    print("\n## Training throughput and memory (training only)\n")
    print("| run | trainable params | steps | examples | tokens (supervised) | training s | val passes (s, subtracted) "
          "| tokens/s | supervised tokens/s | vs TRL | peak RSS training (MB) | peak RSS process (MB) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    peer = r.get("trl-lora") if ok("trl-lora") else None
    for k in ("trl-lora", "hs-lora", "trl-qlora", "hs-qlora"):
        if not ok(k):
            continue
        x = r[k]
        c = x["train_counts"]
        ratio = f"{x['tokens_per_s'] / peer['tokens_per_s']:.2f}x" if peer else "n/a"
        val = f"{x['val_passes']} ({x['val_s']:.1f})" if "val_s" in x else "-"
        print(f"| {RUNS[k]} | {x.get('trainable_params')} | {x['steps']} | {c['examples']} | {c['tokens']} "
              f"({c['supervised_tokens']}) | {x['train_only_s']:.1f} | {val} | {x['tokens_per_s']:.1f} | "
              f"{x['supervised_tokens_per_s']:.1f} | {ratio} | {x['peak_rss_train_mb']:.0f} | {x['peak_rss_mb']:.0f} |")
    if peer:
        print(f"\nTRL's own tokenisation of the same examples: {peer['trl_counts']} (headstart's: {peer['train_counts']})")


def floors(res: dict) -> list[dict]:
    r = res["runs"]
    ok = lambda k: k in r and "error" not in r[k]  # noqa: E731
    out = []
    if ok("trl-lora"):
        p = r["trl-lora"]
        for k in ("hs-lora", "hs-qlora"):
            if not ok(k):
                continue
            h = r[k]
            ratio = h["tokens_per_s"] / p["tokens_per_s"]
            rel = abs(h["scores"]["loss"] - p["scores"]["loss"]) / p["scores"]["loss"]
            equal = rel <= FLOOR_LOSS_TOL
            out.append({"floor": f"{RUNS[k]}: training tokens/s >= {FLOOR_SPEEDUP}x TRL at equal held-out loss (within 2%)",
                        "value": f"{ratio:.2f}x ({h['tokens_per_s']:.1f} vs {p['tokens_per_s']:.1f} tokens/s); held-out loss "
                                 f"{h['scores']['loss']:.4f} vs {p['scores']['loss']:.4f} ({100 * rel:.2f}% apart: "
                                 f"{'equal' if equal else 'NOT equal'})",
                        "pass": ratio >= FLOOR_SPEEDUP and equal})
        if ok("hs-lora"):
            out.append({"floor": "headstart LoRA: trainable parameters equal TRL's (a check)",
                        "value": f"{r['hs-lora'].get('trainable_params')} vs {p['trainable_params']}",
                        "pass": r["hs-lora"].get("trainable_params") == p["trainable_params"]})
    if ok("trl-qlora") and ok("hs-qlora"):  # like for like: both QLoRA, both recomputing activations
        p, h = r["trl-qlora"], r["hs-qlora"]
        ratio = h["tokens_per_s"] / p["tokens_per_s"]
        rel = abs(h["scores"]["loss"] - p["scores"]["loss"]) / p["scores"]["loss"]
        equal = rel <= FLOOR_LOSS_TOL
        out.append({"floor": f"headstart QLoRA: training tokens/s >= {FLOOR_SPEEDUP}x TRL's QLoRA at equal held-out loss "
                             "(within 2%)",
                    "value": f"{ratio:.2f}x ({h['tokens_per_s']:.1f} vs {p['tokens_per_s']:.1f} tokens/s); held-out loss "
                             f"{h['scores']['loss']:.4f} vs {p['scores']['loss']:.4f} ({100 * rel:.2f}% apart: "
                             f"{'equal' if equal else 'NOT equal'})",
                    "pass": ratio >= FLOOR_SPEEDUP and equal})
    if ok("hs-lora") and ok("hs-qlora"):
        for key, what in (("peak_rss_train_mb", "training phase"), ("peak_rss_mb", "whole process")):
            ratio = r["hs-qlora"][key] / r["hs-lora"][key]
            out.append({"floor": f"QLoRA peak RSS ({what}) <= {FLOOR_RSS}x LoRA's",
                        "value": f"{ratio:.2f}x ({r['hs-qlora'][key]:.0f} vs {r['hs-lora'][key]:.0f} MB)",
                        "pass": ratio <= FLOOR_RSS})
    if ok("base"):
        b = r["base"]["scores"]["perplexity"]
        for k in ("hs-lora", "hs-qlora", "trl-lora", "trl-qlora"):
            if ok(k):
                a = r[k]["scores"]["perplexity"]
                out.append({"floor": f"{RUNS[k]}: held-out perplexity after adaptation below the base's",
                            "value": f"{a:.3f} vs {b:.3f}", "pass": a < b})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Runs: " + "; ".join(f"{k} = {v}" for k, v in RUNS.items()))
    ap.add_argument("--train", type=int, default=64, help="training examples (plus --val validation examples)")
    ap.add_argument("--val", type=int, default=8, help="validation examples headstart splits off")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-4, help="both tools (default headstart's LoRA preset)")
    ap.add_argument("--max-length", type=int, default=256, help="tokens per example, prompt included (both tools)")
    ap.add_argument("--max-output-chars", type=int, default=400, help="training records with outputs at most this long")
    ap.add_argument("--heldout-max-chars", type=int, default=600,
                    help="held-out tasks whose instruction + input + output are at most this many characters (so "
                         "none is cut at max_length)")
    ap.add_argument("--heldout", type=int, default=24, help="held-out examples for loss/perplexity")
    ap.add_argument("--rouge-prompts", type=int, default=6, help="held-out prompts generated greedily for ROUGE-L")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--only", default=None, help=f"comma-separated runs of {','.join(RUNS)} (default all)")
    ap.add_argument("--quick", action="store_true", help="24+4 train, 12 held-out, 4 prompts x 32 tokens")
    ap.add_argument("--json", type=Path, default=None, help="default benchmarks/results/generation[_quick].json")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        kind, cfg, rest = args.child[0], json.loads(args.child[1]), args.child[2:]
        if kind == "base":
            out = child_base(cfg)
        elif kind == "headstart":
            out = child_headstart(cfg, rest[0])
        else:
            out = child_trl(cfg, int(rest[0]), quantized=rest[1:] == ["qlora"])
        print(json.dumps(out))
        return 0

    if args.quick:
        args.train, args.val, args.heldout, args.rouge_prompts, args.max_new_tokens = 24, 4, 12, 4, 32
    runs = list(RUNS)
    if args.only:
        runs = [k.strip() for k in args.only.split(",") if k.strip()]
        bad = [k for k in runs if k not in RUNS]
        if bad:
            raise SystemExit(f"unknown run {bad[0]!r}: choose from {', '.join(RUNS)}")
    import platform

    import peft
    import torch
    import transformers
    import trl

    path = args.json or RESULTS / ("generation_quick.json" if args.quick else "generation.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-generation-data-"))
    data = write_data(work, args.train, args.val, args.heldout, args.max_output_chars, args.heldout_max_chars)
    cfg = {"paths": data["paths"], "train": args.train, "val": args.val, "batch": args.batch, "lr": args.lr,
           "max_length": args.max_length, "max_new_tokens": args.max_new_tokens, "rouge_prompts": args.rouge_prompts}
    rouge_file(cfg)
    cj = json.dumps(cfg)
    try:
        import bitsandbytes
        bnb = bitsandbytes.__version__
    except Exception as e:  # noqa: BLE001
        bnb = f"unavailable: {e}"
    res: dict = {"machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": int(_THREADS), "torch": torch.__version__,
                             "transformers": transformers.__version__, "trl": trl.__version__, "peft": peft.__version__,
                             "bitsandbytes": bnb, "python": platform.python_version(), "load_avg_start": os.getloadavg()},
                 "recipe": {**LORA, **RECIPE, "targets": TARGETS, "lr": args.lr, "batch": args.batch, "epochs": 1,
                            "max_length": args.max_length, "max_new_tokens": args.max_new_tokens, "seed": SEED,
                            "precision": "fp32", "backbone": BACKBONE},
                 "data": {"train": args.train, "val": args.val, "heldout": args.heldout, "rouge_prompts": args.rouge_prompts,
                          "max_output_chars": args.max_output_chars,
                          "heldout_max_chars": args.heldout_max_chars, "train_pool": data["pool"],
                          "heldout_pool": data["heldout_pool"], "train_file": str(TRAIN_DATA), "heldout_file": str(HELDOUT_DATA)},
                 "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "code": code_state(HERE.parent), "runs": {}}

    def save() -> None:
        path.write_text(json.dumps(res, indent=2) + "\n")

    t_start = time.perf_counter()
    steps = None
    for k in sorted(runs, key=lambda k: list(RUNS).index(k)):
        print(f"{k}: {RUNS[k]}", file=sys.stderr, flush=True)
        if k == "base":
            out = spawn(["--child", "base", cj])
        elif k.startswith("hs-"):
            out = spawn(["--child", "headstart", cj, k.split("-")[1]])
            if "steps" in out:
                steps = steps or out["steps"]
        else:
            n = steps or math.ceil(args.train / args.batch)
            out = spawn(["--child", "trl", cj, str(n), *(["qlora"] if k == "trl-qlora" else [])])
        res["runs"][k] = out
        save()
    res["wall_s"] = round(time.perf_counter() - t_start, 1)
    res["machine"]["load_avg_end"] = os.getloadavg()
    print_tables(res)
    res["floors"] = floors(res)
    print("\n## Floors\n")
    for fl in res["floors"]:
        print(f"- {'PASS' if fl['pass'] else 'FAIL'}: {fl['floor']}: {fl['value']}")
    print(f"\nwhole benchmark: {res['wall_s'] / 60:.1f} min, {_THREADS} thread, load average at start "
          f"{res['machine']['load_avg_start'][0]:.2f}, at end {res['machine']['load_avg_end'][0]:.2f}")
    save()
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
