"""Task ``generation`` on a tiny random Llama (byte-level BPE, ChatML template) built in the test:
data schemas and their errors, exact supervised-token masks, the LM head on supervised positions
equal to the model's own logits, learning a toy mapping (LoRA and full fine-tuning), save/load,
resume, compare/suite/drift plumbing, generation options, the two export forms and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import headstart as hs
from headstart.errors import BadInput

PAIRS = [("what colour is the sky?", "blue"), ("what colour is grass?", "green"), ("name a fruit.", "an apple"),
         ("translate cat:", "chat"), ("translate dog:", "chien"), ("say hello:", "hello there!")]
FAST = {"epochs": 10, "batch_size": 8, "patience": 50, "eval_every": 1.0}
LR = {"lora": 2e-2, "dora": 2e-2, "qlora": 2e-2, "adapter": 1e-2, "finetune": 1e-2, "scratch": 1e-2}
TASK = {"samples": 2, "max_new_tokens": 8}


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Path:
    from headstart.backbones.testing import tiny_llama_model

    return tiny_llama_model(tmp_path_factory.mktemp("llm") / "tiny-llama")


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    """Six instructions with fixed replies, ten times each (the test split holds the same ones)."""
    path = tmp_path_factory.mktemp("gen-data") / "toy.json"
    path.write_text(json.dumps([{"instruction": q, "output": a} for q, a in PAIRS] * 10))
    return path


def adapt(toy, llama, method, tmp_path, **options):
    opts = {} if method == "frozen" else {**FAST, "lr": LR[method], **options}
    return hs.adapt(toy, task="generation", backbone=str(llama), method=method, method_options=opts, out=tmp_path / "runs",
                    task_options=TASK)


@pytest.fixture(scope="module")
def trained(toy, llama, tmp_path_factory):
    return adapt(toy, llama, "lora", tmp_path_factory.mktemp("gen-runs"))


# -- data -------------------------------------------------------------------------------------


def test_the_schemas_become_the_same_conversations(tmp_path):
    from headstart.data.chat import load_chat

    alpaca = tmp_path / "a.json"
    alpaca.write_text(json.dumps([{"instruction": "add", "input": "1 2", "output": "3"}]))
    messages = tmp_path / "m.jsonl"
    messages.write_text(json.dumps({"messages": [{"role": "user", "content": "add\n\n1 2"},
                                                 {"role": "assistant", "content": "3"}]}) + "\n")
    sharegpt = tmp_path / "s.jsonl"
    sharegpt.write_text(json.dumps({"conversations": [{"from": "human", "value": "add\n\n1 2"},
                                                      {"from": "gpt", "value": "3"}]}) + "\n")
    pc = tmp_path / "p.jsonl"
    pc.write_text(json.dumps({"prompt": "add\n\n1 2", "completion": "3"}) + "\n")
    table = tmp_path / "t.csv"
    table.write_text('question,answer\n"add\n\n1 2",3\n')
    sets = [load_chat(alpaca), load_chat(messages), load_chat(sharegpt), load_chat(pc),
            load_chat(table, prompt_col="question", response_col="answer")]
    assert [s.schema for s in sets] == ["alpaca", "messages", "messages", "prompt-completion", "prompt-completion"]
    assert len({json.dumps(s.conversations) for s in sets}) == 1
    selfinstruct = tmp_path / "si.jsonl"
    selfinstruct.write_text(json.dumps({"instruction": "double", "instances": [{"input": "1", "output": "2"},
                                                                              {"input": "2", "output": "4"}]}) + "\n")
    assert len(load_chat(selfinstruct)) == 2


@pytest.mark.parametrize("records, needle", [
    ([{"instruction": "x", "output": "  "}], "record 1: empty output"),
    ([{"instruction": "x", "output": "y"}, {"instruction": "x"}], "record 2: no 'output' field"),
    ([{"messages": [{"role": "user", "content": "hi"}]}], "must end with the assistant reply"),
    ([{"messages": [{"role": "wizard", "content": "hi"}, {"role": "assistant", "content": "x"}]}], "role 'wizard'"),
    ([{"text": "hello"}], "cannot tell the schema"),
])
def test_bad_records_are_one_line_naming_the_record(tmp_path, cli, assert_bad_input, records, needle, llama):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(records))
    assert_bad_input(cli("adapt", path, "--task", "generation", "--backbone", llama, "--method", "lora"),
                     "bad.json", needle, out_dir=tmp_path / "runs")


def test_a_causal_lm_is_never_pooled_for_classification_and_generation_needs_one(llama, tiny_bert, train_csv, toy, cli,
                                                                              assert_bad_input):
    assert_bad_input(cli("adapt", train_csv, "--backbone", llama), "causal language model", "--task generation")
    assert_bad_input(cli("adapt", toy, "--task", "generation", "--backbone", tiny_bert, "--method", "lora"),
                     "needs a causal language model")


# -- templating and the loss ------------------------------------------------------------------


def test_supervised_tokens_are_exactly_the_replies(llama):
    from headstart.backbones import open_backbone
    from headstart.tasks.generation import encode_conversation, encode_prompt

    bb, _ = open_backbone(str(llama))
    tok = bb.tokenizer
    template = tok.chat_template
    conv = ({"role": "system", "content": "be brief"}, {"role": "user", "content": "say hello:"},
            {"role": "assistant", "content": "hello there!"}, {"role": "user", "content": "name a fruit."},
            {"role": "assistant", "content": "an apple"})
    enc = encode_conversation(tok, template, conv)
    supervised = [i for i, s in zip(enc.ids, enc.supervised, strict=True) if s]
    replies = [tok("hello there!<|im_end|>\n", add_special_tokens=False)["input_ids"],
               tok("an apple<|im_end|>\n", add_special_tokens=False)["input_ids"]]
    assert supervised == replies[0] + replies[1]
    assert tok.decode(list(enc.ids)) == tok.apply_chat_template(list(conv), tokenize=False)
    # the prompt generation continues is the training prefix, token for token
    assert encode_prompt(tok, template, conv[:-1]) == list(enc.ids[: enc.prompt_len])
    assert not any(enc.supervised[: enc.prompt_len][-3:]) and enc.supervised[enc.prompt_len]


def test_lm_head_on_supervised_positions_equals_the_models_own_logits(llama):
    from headstart.backbones import open_backbone
    from headstart.tasks.generation import CausalLMModel, _collate, encode_conversation, token_nll

    bb, _ = open_backbone(str(llama))
    rows = [encode_conversation(bb.tokenizer, bb.tokenizer.chat_template,
                                ({"role": "user", "content": q}, {"role": "assistant", "content": a})) for q, a in PAIRS[:3]]
    batch = _collate(rows, bb.tokenizer.pad_token_id)
    model = CausalLMModel(bb).eval()
    with torch.no_grad():
        sums, counts = token_nll(model, *model(batch))
        logits = bb.module(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        ref = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch["target"], reduction="none",
                                                ignore_index=-100).sum(1)
    assert torch.allclose(sums, ref, atol=1e-4)
    assert counts.tolist() == [r.supervised_count for r in rows]


def test_a_base_without_a_chat_template_needs_one_named(toy, tmp_path, cli, assert_bad_input):
    from headstart.backbones.testing import tiny_llama_model

    bare = tiny_llama_model(tmp_path / "bare", chat_template=False)
    assert_bad_input(cli("adapt", toy, "--task", "generation", "--backbone", bare, "--method", "frozen"),
                     "has no chat template", "--task-set template=chatml")
    run = hs.adapt(toy, task="generation", backbone=str(bare), method="frozen", out=tmp_path / "runs",
                   task_options={"template": "plain", "samples": 0, "max_new_tokens": 2})
    assert run.manifest["task_info"]["template"] == "plain"


def test_overlong_examples_are_truncated_and_counted_or_refused(tmp_path, llama, cli, assert_bad_input):
    path = tmp_path / "long.json"
    path.write_text(json.dumps([{"instruction": q, "output": a} for q, a in PAIRS] * 5
                               + [{"instruction": "count to three: " * 30, "output": "one two three"}]))
    assert_bad_input(cli("adapt", path, "--task", "generation", "--backbone", llama, "--method", "lora",
                         "--task-set", "max_length=40", "--task-set", "overlong=refuse", "--val-fraction", "0.1"),
                     "long.json: record 31", "more than max_length 40")
    assert_bad_input(cli("adapt", path, "--task", "generation", "--backbone", llama, "--task-set", "max_len=4"),
                     "no option 'max_len'")
    from headstart.backbones import open_backbone
    from headstart.data.chat import load_chat
    from headstart.tasks.generation import Generation, GenerationOptions

    bb, _ = open_backbone(str(llama))
    kept, counts = Generation().encode_set(bb, load_chat(path), GenerationOptions(max_length=40))
    assert counts["truncated"] == 1 and counts["dropped"] == 1 and len(kept) == 30
    wordy = tmp_path / "wordy.json"  # every reply runs past max_length: each example is truncated, none dropped
    wordy.write_text(json.dumps([{"instruction": q, "output": "one two three " * 20} for q, _ in PAIRS] * 3))
    run = hs.adapt(wordy, task="generation", backbone=str(llama), method="lora", out=tmp_path / "runs",
                   method_options={"epochs": 1}, task_options={"max_length": 40, "samples": 0, "max_new_tokens": 2})
    prep = run.manifest["method"]["fit"]["data_prep"]
    assert prep["max_length"] == 40 and prep["truncated"] == prep["examples"] == run.manifest["data"]["split"]["train"]
    assert run.manifest["metrics"]["test"]["summary"]["truncated"] == run.manifest["data"]["split"]["test"]
    assert 0 < prep["supervised_tokens"] < prep["train_tokens"]


# -- learning, save/load, resume --------------------------------------------------------------


@pytest.mark.parametrize("method", ["lora", "finetune"])
def test_learns_a_toy_mapping(method, toy, llama, tmp_path):
    run = adapt(toy, llama, method, tmp_path)
    s = run.manifest["metrics"]["test"]["summary"]
    history = run.manifest["method"]["fit"]["history"]
    assert history[0]["val_perplexity"] > 100 and s["perplexity"] < 3, s
    assert s["base_perplexity"] > 100 and s["base_bits_per_byte"] > s["bits_per_byte"]  # the base beside the run
    assert s["exact_match"] == 1.0 and s["rouge_l"] == 1.0
    samples = json.loads((run.path / "metrics.json").read_text())["test"]["samples"]
    assert len(samples) == 2 and samples[0]["adapted"] == samples[0]["reference"] != samples[0]["base"]



@pytest.mark.parametrize("method", ["dora", "qlora", "adapter", "scratch"])
def test_every_method_trains_through_the_one_trainer(method, toy, llama, tmp_path):
    if method == "qlora":
        pytest.importorskip("bitsandbytes")
    run = adapt(toy, llama, method, tmp_path, epochs=2)
    fit = run.manifest["method"]["fit"]
    assert fit["steps"] == 12 and fit["best_val_perplexity"] < fit["history"][0]["val_perplexity"]
    again = hs.load(run.path)
    assert again.generate(PAIRS[0][0], max_new_tokens=4) == run.generate(PAIRS[0][0], max_new_tokens=4)


def test_save_load_generates_identically_and_other_weights_are_refused(trained, llama, tmp_path):
    from headstart.errors import RunIntegrityError

    prompts = [q for q, _ in PAIRS]
    before = trained.generate(prompts, max_new_tokens=6)
    assert before == [a for _, a in PAIRS]
    assert hs.load(trained.path).generate(prompts, max_new_tokens=6) == before
    moved = tmp_path / "other"
    shutil.copytree(llama, moved)
    from headstart.backbones.testing import tiny_llama_model

    tiny_llama_model(moved, seed=1)
    manifest = json.loads((trained.path / "manifest.json").read_text())
    manifest["backbone"]["name"] = str(moved)
    copy = tmp_path / "run"
    shutil.copytree(trained.path, copy)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RunIntegrityError):
        hs.load(copy).generate("x")


def test_resume_reaches_the_same_weights(toy, llama, tmp_path):
    from safetensors.torch import load_file

    full = adapt(toy, llama, "lora", tmp_path / "a", epochs=3)

    def stop_at_5(step):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        hs.adapt(toy, task="generation", backbone=str(llama), method="lora", out=tmp_path / "b" / "runs",
                 method_options={**FAST, "lr": LR["lora"], "epochs": 3}, task_options=TASK, _on_step=stop_at_5)
    partial = next((tmp_path / "b" / "runs" / ".partial").iterdir()).name
    resumed = hs.adapt(None, resume=partial, out=tmp_path / "b" / "runs")
    a, b = load_file(full.path / "weights.safetensors"), load_file(resumed.path / "weights.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- decoding options -------------------------------------------------------------------------


def test_sampling_is_seeded_and_stop_sequences_cut(trained):
    a = trained.generate(PAIRS[2][0], temperature=1.5, seed=3, max_new_tokens=6)
    assert a == trained.generate(PAIRS[2][0], temperature=1.5, seed=3, max_new_tokens=6)
    assert trained.generate(PAIRS[5][0], stop=[" there"], max_new_tokens=6) == "hello"
    messages = [{"role": "user", "content": PAIRS[1][0]}]
    assert trained.generate(messages, max_new_tokens=6) == "green"
    with pytest.raises(BadInput, match="--temperature"):
        trained.generate("x", temperature=-1)


# -- shared features on generation runs -------------------------------------------------------


def test_compare_suite_and_drift_work_on_generation_runs(trained, toy, llama, tmp_path, cli):
    zero = adapt(toy, llama, "frozen", tmp_path)
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"name: toy\ntask: generation\ndatasets:\n  - {{name: all, path: {toy}}}\n"
                     "metrics: [perplexity, rouge_l]\ngates:\n  - rouge_l >= 0.9\n  - perplexity <= 5\n")
    ok = cli("eval", trained.path, "--suite", suite, "--json")
    assert ok.rc == 0, ok
    cells = ok.json()["datasets"]["all"]["slices"]["all"]
    assert cells["rouge_l"]["value"] == 1.0 and cells["perplexity"]["value"] < 5
    bad = cli("eval", zero.path, "--suite", suite, "--json")
    assert bad.rc == 1, bad
    gated = cli("eval", trained.path, toy, "--max", "perplexity=5")
    assert gated.rc == 0 and "ROUGE-L 1.0000" in gated.out and "check perplexity <= 5" in gated.out and ": passed" in gated.out, gated
    failed = cli("eval", zero.path, toy, "--max", "perplexity=5")
    assert failed.rc == 1 and "is above --max perplexity=5" in failed.err, failed
    # drift to a base with another tokenizer (vocabulary 280, not 320): decided on bits per byte,
    # which does not depend on the tokenizer (per-token perplexity would not be comparable)
    from headstart.backbones.testing import tiny_llama_model

    other = tiny_llama_model(tmp_path / "other-vocab", vocab=280, seed=2)
    d = cli("drift", zero.path, "--base", other, "--out", tmp_path / "runs", "--json")
    assert d.rc in (0, 1), d
    checks = {c["metric"]: c for c in d.json()["checks"]}
    assert set(checks) == {"bits_per_byte", "rouge_l", "chrf"} and checks["bits_per_byte"]["n"] == 12
    assert checks["bits_per_byte"]["test"] == "paired bootstrap over examples"


# -- export -----------------------------------------------------------------------------------


def test_merged_export_loads_in_transformers_and_generates_what_the_run_does(trained, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    record = hs.export(trained, tmp_path / "merged", merge=True)
    assert record["form"] == "causal-lm" and record["max_abs_logit_diff"] < 1e-3
    assert record["pipeline_same_reply"] == record["pipeline_checked"] > 0
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert not any("lora" in n for n, _ in model.named_parameters())
    tok = AutoTokenizer.from_pretrained(tmp_path / "merged")
    gen = pipeline("text-generation", model=model, tokenizer=tok, device="cpu")
    out = gen([{"role": "user", "content": PAIRS[3][0]}], max_new_tokens=6, do_sample=False)
    assert out[0]["generated_text"][-1]["content"].strip() == PAIRS[3][1]


def test_unmerged_export_is_a_peft_adapter_equal_to_the_merged_model(trained, tmp_path):
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    record = hs.export(trained, tmp_path / "adapter")
    assert record["form"] == "peft-adapter" and record["checked_with"] == "PeftModel.from_pretrained"
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    base = AutoModelForCausalLM.from_pretrained(record["base_folder"])
    adapted = peft.PeftModel.from_pretrained(base, str(tmp_path / "adapter")).eval()
    hs.export(trained, tmp_path / "merged", merge=True)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    ids = torch.tensor([[1, 5, 9, 12, 20]])
    with torch.no_grad():
        assert torch.allclose(adapted(input_ids=ids).logits, merged(input_ids=ids).logits, atol=1e-4)


# -- the command line -------------------------------------------------------------------------


def test_cli_adapt_and_generate_human_and_json(toy, llama, cli, tmp_path):
    r = cli("adapt", toy, "--task", "generation", "--backbone", llama, "--method", "lora", "--out", tmp_path / "runs",
            *sum((["--set", f"{k}={v}"] for k, v in {**FAST, "lr": LR["lora"]}.items()), []),
            "--task-set", "samples=1", "--task-set", "max_new_tokens=6")
    assert r.rc == 0, r
    assert any(line.strip().startswith("test perplexity ") and "ROUGE-L" in line for line in r.out.splitlines()), r.out
    run_path = r.out.splitlines()[-1].removeprefix("saved to ").strip()
    human = cli("generate", run_path, PAIRS[4][0], "--max-new-tokens", "6")
    assert human.rc == 0 and human.out == PAIRS[4][1] + "\n", human
    js = cli("generate", run_path, PAIRS[4][0], "--json", "--max-new-tokens", "6")
    assert js.rc == 0 and js.json()["text"] == PAIRS[4][1] and "run" in js.json()["by"]
    piped = cli("generate", run_path, "-", "--max-new-tokens", "6", stdin=PAIRS[1][0])
    assert piped.out.strip() == PAIRS[1][1]
    zero = cli("generate", llama, "hi", "--json", "--max-new-tokens", "3")
    assert zero.rc == 0 and zero.json()["by"]["backbone"] == str(Path(llama).resolve())


def test_cli_generate_refuses_bad_input(trained, cli, assert_bad_input, train_csv, tiny_bert):
    assert_bad_input(cli("generate", trained.path, "hi", "--max-new-tokens", "0"), "--max-new-tokens")
    assert_bad_input(cli("generate", trained.path, "   "), "empty prompt")
    assert_bad_input(cli("generate", tiny_bert, "hi"), "needs a causal language model")


def test_cli_compare_with_task_options_tabulates_perplexity_and_rouge(toy, llama, cli, tmp_path):
    r = cli("compare", toy, "--task", "generation", "--backbones", llama, "--methods", "frozen,lora",
            "--set", "lora.epochs=10", "--set", f"lora.lr={LR['lora']}", "--set", "lora.patience=50",
            "--task-set", "samples=0", "--task-set", "max_new_tokens=8", "--out", tmp_path / "cmp",
            "--runs-out", tmp_path / "runs")
    assert r.rc == 0, r
    assert "test perplexity [95%]" in r.out and "ROUGE-L [95%]" in r.out and "12 test examples" in r.out, r.out
    frozen, lora = (line for line in r.out.splitlines() if line.strip().lstrip("*").split()[:1] in (["frozen"], ["lora"]))
    assert lora.lstrip().startswith("*")  # the lower perplexity is on the frontier
    bad = cli("compare", toy, "--task", "generation", "--backbones", llama, "--methods", "lora", "--task-set", "max_len=3")
    assert bad.rc == 2 and "no option 'max_len'" in bad.err


def test_default_base_follows_the_data_language_and_a_catalog_base_may_name_its_template(tmp_path, llama):
    from headstart.backbones.testing import tiny_llama_model
    from headstart.catalog import CATALOG
    from headstart.tasks.generation import CHATML, Generation, chat_template

    zh = tmp_path / "zh.json"
    zh.write_text(json.dumps([{"instruction": "用一句话总结这张工单。", "output": "客户要求退款。"}] * 4, ensure_ascii=False),
                  encoding="utf-8")
    en = tmp_path / "en.json"
    en.write_text(json.dumps([{"instruction": "Summarise the ticket in one line.", "output": "The customer wants a refund."}] * 4))
    assert Generation().default_backbone(zh) == "gemma3-270m" and Generation().default_backbone(en) == "smollm2-135m-instruct"
    assert CATALOG["gemma3-270m"].chat_template == "gemma" and CATALOG["gemma3-270m"].languages == ("multi",)
    from transformers import AutoTokenizer

    bare = AutoTokenizer.from_pretrained(tiny_llama_model(tmp_path / "bare", chat_template=False))
    assert chat_template(bare, "auto", "bare", "chatml") == CHATML  # what the catalog entry names
    with pytest.raises(BadInput, match="no chat template"):
        chat_template(bare, "auto", "bare", None)


def test_cli_export_prints_what_it_checked(trained, cli, tmp_path):
    merged = cli("export", trained.path, "--out", tmp_path / "m", "--merge")
    assert merged.rc == 0, merged
    assert "exported run" in merged.out and "max |logit_export - logit_run|" in merged.out
    assert "pipeline('text-generation') replied as the run to" in merged.out
    adapter = cli("export", trained.path, "--out", tmp_path / "a", "--json")
    assert adapter.rc == 0 and adapter.json()["form"] == "peft-adapter", adapter


def test_runs_shows_base_and_adapted_samples_side_by_side(trained, cli):
    r = cli("runs", trained.path, "--store", trained.store.path)
    assert r.rc == 0, r
    assert "samples (base model | adapted), 2 test prompts:" in r.out
    lines = r.out.splitlines()
    adapted = [line.split("adapted", 1)[1].strip() for line in lines if line.strip().startswith("adapted ")]
    references = [line.split("reference", 1)[1].strip() for line in lines if line.strip().startswith("reference ")]
    assert adapted == references and len(adapted) == 2


def test_checkpointing_recomputes_the_same_training_and_is_qloras_default(toy, llama, tmp_path):
    from safetensors.torch import load_file

    plain = adapt(toy, llama, "lora", tmp_path / "a", epochs=2)
    recomputed = adapt(toy, llama, "lora", tmp_path / "b", epochs=2, checkpointing=True)
    assert recomputed.manifest["method"]["config"]["checkpointing"] is True
    a, b = load_file(plain.path / "weights.safetensors"), load_file(recomputed.path / "weights.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    if __import__("importlib").util.find_spec("bitsandbytes") is not None:
        q = adapt(toy, llama, "qlora", tmp_path / "c", epochs=1)
        assert q.manifest["method"]["config"]["checkpointing"] is True
    with pytest.raises(BadInput, match="checkpointing must be true or false"):
        adapt(toy, llama, "lora", tmp_path / "d", checkpointing="yes")


def test_a_language_mismatch_warning_names_a_multilingual_llm():
    from headstart.catalog import CATALOG
    from headstart.data import Dataset
    from headstart.plan.profile import language_warning

    texts = Dataset(inputs=["用一句话总结这张工单。客户要求退款。"] * 10, labels=None, modality="text", source="zh.json")
    message = language_warning(texts, CATALOG["smollm2-135m-instruct"])
    assert "expect poor replies" in message and "--backbone gemma3-270m" in message
    assert "linear-probe" not in message and "majority class" not in message


def test_served_over_http_replies_as_the_run_does(trained, http_server):
    """`headstart serve` on a generation run: POST /v1/generate gives run.generate's replies, one
    message list counts as one prompt, and bad sampling options are a 422 naming the field."""
    import httpx

    from headstart.serve.app import ServeSettings
    from headstart.serve.models import ServedRun

    prompts = [PAIRS[0][0], PAIRS[1][0]]
    with http_server([ServedRun(trained)], ServeSettings(max_wait_ms=1)) as s:
        r = httpx.post(s.url + "/v1/generate", json={"prompts": prompts, "max_new_tokens": 6}, timeout=60)
        assert r.status_code == 200, r.text
        assert [x["text"] for x in r.json()["replies"]] == trained.generate(prompts, max_new_tokens=6)
        messages = [{"role": "user", "content": PAIRS[0][0]}]
        one = httpx.post(s.url + "/v1/generate", json={"prompts": messages, "max_new_tokens": 6}, timeout=60).json()
        assert [x["text"] for x in one["replies"]] == [trained.generate(messages, max_new_tokens=6)]
        bad = httpx.post(s.url + "/v1/generate", json={"prompts": "x", "temperature": -1}, timeout=60)
        assert bad.status_code == 422 and bad.json()["field"] == "temperature"
        role = httpx.post(s.url + "/v1/generate", json={"prompts": [{"role": "robot", "content": "x"}]}, timeout=60)
        assert role.status_code == 422 and "role" in role.json()["field"]
