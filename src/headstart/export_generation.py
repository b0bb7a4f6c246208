"""Export of a generation run: a plain Hugging Face causal-LM folder, or a PEFT adapter folder.

``--merge`` (and every run whose method changes the weights themselves: finetune, scratch, or
frozen = the base) writes the adapted model as an ordinary causal-LM folder -- LoRA/DoRA merged
into the weights, QLoRA's 4-bit layers dequantised first -- with its tokenizer, chat template and
generation config: ``AutoModelForCausalLM.from_pretrained(folder)`` and
``pipeline("text-generation", model=folder)`` load it. Without ``--merge`` a LoRA/DoRA run is
written as a PEFT adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``, the
tokenizer beside them) over the base's Hugging Face folder, which ``headstart.json`` and
``adapter_config.json`` name: ``PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base),
folder)``.

Before the folder is written the export is checked: reloaded through the standard loaders it must
give the run's logits on real test prompts (within :data:`LOGIT_TOLERANCE`), and its greedy replies
are compared with the run's (how many agree is recorded).
"""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import torch

from .errors import BadInput

LOGIT_TOLERANCE = 1e-3
"""Largest |logit difference| between the run's model and the reloaded export (fp32; merging a
LoRA update into the weights reorders float sums)."""
CHECK_PROMPTS = 4


def export_causal_lm(run, out: Path, *, merge: bool = False) -> dict:
    from .export import open_for_export, plain_body, write_folder_atomically
    from .methods._layers import LoRALinear
    from .tasks.generation import _collate, chat_template, encode_prompt, generate_ids

    run, method, bb, ctx = open_for_export(run)
    name = run.manifest["method"]["name"]
    if name == "qlora" and not merge:
        raise BadInput("export: a qlora run's base is 4-bit; add --merge for a plain fp32 causal-LM folder")
    adapter_form = name in ("lora", "dora") and not merge
    model = method.task_model(bb, ctx)
    template = chat_template(bb.tokenizer, run.task._options(ctx).template, bb.spec.name, bb.spec.chat_template)
    bb.tokenizer.chat_template = template  # the export carries the template the run trained with
    prompts = [encode_prompt(bb.tokenizer, template, [{"role": "user", "content": p}]) for p in _check_prompts(run)]
    run_replies = generate_ids(model, prompts, max_new_tokens=32, desc="checking the export") if prompts else []
    probe = None
    if prompts:
        from .tasks.generation import Encoded

        probe = _collate([Encoded(ids=tuple(p), supervised=(False,) * len(p), prompt_len=len(p)) for p in prompts[:2]],
                         bb.tokenizer.pad_token_id or 0)
        with torch.inference_mode():
            before = model.body(input_ids=probe["input_ids"], attention_mask=probe["attention_mask"]).logits.float()
    base_folder = str(bb.hf_folder())
    record = {"run": run.id, "task": "generation", "backbone": run.manifest["backbone"]["name"],
              "backbone_sha256": run.manifest["backbone"]["sha256"], "method": name,
              "form": "peft-adapter" if adapter_form else "causal-lm", "merged": name in ("lora", "dora", "qlora") and merge}
    if adapter_form:
        tensors, config = _peft_adapter(model.body, method, base_folder)
        record["base_folder"] = base_folder
    else:
        body = plain_body(method, bb)
        leftovers = [n for n, m in body.named_modules() if isinstance(m, LoRALinear) or type(m).__name__ in ("Adapter", "Linear4bit")]
        if leftovers:
            raise BadInput(f"export: {leftovers[0]} is not a plain layer of the architecture (a {name} run); use the run "
                           "folder itself, or adapt with --method lora to export")

    def fill(tmp: Path) -> None:
        from transformers import AutoModelForCausalLM, pipeline

        if adapter_form:
            from safetensors.torch import save_file

            save_file(tensors, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
            (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        else:
            body.save_pretrained(tmp, safe_serialization=True)
        bb.tokenizer.save_pretrained(tmp)
        if probe is not None:
            if adapter_form:
                reloaded, how = _load_adapter(tmp, base_folder)
            else:
                reloaded, how = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval(), "AutoModelForCausalLM"
            if reloaded is not None:
                with torch.inference_mode():
                    after = reloaded(input_ids=probe["input_ids"], attention_mask=probe["attention_mask"]).logits.float()
                diff = float((after - before).abs().max())
                if diff > LOGIT_TOLERANCE:
                    raise BadInput(f"export: the saved model's logits differ from the run's by {diff:.2e} "
                                   f"(> {LOGIT_TOLERANCE:g}); nothing was written")
                record.update(max_abs_logit_diff=diff, checked_with=how, check_prompts=len(prompts),
                              checked=f"checked on {len(prompts)} test prompts with {how}: max |logit_export - logit_run| "
                              f"= {diff:.1e} (tolerance {LOGIT_TOLERANCE:g}, fp32)")
            else:
                record.update(checked_with=how, checked=f"{how}: the adapter folder was written but not reloaded")
            if not adapter_form:
                gen = pipeline("text-generation", model=str(tmp), device="cpu")
                texts = [_check_prompts(run)[i] for i in range(len(prompts))]
                heard = [gen([{"role": "user", "content": t}], max_new_tokens=32, do_sample=False)[0]["generated_text"][-1]
                         ["content"].strip() for t in texts]
                if heard:
                    same = sum(a == b for a, b in zip(heard, run_replies, strict=True))
                    record.update(pipeline_checked=len(heard), pipeline_same_reply=same)
                    record["checked"] += f"; pipeline('text-generation') replied as the run to {same} of {len(heard)}"
                    if same < len(heard):
                        warnings.warn(f"export: pipeline('text-generation') replied as the run does to {same} of "
                                      f"{len(heard)} test prompts", stacklevel=2)
        record.setdefault("checked", "not checked: the run's predictions.csv holds no test prompts")
        (tmp / "headstart.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")

    write_folder_atomically(out, run.id, fill)
    return json.loads((out / "headstart.json").read_text(encoding="utf-8"))


def _peft_adapter(body, method, base_folder: str) -> tuple[dict[str, torch.Tensor], dict]:
    """PEFT's LoRA file layout: ``base_model.model.<module>.lora_A.weight`` (and ``.lora_B``;
    DoRA's magnitudes as ``.lora_magnitude_vector``) and the matching ``adapter_config.json``."""
    from .methods._layers import LoRALinear

    cfg = method.resolved_config()
    tensors: dict[str, torch.Tensor] = {}
    targets: set[str] = set()
    dora = False
    for name, mod in body.named_modules():
        if isinstance(mod, LoRALinear):
            tensors[f"base_model.model.{name}.lora_A.weight"] = mod.lora_A.detach().float().contiguous().clone()
            tensors[f"base_model.model.{name}.lora_B.weight"] = mod.lora_B.detach().float().contiguous().clone()
            if mod.dora:
                dora = True
                tensors[f"base_model.model.{name}.lora_magnitude_vector"] = mod.magnitude.detach().float().contiguous().clone()
            targets.add(name.rsplit(".", 1)[-1])
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_folder, "r": int(cfg["rank"]),
              "lora_alpha": float(cfg["alpha"]), "lora_dropout": float(cfg.get("lora_dropout") or 0.0),
              "target_modules": sorted(targets), "bias": "none", "use_dora": dora, "fan_in_fan_out": False,
              "inference_mode": True, "init_lora_weights": True, "modules_to_save": None}
    return tensors, config


def _load_adapter(folder: Path, base_folder: str):
    """The adapter folder loaded the standard way, or (None, why) where PEFT is not installed."""
    try:
        from peft import PeftModel
    except ImportError:
        warnings.warn("export: peft is not installed, so the adapter folder was not reloaded to check it "
                      "(pip install peft to check)", stacklevel=3)
        return None, "not checked (peft not installed)"
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_folder, dtype=torch.float32)
    return PeftModel.from_pretrained(base, str(folder)).eval(), "PeftModel.from_pretrained"


def _check_prompts(run) -> list[str]:
    """Up to :data:`CHECK_PROMPTS` test prompts of the run (the last user turn, from predictions.csv)."""
    try:
        with open(Path(run.path) / "predictions.csv", newline="", encoding="utf-8") as f:
            prompts = [r["prompt"] for r in csv.DictReader(f) if r.get("prompt")]
    except (OSError, KeyError):
        return []
    out = []
    for p in prompts[:CHECK_PROMPTS]:
        last = p.rsplit("\nuser: ", 1)[-1]
        out.append(last.removeprefix("user: "))
    return out


__all__ = ["export_causal_lm"]
