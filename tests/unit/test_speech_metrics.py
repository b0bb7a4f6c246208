"""WER and CER: hand-computed alignments, the normaliser, agreement with jiwer, bootstrap over utterances."""

from __future__ import annotations

import math

import numpy as np
import pytest

from headstart.evaluate.bootstrap import bootstrap_ci
from headstart.evaluate.speech import (
    CER,
    NORMALIZER_DOC,
    NORMALIZER_VERSION,
    WER,
    corpus_cer,
    corpus_wer,
    edit_counts,
    error_arrays,
    error_rate,
    error_rate_interval,
    normalize_transcript,
    ratio_statistic,
    utterance_errors,
)
from headstart.evaluate.stats import paired_bootstrap

VOCAB = "the a cat dog sat on mat ran fast slow red blue it is was not don't we they".split()


def random_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Reference/hypothesis pairs with random substitutions, deletions and insertions (some empty)."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n):
        ref = list(rng.choice(VOCAB, size=int(rng.integers(0, 12))))
        hyp = []
        for word in ref:
            u = rng.random()
            if u < 0.1:
                continue  # deletion
            hyp.append(str(rng.choice(VOCAB)) if u < 0.25 else word)
            if rng.random() < 0.08:
                hyp.append(str(rng.choice(VOCAB)))  # insertion
        if rng.random() < 0.03:
            hyp = []
        pairs.append((" ".join(ref), " ".join(hyp)))
    return pairs


# -- alignment by hand -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "hyp", "counts"),
    [
        ("the cat sat", "the cat sat", (0, 0, 0, 3)),
        ("the cat sat", "the bat sat", (1, 0, 0, 3)),
        ("the cat sat", "the sat", (0, 1, 0, 3)),
        ("the cat sat", "the cat sat down", (0, 0, 1, 3)),
        ("the cat sat", "", (0, 3, 0, 3)),
        ("", "hello there", (0, 0, 2, 0)),
        ("", "", (0, 0, 0, 0)),
        ("a b c d", "b c d e", (0, 1, 1, 4)),
    ],
)
def test_edit_counts_by_hand(ref, hyp, counts):
    assert edit_counts(ref.split(), hyp.split()) == counts


def test_edit_counts_on_characters():
    assert sum(edit_counts("kitten", "sitting")[:3]) == 3  # k->s, e->i, +g
    assert edit_counts("kitten", "sitting") == (2, 0, 1, 6)
    assert edit_counts("abc", "abc") == (0, 0, 0, 3)


def test_utterance_rates_by_hand():
    r = utterance_errors("The cat sat.", "the bat sat")
    assert (r["wer_errors"], r["wer_words"], r["wer"]) == (1, 3, pytest.approx(1 / 3))
    assert (r["cer_errors"], r["cer_chars"], r["cer"]) == (1, 11, pytest.approx(1 / 11))  # "the cat sat": 11 chars
    empty_hyp = utterance_errors("the cat", "")
    assert (empty_hyp["wer"], empty_hyp["cer"]) == (1.0, 1.0)
    assert utterance_errors("", "")["wer"] == 0.0
    empty_ref = utterance_errors("", "hello there")
    assert (empty_ref["wer_errors"], empty_ref["wer_words"], empty_ref["wer"]) == (2, 0, 2.0)  # errors / max(N, 1)
    assert empty_ref["cer"] == 11.0
    inserted = utterance_errors("yes", "yes yes yes")
    assert inserted["wer"] == 2.0  # error rates are unbounded above


def test_corpus_rate_is_ratio_of_sums_not_mean_of_rates():
    records = [utterance_errors("one", "two"), utterance_errors("a b c d e f g h i", "a b c d e f g h i")]
    assert corpus_wer(records) == pytest.approx(1 / 10)
    assert np.mean([r["wer"] for r in records]) == pytest.approx(0.5)
    assert corpus_wer([utterance_errors("", "a b")]) == 2.0  # all-empty references: errors / 1
    assert corpus_wer([utterance_errors("", "a b"), utterance_errors("x y", "x y")]) == 1.0  # 2 errors / 2 words
    assert ratio_statistic(np.array([1, 2]), np.array([3, 0])) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same length"):
        ratio_statistic(np.array([1, 2]), np.array([3]))


def test_metric_specs():
    assert (WER.name, WER.higher_is_better, WER.bounds) == ("wer", False, (0.0, math.inf))
    assert (CER.name, CER.higher_is_better, CER.bounds) == ("cer", False, (0.0, math.inf))


# -- normaliser ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Seven.", "seven"),
        ("7", "seven"),
        ("It's 3 PM!", "it's three pm"),
        ("It's 3 p.m.", "it's three pm"),
        ("I DON'T know…", "i don't know"),
        ("“Don’t” stop", "don't stop"),
        ("well-known  --  e-mail", "well known e mail"),
        ("42", "forty two"),
        ("2024", "two thousand twenty four"),
        ("105", "one hundred five"),
        ("1,000,000 people", "one million people"),
        ("3.14", "three point one four"),
        ("the 21st and 2nd", "the twenty first and second"),
        ("the 1990s", "the one thousand nine hundred nineties"),
        ("5% off", "five percent off"),
        ("agent 007", "agent zero zero seven"),
        ("mp3", "mp three"),
        ("U.S.A.", "usa"),
        ("  hello,\tworld  ", "hello world"),
        ("'quoted' rock 'n' roll", "quoted rock n roll"),
        ("", ""),
    ],
)
def test_normalize_transcript(text, expected):
    assert normalize_transcript(text) == expected
    assert normalize_transcript(expected) == expected  # idempotent


def test_normalised_texts_score_zero():
    assert utterance_errors("Seven.", "7")["wer"] == 0.0
    assert utterance_errors("It's 3 PM!", "its three pm")["wer_errors"] == 1  # contractions are not expanded
    assert utterance_errors("Seven.", "7", normalize=False)["wer"] == 1.0


def test_normalizer_is_recorded():
    assert NORMALIZER_VERSION == "en-1"
    assert "lowercase" in NORMALIZER_DOC and "\n" not in NORMALIZER_DOC


# -- agreement with jiwer --------------------------------------------------------------------------


def test_agrees_with_jiwer_per_utterance_and_corpus():
    jiwer = pytest.importorskip("jiwer")
    pairs = random_pairs(200)
    refs, hyps = [r for r, _ in pairs], [h for _, h in pairs]
    records = [utterance_errors(r, h, normalize=False) for r, h in pairs]
    for (ref, hyp), rec in zip(pairs, records, strict=True):
        assert rec["wer"] == pytest.approx(jiwer.wer(ref, hyp)), (ref, hyp)
        assert rec["cer"] == pytest.approx(jiwer.cer(ref, hyp)), (ref, hyp)
        if ref:
            out = jiwer.process_words(ref, hyp)
            assert rec["wer_errors"] == out.substitutions + out.deletions + out.insertions
    assert corpus_wer(records) == pytest.approx(jiwer.wer(refs, hyps))
    assert corpus_cer(records) == pytest.approx(jiwer.cer(refs, hyps))


def test_agrees_with_jiwer_on_normalised_text():
    jiwer = pytest.importorskip("jiwer")
    pairs = [("Hello, World! It's 3 PM.", "hello word its three pm"), ("The 2nd of May, 2024.", "the second of may 2024"),
             ("Don't go - stay.", "dont go stay")]
    records = [utterance_errors(r, h) for r, h in pairs]
    refs = [normalize_transcript(r) for r, _ in pairs]
    hyps = [normalize_transcript(h) for _, h in pairs]
    assert corpus_wer(records) == pytest.approx(jiwer.wer(refs, hyps))
    assert corpus_cer(records) == pytest.approx(jiwer.cer(refs, hyps))


# -- bootstrap over utterances ---------------------------------------------------------------------


def test_bootstrap_interval_of_corpus_wer():
    records = [utterance_errors(r, h) for r, h in random_pairs(200, seed=1)]
    lengths, errors = error_arrays(records, "wer")
    estimate, low, high = bootstrap_ci(lengths, errors, error_rate, n_resamples=500, seed=0)
    assert estimate == pytest.approx(corpus_wer(records))
    assert low < estimate < high and high - low < 0.2
    assert error_rate_interval(records, "wer", n_resamples=500, seed=0) == (estimate, low, high)
    # the vectorised statistic equals the one-sample statistic on every resample
    idx = np.random.default_rng(3).integers(0, len(records), size=(20, len(records)))
    looped = [error_rate(lengths[i], errors[i]) for i in idx]
    np.testing.assert_allclose(error_rate.batch(lengths, errors, idx), looped)
    cer_estimate, cer_low, cer_high = error_rate_interval(records, "cer", n_resamples=200)
    assert cer_estimate == pytest.approx(corpus_cer(records)) and cer_low <= cer_estimate <= cer_high
    with pytest.raises(ValueError, match="choose from wer, cer"):
        error_arrays(records, "bleu")


def test_paired_bootstrap_of_two_systems():
    pairs = random_pairs(150, seed=2)
    perfect = [utterance_errors(r, r) for r, _ in pairs]
    noisy = [utterance_errors(r, h) for r, h in pairs]
    lengths, errors_old = error_arrays(noisy)
    same_lengths, errors_new = error_arrays(perfect)
    np.testing.assert_array_equal(lengths, same_lengths)  # same references, same lengths
    result = paired_bootstrap(lengths, errors_old, errors_new, error_rate, n_resamples=500, seed=0)
    assert result.old == pytest.approx(corpus_wer(noisy)) and result.new == 0.0
    assert result.ci[1] < 0 and result.p < 0.01
    same = paired_bootstrap(lengths, errors_old, errors_old, error_rate, n_resamples=200)
    assert same.delta == 0 and same.p == 1.0
