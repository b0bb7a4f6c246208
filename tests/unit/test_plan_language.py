"""The warning `adapt` gives when the data's language is not one the backbone was trained for
(plan.profile.language_warning), and the CLI printing it."""

from __future__ import annotations

from dataclasses import replace

import pytest

import headstart as hs
from headstart.catalog import CATALOG, resolve
from headstart.data import Dataset
from headstart.plan.profile import covers, language_warning

THAI = ["สินค้าดีมาก ส่งเร็ว", "ไม่ชอบเลย ของเสีย", "บริการดี ประทับใจ", "แย่มาก ไม่แนะนำ"] * 10
ENGLISH = ["the card arrived and it works", "where is my refund for this order", "i love the app"] * 10
GREEK = ["το προϊόν είναι πολύ καλό", "δεν μου άρεσε καθόλου"] * 10


def _texts(texts: list[str]) -> Dataset:
    return Dataset(inputs=texts, labels=["a", "b"] * (len(texts) // 2), modality="text", source="reviews.csv")


def test_thai_data_on_an_english_backbone_names_the_multilingual_one():
    message = language_warning(_texts(THAI), resolve("minilm-l6"))
    assert message is not None
    assert "Thai 100%" in message and "'minilm-l6'" in message and "trained for en only" in message
    assert "--backbone use-multilingual (frozen features: --method linear-probe)" in message
    assert language_warning(_texts(THAI), resolve("use-multilingual")) is None  # it lists Thai


def test_no_warning_for_covered_languages_or_backbones_without_a_record(tiny_bert):
    assert language_warning(_texts(ENGLISH), resolve("minilm-l6")) is None
    assert language_warning(_texts(ENGLISH + THAI[:10]), resolve("minilm-l6")) is None  # a minority of Thai
    assert language_warning(_texts(THAI), resolve(str(tiny_bert))) is None  # a local folder records no languages
    images = Dataset(inputs=["a.png", "b.png"], labels=["x", "y"], modality="image", source="photos")
    assert language_warning(images, resolve("efficientnet-lite0")) is None


def test_a_language_no_catalog_backbone_covers_says_so(monkeypatch):
    assert "use-multilingual" in language_warning(_texts(GREEK), resolve("minilm-l6"))  # 'multi' covers any
    # With a multilingual entry that lists its languages (and not Greek), none is named.
    listed = ("ar", "zh", "en", "fr", "de", "it", "ja", "ko", "nl", "pl", "pt", "es", "th", "tr", "ru")
    for name, spec in list(CATALOG.items()):
        if "multi" in spec.languages:
            monkeypatch.setitem(CATALOG, name, replace(spec, languages=listed))
    message = language_warning(_texts(GREEK), resolve("minilm-l6"))
    assert message is not None and "Greek" in message
    assert "no catalog backbone covers them" in message and "hf:<hub id>" in message
    assert "use-multilingual" in language_warning(_texts(THAI), resolve("minilm-l6"))


def test_other_latin_languages_are_covered_by_a_multilingual_list():
    assert covers(resolve("use-multilingual"), "other-latin") and not covers(resolve("minilm-l6"), "other-latin")
    assert covers(replace(resolve("minilm-l6"), languages=("en", "es")), "other-latin")
    assert not covers(replace(resolve("minilm-l6"), languages=("en", "ja")), "other-latin")
    assert covers(resolve("use-multilingual"), "th")  # 'multi'


@pytest.fixture
def thai_csv(tmp_path, data_helpers):
    rows, write = data_helpers
    return write(tmp_path / "thai.csv", [(f"{THAI[i % 4]} {text}", label) for i, (text, label) in enumerate(rows(40, seed=5))])


@pytest.fixture
def english_only_tiny(tiny_bert, monkeypatch):
    """The tiny BERT as a catalog entry trained for English only."""
    monkeypatch.setitem(CATALOG, "tiny-en", replace(resolve(str(tiny_bert)), name="tiny-en", languages=("en",)))
    return "tiny-en"


def test_adapt_warns_and_still_runs(tmp_path, thai_csv, english_only_tiny):
    with pytest.warns(UserWarning, match="pass --backbone use-multilingual") as caught:
        run = hs.adapt(thai_csv, backbone=english_only_tiny, out=tmp_path / "runs")
    assert sum("Thai" in str(w.message) for w in caught) == 1
    assert run.manifest["backbone"]["name"] == "tiny-en"


def test_the_cli_prints_the_warning(cli, tmp_path, thai_csv, english_only_tiny, data_helpers):
    r = cli("adapt", thai_csv, "--backbone", english_only_tiny, "--out", tmp_path / "runs")
    assert r.rc == 0, r.err
    assert any(line.startswith("warning: ") and "use-multilingual" in line for line in r.err.splitlines())

    rows, write = data_helpers
    english = write(tmp_path / "en.csv", rows(40, seed=6))
    r = cli("adapt", english, "--backbone", english_only_tiny, "--out", tmp_path / "runs")
    assert r.rc == 0, r.err
    assert "use-multilingual" not in r.err
