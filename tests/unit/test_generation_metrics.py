"""Generation metrics: exact match, ROUGE-L (against rouge-score), chrF (against sacrebleu),
Unicode tokens, perplexity as a corpus ratio, bootstrap and paired tests over examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from headstart.evaluate.bootstrap import bootstrap_ci
from headstart.evaluate.generation import (
    GENERATION_METRICS,
    Perplexity,
    chrf,
    example_scores,
    exact_match,
    lcs_length,
    normalize_answer,
    perplexity,
    prediction_mean,
    rouge_l,
    rouge_tokens,
)
from headstart.evaluate.stats import paired_bootstrap

PAIRS = [
    ("The cat sat on the mat.", "The cat sat on the mat."),
    ("The cat sat on the mat.", "the cat sat on a mat"),
    ("The cat sat on the mat.", "A dog lay on the rug!"),
    ("police killed the gunman", "police kill the gunman"),
    ("police killed the gunman", "the gunman kill police"),
    ("the the the the", "the"),
    ("the", "the the the the"),
    ("a b c d e f g", "g f e d c b a"),
    ("a b a b a b", "b a b a b a"),
    ("It's 3:45 p.m. on 2024-01-05, isn't it?", "it is 3 45 pm on 2024 01 05 is not it"),
    ("Revenue rose 12.5% to $4.2 billion in Q3.", "Q3 revenue: up 12.5 percent, $4.2bn."),
    ("hello, world!!!", "Hello World"),
    ("Don't stop me now", "dont stop me now"),
    ("She sells sea-shells by the sea-shore.", "she sells seashells by the seashore"),
    ("1 2 3 4 5 6 7 8 9 10", "10 9 8 7 6 5 4 3 2 1"),
    ("The quick brown fox jumps over the lazy dog", "A quick brown dog jumps over the lazy fox"),
    ("Paris is the capital of France.", "The capital of France is Paris."),
    ("x", "x"),
    ("x", "y"),
    ("ab", "ab"),
    ("abc", "abd"),
    ("New York (NY) -- the Big Apple", "New York, NY: the big apple"),
    ("The answer is 42.", "42"),
    ("I love machine learning and deep learning.", "I love deep learning and machine learning."),
    ("buffalo buffalo buffalo buffalo buffalo buffalo buffalo buffalo", "buffalo buffalo"),
    ("CamelCaseWord and snake_case_word", "camelcaseword and snake case word"),
    ("e-mail me at john.doe@example.com", "email me at john doe at example dot com"),
    ("tabs\tand\nnewlines   and  spaces", "tabs and newlines and spaces"),
    ("  leading and trailing  ", "leading and trailing"),
    ("The meeting is at 10am; bring the Q2 report.", "meeting at 10 am, bring Q2 report"),
    ("What is 2+2? It is 4.", "2 + 2 = 4"),
    ("A B C", "a b c"),
    ("completely different words here", "nothing in common at all"),
]
"""Varied English pairs: punctuation, case, repeats, numbers, reorderings, whitespace."""

EMPTY_PAIRS = [("", ""), ("", "something"), ("something", ""), ("...", "!!!"), ("   ", "a")]


# -- exact match -----------------------------------------------------------------------------------


def test_normalize_answer_rules():
    assert normalize_answer("  The  Answer:\tParis! ") == "the answer paris"
    assert normalize_answer("don't") == "dont"
    assert normalize_answer("ＨＥＬＬＯ，\u3000ｗｏｒｌｄ") == "hello world"  # full-width forms and ideographic space via NFKC
    assert normalize_answer("「東京」。") == "東京"  # CJK punctuation is category P*
    assert normalize_answer("Straße") == "strasse"  # casefold, not lower
    assert normalize_answer("5 + 3 = $8") == "5 + 3 = $8"  # symbols (S*) are kept
    text = " ¿Qué  PASÓ?!  "
    assert normalize_answer(normalize_answer(text)) == normalize_answer(text) == "qué pasó"


def test_exact_match():
    assert exact_match("Paris", "paris.") == 1.0
    assert exact_match("New  York", "new york!") == 1.0
    assert exact_match("Paris", "Paris, France") == 0.0
    assert exact_match("", "") == 1.0
    assert exact_match("", "...") == 1.0  # only punctuation normalises to empty
    assert exact_match("42", "forty-two") == 0.0


# -- ROUGE-L ---------------------------------------------------------------------------------------


def test_lcs_hand_computed():
    assert lcs_length("ABCBDAB", "BDCABA") == 4  # CLRS's example: BCBA
    assert lcs_length("abc", "") == 0
    assert lcs_length("abc", "xyz") == 0
    assert lcs_length("aaaa", "aa") == 2
    assert lcs_length(["police", "killed", "the", "gunman"], ["the", "gunman", "kill", "police"]) == 2


def test_rouge_l_hand_computed():
    # LCS("police killed the gunman", "police kill the gunman") = police the gunman = 3; P = R = 3/4
    assert rouge_l("police killed the gunman", "police kill the gunman") == pytest.approx(0.75)
    # ref 4 tokens, hyp 1 token, LCS 1: P = 1, R = 1/4, F = 2 * 1/4 / (5/4) = 0.4
    assert rouge_l("the the the the", "the") == pytest.approx(0.4)
    assert rouge_l("A B C", "c b a") == pytest.approx(1 / 3)
    assert rouge_l("Hello, World!", "hello world") == 1.0


def test_rouge_l_empty_definitions():
    assert rouge_l("", "") == 1.0
    assert rouge_l("...", "?!") == 1.0  # no tokens on either side
    assert rouge_l("", "words") == 0.0
    assert rouge_l("words", "") == 0.0


def test_rouge_l_matches_rouge_score():
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    for reference, hypothesis in PAIRS:
        expected = scorer.score(reference, hypothesis)["rougeL"].fmeasure
        assert rouge_l(reference, hypothesis) == pytest.approx(expected, abs=1e-12), (reference, hypothesis)
    for reference, hypothesis in EMPTY_PAIRS:  # rouge-score: 0 whenever a side has no tokens
        assert scorer.score(reference, hypothesis)["rougeL"].fmeasure == 0.0
        assert rouge_l(reference, hypothesis) == float(not rouge_tokens(reference) and not rouge_tokens(hypothesis))


def test_rouge_tokens_ascii_equal_rouge_score_tokenizer():
    tokenize = pytest.importorskip("rouge_score.tokenize")
    for reference, hypothesis in PAIRS:
        for text in (reference, hypothesis):
            assert rouge_tokens(text) == tokenize.tokenize(text, None), text


def test_rouge_tokens_unicode():
    assert rouge_tokens("我喜欢猫。") == ["我", "喜", "欢", "猫"]
    assert rouge_tokens("東京タワーへ行きました") == list("東京タワーへ行きました")
    assert rouge_tokens("안녕하세요 세계") == ["안", "녕", "하", "세", "요", "세", "계"]
    assert rouge_tokens("Café au lait, naïve") == ["café", "au", "lait", "naïve"]
    assert rouge_tokens("Привет, мир!") == ["привет", "мир"]
    assert rouge_tokens("हिन्दी भाषा") == ["हिन्दी", "भाषा"]  # combining vowel signs stay inside the word
    assert rouge_tokens("GPT-4模型很好") == ["gpt", "4", "模", "型", "很", "好"]
    assert rouge_tokens("ＡＢＣ１２３") == ["abc123"]  # full-width forms via NFKC


def test_rouge_l_chinese_gets_a_score():
    # rouge-score drops every non-ASCII character, so this pair would score 0 there
    reference, hypothesis = "我今天很高兴", "今天我很高兴"
    # LCS 今天很高兴 = 5 of 6 characters on both sides
    assert rouge_l(reference, hypothesis) == pytest.approx(5 / 6)
    assert rouge_l("我喜欢猫", "我喜欢猫") == 1.0
    assert rouge_l("我喜欢猫", "他讨厌狗") == 0.0


# -- chrF ------------------------------------------------------------------------------------------


def test_chrf_matches_sacrebleu():
    sacrebleu_chrf = pytest.importorskip("sacrebleu.metrics.chrf")
    metric = sacrebleu_chrf.CHRF()
    unicode_pairs = [("我今天很高兴", "今天我很高兴"), ("Café au lait", "cafe au lait"), ("Привет, мир!", "привет мир")]
    for reference, hypothesis in PAIRS + EMPTY_PAIRS + unicode_pairs:
        expected = metric.sentence_score(hypothesis, [reference]).score / 100
        assert chrf(reference, hypothesis) == pytest.approx(expected, abs=1e-9), (reference, hypothesis)


def test_chrf_hand_computed():
    assert chrf("The cat sat on the mat.", "The cat sat on the mat.") == pytest.approx(1.0)
    assert chrf("a b", "ab") == pytest.approx(1.0)  # whitespace is removed before n-grams
    assert chrf("abc", "ABC") == 0.0  # case is kept
    # "ab" vs "ac": order 1 P = R = 1/2; order 2 P = R = 0; orders 3..6 absent -> P = R = 1/4, F = 1/4
    assert chrf("ab", "ac") == pytest.approx(0.25)
    # hyp "a" vs ref "ab": only order 1 counts: P = 1, R = 1/2, F2 = 5 * 1/2 / (4 + 1/2) = 5/9
    assert chrf("ab", "a") == pytest.approx(5 / 9)
    assert chrf("", "") == 0.0 and chrf("abc", "") == 0.0  # sacrebleu's convention


def test_example_scores():
    scores = example_scores("Paris.", "paris")
    assert scores == {"exact_match": 1.0, "rouge_l": 1.0, "chrf": pytest.approx(chrf("Paris.", "paris"))}
    assert scores["chrf"] < 1.0  # chrF is case- and punctuation-sensitive
    assert set(example_scores("a", "b")) == {"exact_match", "rouge_l", "chrf"}


# -- corpus statistics -----------------------------------------------------------------------------


def test_metric_specs():
    assert set(GENERATION_METRICS) == {"perplexity", "loss", "bits_per_byte", "rouge_l", "chrf", "exact_match"}
    assert not GENERATION_METRICS["bits_per_byte"].higher_is_better
    assert not GENERATION_METRICS["perplexity"].higher_is_better
    assert GENERATION_METRICS["perplexity"].bounds == (1.0, math.inf)
    assert not GENERATION_METRICS["loss"].higher_is_better and GENERATION_METRICS["loss"].bounds == (0.0, math.inf)
    for name in ("rouge_l", "chrf", "exact_match"):
        assert GENERATION_METRICS[name].higher_is_better and GENERATION_METRICS[name].bounds == (0.0, 1.0)


def test_perplexity_is_a_token_weighted_ratio():
    tokens = np.array([10, 1, 0])
    nll = np.array([10 * math.log(4.0), math.log(100.0), 0.0])
    assert perplexity(tokens, nll) == pytest.approx(math.exp((10 * math.log(4.0) + math.log(100.0)) / 11))
    assert perplexity(np.array([5, 5]), np.array([5 * math.log(3), 5 * math.log(3)])) == pytest.approx(3.0)
    assert math.isnan(perplexity(np.array([0, 0]), np.array([0.0, 0.0])))
    with pytest.raises(ValueError, match=">= 0"):
        perplexity(np.array([1, 2]), np.array([-1.0, 2.0]))
    with pytest.raises(ValueError, match="same length"):
        perplexity(np.array([1, 2]), np.array([1.0]))


def test_perplexity_batch_equals_call_on_resamples():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 40, size=50)
    tokens[:3] = 0
    nll = tokens * rng.uniform(0.5, 3.0, size=50)
    idx = rng.integers(0, 50, size=(200, 50))
    batch = Perplexity().batch(tokens, nll, idx)
    assert batch.shape == (200,)
    np.testing.assert_allclose(batch, [perplexity(tokens[i], nll[i]) for i in idx], rtol=1e-12)
    only_empty = Perplexity().batch(tokens, nll, np.zeros((2, 5), dtype=np.int64))  # resamples of a 0-token example
    assert np.isnan(only_empty).all()


def test_bootstrap_ci_with_perplexity_and_means():
    rng = np.random.default_rng(1)
    tokens = rng.integers(5, 30, size=80)
    nll = tokens * rng.uniform(1.0, 2.0, size=80)
    estimate, low, high = bootstrap_ci(tokens, nll, perplexity, n_resamples=300, seed=0)
    assert estimate == pytest.approx(math.exp(nll.sum() / tokens.sum()))
    assert math.exp(1.0) < low < estimate < high < math.exp(2.0)
    assert bootstrap_ci(tokens, nll, perplexity, n_resamples=300, seed=0) == (estimate, low, high)

    scores = np.array([rouge_l(r, h) for r, h in PAIRS])
    mean, low, high = bootstrap_ci(scores, scores, prediction_mean, n_resamples=300, seed=0)
    assert mean == pytest.approx(scores.mean()) and low < mean < high
    with pytest.raises(TypeError):  # why a class is needed: numpy.mean(y_true, y_pred) takes y_pred as the axis
        bootstrap_ci(scores, scores, np.mean, n_resamples=10)


def test_paired_bootstrap_with_generation_metrics():
    rng = np.random.default_rng(2)
    tokens = rng.integers(5, 30, size=100)
    nll_old = tokens * rng.uniform(1.5, 2.5, size=100)
    nll_new = nll_old * 0.8  # every example better: perplexity drops
    result = paired_bootstrap(tokens, nll_old, nll_new, perplexity, n_resamples=500, seed=0)
    assert result.new < result.old and result.delta < 0
    assert result.ci[1] < 0 and result.p < 0.01
    same = paired_bootstrap(tokens, nll_old, nll_old, perplexity, n_resamples=200)
    assert same.delta == 0.0 and same.p == 1.0

    old = np.array([chrf(r, r.lower()) for r, _ in PAIRS])
    new = np.array([chrf(r, h) for r, h in PAIRS])
    result = paired_bootstrap(np.zeros(len(PAIRS)), old, new, prediction_mean, n_resamples=500, seed=0)
    assert result.old == pytest.approx(old.mean()) and result.new == pytest.approx(new.mean())
    assert result.ci[0] <= result.delta <= result.ci[1]


def test_bits_per_byte_is_the_nll_per_byte_in_bits_and_vectorised():
    from headstart.evaluate.bootstrap import bootstrap_ci
    from headstart.evaluate.generation import bits_per_byte

    sizes = np.array([10.0, 20.0, 30.0])
    nll = np.array([7.0, 14.0, 21.0])
    assert bits_per_byte(sizes, nll) == pytest.approx(42.0 / (np.log(2) * 60.0))
    idx = np.random.default_rng(0).integers(0, 3, size=(50, 3))
    expected = [bits_per_byte(sizes[i], nll[i]) for i in idx]
    assert np.allclose(bits_per_byte.batch(sizes, nll, idx), expected)
    value, low, high = bootstrap_ci(sizes, nll, bits_per_byte, n_resamples=200)
    assert low <= value <= high
