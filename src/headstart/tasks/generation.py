"""Generation: adapt a causal language model to instructions and replies in a domain.

Data
    Alpaca, messages (OpenAI/ShareGPT) or prompt/completion records in JSON/JSONL, or a table
    with the prompt and response columns named (:mod:`headstart.data.chat`). The split is seeded,
    by example; ``--test FILE`` gives a test set of its own.

Template and supervised tokens
    Each conversation is rendered with the base's chat template (``--task-set template=auto``;
    ``chatml`` or ``plain`` for a base without one). The text is cut at every assistant turn --
    the prompt with the template's generation prompt, then the reply with its end-of-turn marker
    -- and each piece is tokenised on its own, so the tokens the loss supervises are exactly the
    replies' (every assistant turn; the template's own markers before a reply are not learned) and
    the prompt a run generates from is token for token the one it trained on. An example longer
    than ``max_length`` tokens is truncated (``overlong=truncate``, the default: counted and
    recorded; one with no reply token left is dropped) or refused (``overlong=refuse``).

Model and loss
    The whole causal LM is the body; its own LM head scores the next token. The loss is the
    cross-entropy over an example's supervised tokens, averaged per example; the LM head runs
    only on the supervised positions (a reply is a fraction of the sequence, and the vocabulary
    is large: 49k for SmolLM2, 262k for Gemma 3). Batches are length-bucketed. Packing short
    examples into full sequences is not done, by measurement: on alpaca_en_demo (999 examples,
    SmolLM2's template, median 162 tokens, max_length 512) bucketed batches of 4 / 8 / 16 carry
    1.8% / 2.4% / 3.4% padding (random batches: 73% / 105% / 129%), and packing into 512-token
    rows would leave 0.8% -- at most ~3% fewer tokens, bought with block-diagonal attention masks
    (off SDPA's fast causal path) over rows three times the median length
    (``benchmarks/generation_padding.py``). The run records its ``padded_token_ratio``. Selection is by validation perplexity over reply tokens.

Metrics (test)
    ``perplexity`` (exp of the mean negative log-likelihood per reply token, corpus-level) and
    ``loss`` from teacher forcing, and ``bits_per_byte`` (the same NLL per UTF-8 byte of the replies:
    independent of the tokenizer, so ``drift`` decides on it when the new base brings another
    vocabulary); ``rouge_l``, ``chrf`` and ``exact_match`` of the greedy
    generation against the reference (:mod:`headstart.evaluate.generation`), each per example with
    a 95% bootstrap interval; ``predictions.csv`` holds every example's prompt, reference,
    generation and values. The first ``samples`` test prompts are also answered by the base model
    as loaded (before adaptation), side by side in the run's metrics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..errors import BadInput
from ..evaluate.generation import GENERATION_METRICS
from ..evaluate.metrics import MetricSpec
from .base import Objective, Scored, Task, TaskData, Training, seeded_split

TEMPLATES = ("auto", "chatml", "gemma", "plain")
OVERLONG = ("truncate", "refuse")
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
"""ChatML (``template=chatml``): the format SmolLM2 and Qwen use."""
GEMMA = ("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}{{ '<start_of_turn>user\n' + "
         "message['content'] + '\n\n' }}{% set ns = namespace() %}{% elif message['role'] == 'user' %}"
         "{% if loop.index0 == 1 and messages[0]['role'] == 'system' %}{{ message['content'] + '<end_of_turn>\n' }}"
         "{% else %}{{ '<start_of_turn>user\n' + message['content'] + '<end_of_turn>\n' }}{% endif %}"
         "{% else %}{{ '<start_of_turn>model\n' + message['content'] + '<end_of_turn>\n' }}{% endif %}{% endfor %}"
         "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}")
"""Gemma's turn format (``template=gemma``) for a Gemma base whose GGUF carries no template (the
packaged Gemma 3 270M base): a system message is folded into the first user turn, as Gemma's own
template does."""
PLAIN = ("{% for message in messages %}{% if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}"
         "{% elif message['role'] == 'user' %}{{ '### Instruction:\\n' + message['content'] + '\\n\\n' }}"
         "{% else %}{{ '### Response:\\n' + message['content'] + eos_token + '\\n\\n' }}{% endif %}{% endfor %}"
         "{% if add_generation_prompt %}{{ '### Response:\\n' }}{% endif %}")
"""A plain instruction format (``template=plain``) for base models without a chat template."""
END_OF_TURN = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|end|>", "<|endoftext|>")
"""Tokens that end a reply in the common chat templates; generation stops at any the vocabulary has."""
GEN_BATCH = 8
"""Prompts generated together (left-padded)."""


@dataclass
class GenerationOptions:
    max_length: int | None = None
    """Tokens per training example, prompt included (None: the model's positions, at most 1024)."""
    overlong: str = "truncate"
    """An example longer than max_length: 'truncate' (counted, recorded) or 'refuse'."""
    template: str = "auto"
    """'auto': the base's chat template; 'chatml', 'gemma' or 'plain' for a base without one."""
    max_new_tokens: int = 128
    """Most tokens a test generation produces."""
    samples: int = 8
    """Test prompts also answered by the base model, shown side by side with the run's answers."""

    def validate(self) -> None:
        if self.max_length is not None and (not isinstance(self.max_length, int) or isinstance(self.max_length, bool)
                                            or self.max_length < 8):
            raise BadInput(f"generation option max_length must be an integer >= 8 (got {self.max_length!r})")
        if self.overlong not in OVERLONG:
            raise BadInput(f"generation option overlong must be one of {', '.join(OVERLONG)} (got {self.overlong!r})")
        if self.template not in TEMPLATES:
            raise BadInput(f"generation option template must be one of {', '.join(TEMPLATES)} (got {self.template!r})")
        for name in ("max_new_tokens", "samples"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < (1 if name == "max_new_tokens" else 0):
                raise BadInput(f"generation option {name} must be an integer >= {1 if name == 'max_new_tokens' else 0} "
                               f"(got {v!r})")


@dataclass(frozen=True)
class Encoded:
    """One tokenised conversation: ids, which of them the loss supervises, and where the last
    reply starts (the prompt generation continues is ``ids[:prompt_len]``)."""

    ids: tuple[int, ...]
    supervised: tuple[bool, ...]
    prompt_len: int
    truncated: bool = False

    @property
    def supervised_count(self) -> int:
        return int(sum(self.supervised))


def chat_template(tokenizer, template: str, name: str, named: str | None = None) -> str:
    """The Jinja chat template in use: the base's own for ``auto`` (or the built-in format its
    catalog entry names, ``named``, for a base without one); a base without either needs
    ``template=chatml|gemma|plain``."""
    if template == "auto" and not getattr(tokenizer, "chat_template", None) and named:
        template = named
    if template == "chatml":
        return CHATML
    if template == "plain":
        return PLAIN
    if template == "gemma":
        return GEMMA
    own = getattr(tokenizer, "chat_template", None)
    if isinstance(own, dict):
        own = own.get("default")
    if not own:
        raise BadInput(f"backbone {name!r}: its tokenizer has no chat template; give one with --task-set template=chatml "
                       "(ChatML markers), template=gemma (Gemma's turns) or template=plain (### Instruction / ### Response)"
                       " (`headstart generate BACKBONE`: --template)")
    return own


def _render(tokenizer, template: str, messages, *, add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(list(messages), chat_template=template, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)


def encode_conversation(tokenizer, template: str, conv, *, where: str = "") -> Encoded:
    """Token ids of a conversation under ``template``, each assistant reply supervised (with its
    end-of-turn marker), every other token not; see the module docstring."""
    pieces: list[tuple[str, bool]] = []
    done = ""
    for j, message in enumerate(conv):
        if message["role"] != "assistant":
            continue
        prompt = _render(tokenizer, template, conv[:j], add_generation_prompt=True)
        full = _render(tokenizer, template, conv[: j + 1], add_generation_prompt=False)
        if not prompt.startswith(done) or not full.startswith(prompt):
            raise BadInput(f"{where or 'a conversation'}: the chat template does not render the conversation as a growing "
                           "prefix (each turn appended), so reply tokens cannot be told apart; use --task-set "
                           "template=chatml or template=plain")
        pieces += [(prompt[len(done):], False), (full[len(prompt):], True)]
        done = full
    ids: list[int] = []
    sup: list[bool] = []
    prompt_len = 0
    for k, (text, supervised) in enumerate(pieces):
        tokens = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        if k == len(pieces) - 1:
            prompt_len = len(ids)
        ids += tokens
        sup += [supervised] * len(tokens)
    return Encoded(ids=tuple(ids), supervised=tuple(sup), prompt_len=prompt_len)


def encode_prompt(tokenizer, template: str, messages) -> list[int]:
    """Ids of a prompt (a conversation without its reply) with the generation prompt appended,
    tokenised in the same pieces as training (:func:`encode_conversation`)."""
    enc = encode_conversation(tokenizer, template, tuple(messages) + ({"role": "assistant", "content": "x"},))
    return list(enc.ids[: enc.prompt_len])


class CausalLMModel(nn.Module):
    """A causal LM as the task trains it: ``forward`` gives the last hidden states (B, L, H) and
    the batch's next-token targets (the loss needs both; the targets are built once, in the
    collate); :meth:`logits` applies the LM head to the positions asked for. ``.body`` is the
    whole model."""

    def __init__(self, backbone):
        super().__init__()
        self.body = backbone.module
        self._backbone = [backbone]

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        inner = getattr(self.body, self.body.base_model_prefix)
        hidden = inner(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).last_hidden_state
        return hidden, batch["target"]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The LM head on hidden states (any leading shape), as the model's own forward applies it."""
        out = self.body.get_output_embeddings()(hidden)
        cap = getattr(self.body.config, "final_logit_softcapping", None)
        if cap:
            out = torch.tanh(out / cap) * cap
        return out


def _collate(rows: list[Encoded], pad: int) -> dict[str, torch.Tensor]:
    """Right-padded ids, attention mask, and next-token targets (-100 where nothing is learned)."""
    width = max(len(r.ids) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    target = torch.full((len(rows), width), -100, dtype=torch.long)
    for b, r in enumerate(rows):
        n = len(r.ids)
        ids[b, :n] = torch.tensor(r.ids, dtype=torch.long)
        mask[b, :n] = 1
        for t in range(n - 1):
            if r.supervised[t + 1]:
                target[b, t] = r.ids[t + 1]
    return {"input_ids": ids, "attention_mask": mask, "target": target}


def token_nll(model: CausalLMModel, hidden: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed NLL per example (B,), supervised tokens per example (B,)), the LM head applied
    only where ``target`` is not -100."""
    target = target.to(hidden.device)
    where = target != -100
    logits = model.logits(hidden[where]).float()  # (N, V)
    nll = nn.functional.cross_entropy(logits, target[where], reduction="none")
    rows = where.nonzero()[:, 0]
    sums = torch.zeros(hidden.shape[0], dtype=nll.dtype, device=hidden.device).index_add(0, rows, nll)
    return sums, where.sum(1)


def stop_ids(tokenizer, body) -> list[int]:
    """Token ids that end a reply: the model's end-of-sequence ids and any end-of-turn marker."""
    ids: set[int] = set()
    eos = getattr(body.generation_config, "eos_token_id", None)
    ids.update([eos] if isinstance(eos, int) else (eos or []))
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    ids.update(int(vocab[t]) for t in END_OF_TURN if t in vocab)
    return sorted(ids)


@torch.inference_mode()
def generate_ids(model: CausalLMModel, prompts: list[list[int]], *, max_new_tokens: int = 128, temperature: float = 0.0,
                 top_p: float = 1.0, stop: list[str] | None = None, seed: int = 0, streamer=None,
                 desc: str = "generating") -> list[str]:
    """Replies to tokenised prompts, in input order: greedy (``temperature=0``) or sampled
    (``temperature``, nucleus ``top_p``, seeded), each cut at its first stop sequence. Prompts of
    similar length are generated together, left-padded, with the model's key/value cache."""
    from .._util import progress

    bb = model._backbone[0]
    tok = bb.tokenizer_
    body = model.body
    body.eval()
    eos = stop_ids(tok, body)
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos[0]
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out = [""] * len(prompts)
    limit = max(1, min(max_new_tokens, bb.max_positions - max((len(p) for p in prompts), default=0)))
    kwargs: dict[str, Any] = {"max_new_tokens": limit, "eos_token_id": eos, "pad_token_id": pad}
    if temperature > 0:
        kwargs.update(do_sample=True, temperature=float(temperature), top_p=float(top_p), top_k=0)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    if stop:
        kwargs.update(stop_strings=list(stop), tokenizer=tok)
    if streamer is not None:  # one prompt at a time; a streamer with ``bind`` is given the tokenizer and stops
        kwargs["streamer"] = streamer.bind(tok, stop) if hasattr(streamer, "bind") else streamer
    batch_size = 1 if streamer is not None else GEN_BATCH
    torch.manual_seed(seed)
    from contextlib import nullcontext

    bar_or_none = nullcontext(None) if streamer is not None else progress(len(prompts), desc, unit="prompt")
    with bar_or_none as bar:  # a streamed reply is its own progress; a bar would interleave with it
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            width = max(len(prompts[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for r, i in enumerate(idx):
                n = len(prompts[i])
                ids[r, width - n:] = torch.tensor(prompts[i], dtype=torch.long)
                mask[r, width - n:] = 1
            gen = body.generate(input_ids=ids.to(bb.device), attention_mask=mask.to(bb.device), **kwargs)
            for r, i in enumerate(idx):
                new = [int(t) for t in gen[r, width:].tolist()]
                cut = next((k for k, t in enumerate(new) if t in eos), len(new))
                text = tok.decode(new[:cut], skip_special_tokens=True)
                out[i] = cut_at_stop(text, stop).strip()
            if bar is not None:
                bar.update(len(idx))
    return out


def cut_at_stop(text: str, stop: list[str] | None) -> str:
    """``text`` up to (not including) its first stop sequence."""
    if not stop:
        return text
    cuts = [text.find(s) for s in stop if s and s in text]
    return text[: min(cuts)] if cuts else text


class Generation(Task):
    name: ClassVar[str] = "generation"
    primary: ClassVar[MetricSpec] = GENERATION_METRICS["perplexity"]
    metrics: ClassVar[tuple[MetricSpec, ...]] = tuple(GENERATION_METRICS.values())
    has_head: ClassVar[bool] = False
    predicts: ClassVar[bool] = False
    shown: ClassVar[dict[str, str]] = {"perplexity": "perplexity", "base_perplexity": "base perplexity", "rouge_l": "ROUGE-L",
                                       "chrf": "chrF"}
    compared: ClassVar[tuple[str, str]] = ("perplexity", "rouge_l")
    drifted: ClassVar[tuple[str, ...]] = ("bits_per_byte", "rouge_l", "chrf")
    unit: ClassVar[str] = "examples"
    needs_causal_lm: ClassVar[bool] = True
    options_cls: ClassVar[type] = GenerationOptions
    exports_adapters: ClassVar[bool] = True

    def default_backbone(self, data) -> str:
        """``smollm2-135m-instruct`` (English) unless most prompts and replies are in other
        languages: then the multilingual ``gemma3-270m``."""
        from ..plan.profile import LANGUAGE_WARN_SHARE, detect_scripts

        try:
            chats = _load(data, _NoColumns())
        except BadInput:
            return "smollm2-135m-instruct"  # read() names the problem
        sample = [" ".join(m["content"] for m in conv) for conv in chats.conversations[:200]]
        shares = detect_scripts(sample) if sample else {}
        other = sum(share for lang, share in shares.items() if lang != "en")
        return "gemma3-270m" if other >= LANGUAGE_WARN_SHARE else "smollm2-135m-instruct"

    def default_method(self, backbone: str) -> str:
        return "lora"

    def describe_data(self, manifest: dict) -> str:
        split = manifest["data"]["split"]
        return f"{split['train']} train / {split['val']} validation / {split['test']} test examples"

    # -- data ------------------------------------------------------------------------------------
    def read(self, recipe) -> TaskData:
        full = _load(recipe.data, recipe)
        n = len(full)
        *parts, test_fraction = seeded_split(n, recipe, full.source, "examples")
        train, val, test = (full.subset(p) for p in parts)
        if recipe.test is not None:
            test = _load(recipe.test, recipe)
        opts = self.options(recipe.task_options)
        return TaskData(
            train=train, val=val, test=test, modality="text",
            train_record={"source": full.source, "fingerprint": full.fingerprint, "examples": n, "columns": full.columns,
                          "schema": full.schema, "kind": "instructions"},
            test_record={"source": test.source if recipe.test is not None else "held out from train",
                         "fingerprint": test.fingerprint, "examples": len(test)},
            split_record={"val_fraction": recipe.val_fraction, "test_fraction": test_fraction, "seed": recipe.seed_of_split,
                          "by": "example", "train": len(train), "val": len(val), "test": len(test)},
            separate_test=recipe.test is not None, info={"task_info": _options_record(opts)},
            texts=_texts_for_language(full),
        )

    def context(self, data: TaskData) -> dict:
        return {"task_info": data.info["task_info"]}

    def read_eval(self, run, data, *, text_col=None, header=None):
        from ..recipe import Recipe

        if not isinstance(data, (str, Path)):
            raise BadInput("evaluating a generation run takes a JSON/JSONL file or table of examples")
        ds = _load(data, Recipe(data=str(data), text_col=text_col or None, header=header))
        return ds, ds.source, ds.fingerprint

    # -- the model -------------------------------------------------------------------------------
    def build_model(self, backbone, cfg, ctx) -> nn.Module:
        return CausalLMModel(backbone)

    def _options(self, ctx) -> GenerationOptions:
        record = ctx.task_info or {}
        return GenerationOptions(**{k: v for k, v in record.items() if k in GenerationOptions.__dataclass_fields__})

    def encoder(self, bb, opts: GenerationOptions):
        """(template, max_length) for a backbone and the task options."""
        template = chat_template(bb.tokenizer, opts.template, bb.spec.name, bb.spec.chat_template)
        limit = opts.max_length or min(bb.max_positions, 1024)
        return template, min(limit, bb.max_positions)

    def encode_set(self, bb, data, opts: GenerationOptions) -> tuple[list[Encoded], dict]:
        """Every conversation of ``data`` tokenised and checked against max_length: (kept
        examples, counts of truncated / dropped ones)."""
        template, limit = self.encoder(bb, opts)
        kept: list[Encoded] = []
        truncated = dropped = 0
        for i, conv in enumerate(data.conversations):
            where = data.origin[i] if data.origin else data.source
            enc = encode_conversation(bb.tokenizer, template, conv, where=where)
            if not enc.supervised_count:
                raise BadInput(f"{where}: the reply has no tokens after templating; give a non-empty response")
            if len(enc.ids) > limit:
                if opts.overlong == "refuse":
                    raise BadInput(f"{where}: the example is {len(enc.ids)} tokens with its template, more than max_length "
                                   f"{limit}; shorten it, raise --task-set max_length=N, or --task-set overlong=truncate")
                truncated += 1
                enc = Encoded(ids=enc.ids[:limit], supervised=enc.supervised[:limit], prompt_len=min(enc.prompt_len, limit),
                              truncated=True)
                if not any(enc.supervised[1:]):
                    dropped += 1
                    continue
            kept.append(enc)
        if not kept:
            raise BadInput(f"{data.source}: every example lost its reply to truncation at {limit} tokens; raise "
                           "--task-set max_length=N")
        return kept, {"examples": len(data), "truncated": truncated, "dropped": dropped, "max_length": limit}

    # -- trained methods -------------------------------------------------------------------------
    def preset(self, method: str, train) -> tuple[str, dict]:
        from .base import sized_preset

        return sized_preset("generation", method, len(train), PRESETS, _COMMON, bounds=(200, 2000))

    def training(self, model, train, val, cfg, ctx) -> Training:
        bb = model._backbone[0]
        opts = self._options(ctx)
        rows, counts = self.encode_set(bb, train, opts)
        val_rows, _ = self.encode_set(bb, val, opts)
        pad = bb.tokenizer.pad_token_id or 0
        from .._util import status

        if counts["truncated"]:
            status(f"generation: {counts['truncated']} of {counts['examples']} training examples truncated to "
                   f"{counts['max_length']} tokens ({counts['dropped']} dropped: no reply token left)")

        def collate(idx: list[int]) -> dict[str, torch.Tensor]:
            return _collate([rows[i] for i in idx], pad)

        def loss(out: tuple[torch.Tensor, torch.Tensor], idx: list[int]) -> torch.Tensor:
            sums, counts_ = token_nll(model, *out)
            return sums / counts_.clamp(min=1)

        order = sorted(range(len(val_rows)), key=lambda i: -len(val_rows[i].ids))
        val_batches = [order[s:s + GEN_BATCH] for s in range(0, len(order), GEN_BATCH)]

        def evaluate(m: nn.Module) -> dict[str, float]:
            nll = tokens = 0.0
            for idx in val_batches:
                batch = {k: v.to(bb.device) for k, v in _collate([val_rows[i] for i in idx], pad).items()}
                sums, n = token_nll(m, *m(batch))
                nll += float(sums.sum())
                tokens += float(n.sum())
            mean = nll / max(1.0, tokens)
            return {"perplexity": math.exp(min(mean, 50.0)), "loss": mean}

        objective = Objective(loss=loss, evaluate=evaluate, metric=self.primary, val_examples=len(val_rows))
        record = {"data_prep": {**counts, "train_tokens": sum(len(r.ids) for r in rows),
                                "supervised_tokens": sum(r.supervised_count for r in rows)}}
        return Training(lengths=[len(r.ids) for r in rows], collate=collate, objective=objective, record=record)

    # -- scoring ---------------------------------------------------------------------------------
    def score(self, method, backbone, test, ctx, *, n_resamples: int = 1000, intervals: bool = True, seed: int = 0) -> Scored:
        from ..evaluate.bootstrap import bootstrap_ci
        from ..evaluate.generation import BitsPerByte, Perplexity, example_scores, prediction_mean

        opts = self._options(ctx)
        model = method.task_model(backbone, ctx)
        bb = model._backbone[0]
        rows, counts = self.encode_set(bb, test, opts)
        if counts["dropped"]:
            raise BadInput(f"{test.source}: {counts['dropped']} test examples have no reply token within max_length "
                           f"{counts['max_length']}; raise --task-set max_length=N")
        nll, tokens = _teacher_forced(model, rows, bb)
        replies = generate_ids(model, [list(r.ids[: r.prompt_len]) for r in rows], max_new_tokens=opts.max_new_tokens,
                               desc="generating (test)")
        records = []
        for i, (conv, reply) in enumerate(zip(test.conversations, replies, strict=True)):
            s = example_scores(conv[-1]["content"], reply)
            records.append({"prompt": _prompt_text(conv), "reference": conv[-1]["content"], "generation": reply,
                            "nll": round(float(nll[i]), 6), "tokens": int(tokens[i]),
                            "reference_bytes": _reply_bytes(conv),
                            **{k: round(float(v), 6) for k, v in s.items()}})
        summary: dict[str, Any] = {}
        value, low, high = bootstrap_ci(tokens, nll, Perplexity(), n_resamples=n_resamples, seed=seed)
        summary["perplexity"], summary["perplexity_ci"] = round(float(value), 6), [round(float(low), 6), round(float(high), 6)]
        summary["loss"] = round(float(nll.sum() / max(1, tokens.sum())), 6)
        sizes = np.array([r["reference_bytes"] for r in records], dtype=np.float64)
        value, low, high = bootstrap_ci(sizes, nll, BitsPerByte(), n_resamples=n_resamples, seed=seed)
        summary["bits_per_byte"], summary["bits_per_byte_ci"] = round(float(value), 6), [round(float(low), 6),
                                                                                          round(float(high), 6)]
        for m in ("rouge_l", "chrf", "exact_match"):
            values = np.array([r[m] for r in records], dtype=np.float64)
            v, lo, hi = bootstrap_ci(np.zeros(len(values)), values, prediction_mean, n_resamples=n_resamples, seed=seed)
            summary[m], summary[f"{m}_ci"] = round(float(v), 6), [round(float(lo), 6), round(float(hi), 6)]
        summary.update(examples=len(records), truncated=counts["truncated"], ci_level=0.95, ci_resamples=n_resamples,
                       decoding="greedy", max_new_tokens=opts.max_new_tokens)
        base_scores, samples = self._base(method, backbone, ctx, test, rows, replies, opts, sizes)
        summary.update(base_scores)
        detail = {**summary, "samples": samples}
        return Scored(summary=summary, detail=detail, records=records)

    def _base(self, method, backbone, ctx, test, rows, replies, opts, sizes) -> tuple[dict, list[dict]]:
        """The base model as loaded beside the adapted one: its perplexity and bits per byte on the
        same test replies (teacher forcing: one forward pass each), and the first ``samples`` test
        prompts answered by both. Nothing for a ``frozen`` run (it is the base)."""
        from ..evaluate.generation import BitsPerByte
        from ..methods.trained import TrainedMethod

        if not isinstance(method, TrainedMethod) or not rows:
            return {}, []
        from ..methods.frozen import Frozen

        fresh = type(backbone)(backbone.spec, backbone.path, backbone.device)
        base = Frozen().task_model(fresh, ctx)
        nll, tokens = _teacher_forced(base, rows, fresh)
        scores = {"base_perplexity": round(math.exp(min(float(nll.sum() / max(1, tokens.sum())), 50.0)), 6),
                  "base_bits_per_byte": round(float(BitsPerByte()(sizes, nll)), 6)}
        n = min(opts.samples, len(rows))
        if not n:
            return scores, []
        before = generate_ids(base, [list(r.ids[: r.prompt_len]) for r in rows[:n]], max_new_tokens=opts.max_new_tokens,
                              desc="generating (base model)")
        return scores, [{"prompt": _prompt_text(test.conversations[i]), "reference": test.conversations[i][-1]["content"],
                         "base": before[i], "adapted": replies[i]} for i in range(n)]

    def run_values(self, run_path, manifest):
        """Per-example values behind perplexity, bits per byte, ROUGE-L and chrF, from ``predictions.csv``."""
        import csv

        from ..evaluate.generation import BitsPerByte, Perplexity, prediction_mean

        cols = {k: [] for k in ("tokens", "nll", "reference_bytes", "rouge_l", "chrf")}
        try:
            with open(Path(run_path) / "predictions.csv", newline="", encoding="utf-8") as f:
                for rec in csv.DictReader(f):
                    for k, v in cols.items():
                        v.append(float(rec[k]))
        except (OSError, KeyError, ValueError):
            return None
        if not cols["tokens"]:
            return None
        a = {k: np.array(v) for k, v in cols.items()}
        zeros = np.zeros(len(a["tokens"]))
        return {"perplexity": (a["tokens"], a["nll"], Perplexity()),
                "bits_per_byte": (a["reference_bytes"], a["nll"], BitsPerByte()),
                "rouge_l": (zeros, a["rouge_l"], prediction_mean), "chrf": (zeros, a["chrf"], prediction_mean)}

    def suite_cells(self, run, path, metrics, *, n_resamples: int, seed: int):
        data, source, fingerprint = self.read_eval(run, path)
        method, bb = run.open_model()
        ctx = run.fit_context()
        scored = self.score(method, bb, data, ctx, n_resamples=n_resamples, seed=seed)
        cells = {m: {"value": scored.summary[m], "ci": scored.summary.get(f"{m}_ci"), "n": len(data)} for m in metrics}
        return cells, source, fingerprint

    # -- the task's verb -------------------------------------------------------------------------
    def generate_texts(self, method, backbone, prompts: list, ctx, *, max_new_tokens: int = 128, temperature: float = 0.0,
                       top_p: float = 1.0, stop: list[str] | None = None, seed: int = 0, streamer=None) -> list[str]:
        """``Run.generate`` / ``headstart generate``: replies to prompts (strings: one user turn
        each; or message lists)."""
        if not prompts:
            raise BadInput("nothing to generate from: give at least one prompt")
        if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
            raise BadInput(f"--max-new-tokens must be an integer >= 1 (got {max_new_tokens!r})")
        if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not 0 <= temperature <= 10:
            raise BadInput(f"--temperature must be a number from 0 (greedy) to 10 (got {temperature!r})")
        if not isinstance(top_p, (int, float)) or isinstance(top_p, bool) or not 0 < top_p <= 1:
            raise BadInput(f"--top-p must be in (0, 1] (got {top_p!r})")
        opts = self._options(ctx)
        model = method.task_model(backbone, ctx)
        bb = model._backbone[0]
        template = chat_template(bb.tokenizer, opts.template, bb.spec.name, bb.spec.chat_template)
        ids = []
        for p in prompts:
            messages = [{"role": "user", "content": p}] if isinstance(p, str) else list(p)
            if isinstance(p, str) and not p.strip():
                raise BadInput("an empty prompt: give some text")
            ids.append(encode_prompt(bb.tokenizer, template, messages))
        return generate_ids(model, ids, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, stop=stop,
                            seed=seed, streamer=streamer)

    def verbs(self, modality: str) -> tuple:
        from .verbs import Param, Verb

        return (Verb("generate", "a reply to each prompt (a string: one user turn; or a list of {role, content} messages)",
                     item="prompt", field="prompts", call=_generate_verb, needs=("generate",), result="replies",
                     example="Write a haiku about the sea.", max_batch=8,
                     params=(Param("max_new_tokens", int, 128, "tokens to generate at most", ge=1, le=4096),
                             Param("temperature", float, 0.0, "0: greedy; above: sampling", ge=0.0, le=10.0),
                             Param("top_p", float, 1.0, "nucleus sampling mass", ge=0.0, le=1.0),
                             Param("stop", list, None, "cut each reply at the first of these strings"),
                             Param("seed", int, 0, "sampling seed", ge=0))),)

    def export(self, run, out, *, merge: bool = False) -> dict:
        from ..export_generation import export_causal_lm

        return export_causal_lm(run, out, merge=merge)


def _reply_bytes(conv) -> int:
    """UTF-8 bytes of every assistant reply of a conversation (what its supervised tokens spell)."""
    return sum(len(m["content"].encode("utf-8")) for m in conv if m["role"] == "assistant")


def _prompt_text(conv) -> str:
    return "\n".join(f"{m['role']}: {m['content']}" for m in conv[:-1])


@torch.inference_mode()
def _teacher_forced(model: CausalLMModel, rows: list[Encoded], bb) -> tuple[np.ndarray, np.ndarray]:
    """(summed NLL, supervised tokens) of every example of the reply tokens under teacher forcing."""
    pad = bb.tokenizer.pad_token_id or 0
    model.eval()
    nll = np.zeros(len(rows))
    tokens = np.zeros(len(rows), dtype=np.int64)
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i].ids))
    for s in range(0, len(order), GEN_BATCH):
        idx = order[s:s + GEN_BATCH]
        batch = {k: v.to(bb.device) for k, v in _collate([rows[i] for i in idx], pad).items()}
        sums, n = token_nll(model, *model(batch))
        nll[idx] = sums.double().cpu().numpy()
        tokens[idx] = n.cpu().numpy()
    return nll, tokens


def _texts_for_language(data):
    """The user turns and replies of up to 200 examples, for adapt's language check."""
    from ..data import Dataset

    texts = [" ".join(m["content"] for m in conv if m["role"] != "system") for conv in data.conversations[:200]]
    return Dataset(inputs=texts, labels=None, modality="text", source=data.source)


class _NoColumns:
    text_col = label_col = fmt = header = None


def _options_record(opts: GenerationOptions) -> dict:
    from dataclasses import asdict

    return asdict(opts)


def _load(path, recipe):
    from ..data.chat import load_chat

    return load_chat(path, prompt_col=recipe.text_col, response_col=recipe.label_col, fmt=recipe.fmt, header=recipe.header)


_COMMON = {
    "few": {"epochs": 3.0, "batch_size": 8, "patience": 3, "eval_every": 1.0},
    "medium": {"epochs": 2.0, "batch_size": 8, "patience": 2, "eval_every": 0.5},
    "large": {"epochs": 1.0, "batch_size": 16, "patience": 2, "eval_every": 0.25},
}
_LORA = {"lr": 2e-4, "rank": 16, "alpha": 32.0, "lora_dropout": 0.0}
PRESETS: dict[str, dict] = {
    # LoRA on every linear layer of the blocks (attention and MLP projections: the default targets).
    "lora": _LORA,
    "dora": _LORA,
    # QLoRA is chosen to save memory: activations are recomputed in the backward pass as well.
    "qlora": {**_LORA, "checkpointing": True},
    "finetune": {"lr": 2e-5},
    "adapter": {"lr": 2e-4, "bottleneck": 64},
    "scratch": {"lr": 5e-4},
}


__all__ = ["CausalLMModel", "Encoded", "Generation", "GenerationOptions", "encode_conversation", "encode_prompt",
           "generate_ids"]


def _generate_verb(served, items: list, params: dict) -> list[dict]:
    """``POST /v1/generate``: ``{"text"}`` per prompt."""
    replies = served.generate(items, max_new_tokens=params["max_new_tokens"], temperature=params["temperature"],
                              top_p=params["top_p"], stop=params["stop"], seed=params["seed"])
    return [{"text": r} for r in replies]
