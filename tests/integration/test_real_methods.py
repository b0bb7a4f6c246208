"""Trained methods on the packaged all-MiniLM-L6-v2 and real data (../shared/data).

UCI sentiment sentences, amazon + yelp (2000 rows, 20% held out), one epoch each. Measured on
the development machine (2 CPU cores, bf16): the linear probe reaches 0.880-0.893; one epoch of
LoRA / QLoRA from the probe-initialised head keeps that level. Floors sit a few points below.
"""

from __future__ import annotations

import numpy as np
import pytest

import headstart as hs

from test_real_text import _uci_rows  # same folder (pytest puts it on sys.path)

pytestmark = pytest.mark.integration

ONE_EPOCH = {"epochs": 1, "eval_every": 0.5}


@pytest.fixture
def uci_train(shared_data, write_csv, tmp_path):
    rows = []
    for name in ("amazon_labelled.txt", "yelp_labelled.txt"):
        rows += _uci_rows(shared_data("uci_sentiment_sentences", name))
    return write_csv(tmp_path / "amazon_yelp.csv", ["text", "label"], rows)


def test_lora_on_real_data_exports_a_matching_hf_folder(minilm, uci_train, tmp_path):
    run = hs.adapt(uci_train, backbone="minilm-l6", method="lora", method_options=ONE_EPOCH, out=tmp_path / "runs")
    fit = run.manifest["method"]["fit"]
    assert run.metrics["test"]["summary"]["accuracy"] >= 0.85, fit
    assert fit["target_count"] == 36  # 6 blocks x (q, k, v, attention out, intermediate, output)
    assert fit["trainable_percent"] < 2.0
    assert fit["padded_token_ratio"] < 1.2  # length-bucketed batches

    from headstart.export import ExportedClassifier, export_run

    record = export_run(run, tmp_path / "export", merge=True)
    assert record["check"]["max_abs_prob_diff"] <= 1e-4
    probs = ExportedClassifier(tmp_path / "export").predict_proba(["Great product, works perfectly.", "Awful, it broke at once."])
    assert list(np.array(record["classes"])[probs.argmax(1)]) == ["1", "-1"]


def test_qlora_holds_the_base_in_four_bits(minilm, uci_train, tmp_path):
    pytest.importorskip("bitsandbytes", reason='qlora needs bitsandbytes: pip install "headstart[qlora]"')
    run = hs.adapt(uci_train, backbone="minilm-l6", method="qlora", method_options=ONE_EPOCH, out=tmp_path / "runs")
    fit = run.manifest["method"]["fit"]
    assert fit["base_weight_ratio"] <= 0.3, fit  # measured storage of the frozen body vs fp32
    assert run.metrics["test"]["summary"]["accuracy"] >= 0.85, fit
    again = hs.load(run.path).predict(["Great product, works perfectly."])
    assert again.labels == ["1"]
