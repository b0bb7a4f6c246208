"""Hyperparameter presets per method, by how many examples each class has.

The regime is read from the median number of training examples per class:

==========  =====================  ==========================================================
regime      examples per class     why it differs
==========  =====================  ==========================================================
few         <= 16                  many epochs (few steps per epoch), evaluate less often,
                                   small batches so there are enough steps at all
medium      17 - 64
large       > 64                   few epochs; evaluate twice per epoch to stop early
==========  =====================  ==========================================================

Every value can be overridden (``--set lr=1e-4`` or a YAML config); the values actually used are
written into the run manifest (``method.config``) together with the regime (``method.fit``).
The ``large`` column was tuned on banking77 with MiniLM-L6 (benchmarks/README.md); the others
scale epochs so that a run sees a similar number of optimizer steps.
"""

from __future__ import annotations

REGIMES = (("few", 16), ("medium", 64), ("large", float("inf")))


def regime_for(examples_per_class: float) -> str:
    for name, upper in REGIMES:
        if examples_per_class <= upper:
            return name
    return REGIMES[-1][0]


_COMMON = {
    "few": {"batch_size": 16, "patience": 3, "eval_every": 2.0},
    "medium": {"batch_size": 32, "patience": 2, "eval_every": 1.0},
    "large": {"batch_size": 32, "patience": 2, "eval_every": 0.5},
}

PRESETS: dict[str, dict[str, dict]] = {
    # Full fine-tuning: a small body rate, the head (started from a linear probe) faster.
    "finetune": {
        "few": {"lr": 5e-5, "head_lr": 1e-3, "epochs": 20, "head_init": "probe"},
        "medium": {"lr": 5e-5, "head_lr": 1e-3, "epochs": 8, "head_init": "probe"},
        "large": {"lr": 5e-5, "head_lr": 1e-3, "epochs": 4, "head_init": "probe"},
    },
    # LoRA / DoRA / QLoRA: far fewer trained weights take a ~20x larger rate. No LoRA dropout
    # (PEFT's default too): on a CPU its random masks cost a third of a LoRA step's throughput
    # (benchmarks/lora_step.py).
    "lora": {
        "few": {"lr": 1e-3, "head_lr": 1e-3, "epochs": 30, "head_init": "probe", "rank": 8, "alpha": 16.0, "lora_dropout": 0.0},
        "medium": {"lr": 1e-3, "head_lr": 1e-3, "epochs": 10, "head_init": "probe", "rank": 8, "alpha": 16.0, "lora_dropout": 0.0},
        "large": {"lr": 1e-3, "head_lr": 1e-3, "epochs": 5, "head_init": "probe", "rank": 8, "alpha": 16.0, "lora_dropout": 0.0},
    },
    "adapter": {
        "few": {"lr": 1e-3, "head_lr": 1e-3, "epochs": 30, "head_init": "probe", "bottleneck": 64},
        "medium": {"lr": 1e-3, "head_lr": 1e-3, "epochs": 10, "head_init": "probe", "bottleneck": 64},
        "large": {"lr": 1e-3, "head_lr": 1e-3, "epochs": 5, "head_init": "probe", "bottleneck": 64},
    },
    # From scratch: same architecture and step budget as full fine-tuning, a from-scratch rate.
    "scratch": {
        "few": {"lr": 5e-4, "head_lr": 5e-4, "epochs": 20, "head_init": "zero"},
        "medium": {"lr": 5e-4, "head_lr": 5e-4, "epochs": 8, "head_init": "zero"},
        "large": {"lr": 5e-4, "head_lr": 5e-4, "epochs": 4, "head_init": "zero"},
    },
}
# Contrastive (methods/contrastive.py): optimizer steps over class-balanced batches, not epochs.
# Few-shot: chosen on SST-2, TweetEval emotion and UCI sentiment at 8 examples per class
# (MiniLM-L6, 3 draws each): 5 steps at 2e-4 matched 10 at 1e-4 and 20 at 5e-5 in accuracy
# (benchmarks/README.md "Plan" C). Medium/large: not tuned; the regret study measures them.
PRESETS["contrastive"] = {
    "few": {"steps": 5, "batch_size": 32, "lr": 2e-4},
    "medium": {"steps": 40, "batch_size": 32, "lr": 5e-5},
    "large": {"steps": 80, "batch_size": 32, "lr": 5e-5},
}
PRESETS["dora"] = PRESETS["lora"]
PRESETS["qlora"] = PRESETS["lora"]


def preset(method: str, examples_per_class: float) -> dict:
    """The preset values for ``method`` at this data size (shared values included)."""
    regime = regime_for(examples_per_class)
    return {**_COMMON[regime], **PRESETS[method][regime]}
