"""Text-generation metrics, per example, with corpus statistics for bootstrap intervals.

Per example (:func:`example_scores`), a generated text (the hypothesis) is scored against one
reference text:

- Exact match (:func:`exact_match`): 1.0 when the two texts are equal after
  :func:`normalize_answer` (Unicode NFKC, casefold, punctuation dropped, whitespace collapsed),
  else 0.0.
- ROUGE-L (:func:`rouge_l`): the F-measure (beta = 1) of the longest common subsequence of the
  two token sequences (Lin, "ROUGE: A package for automatic evaluation of summaries", ACL
  Workshop 2004, sec. 3.1): ``P = LCS / len(hyp)``, ``R = LCS / len(ref)``,
  ``F = 2 P R / (P + R)``. Equal to ``rouge_score.rouge_scorer.RougeScorer(["rougeL"])``'s
  ``fmeasure`` (no stemming) on ASCII text; see :func:`rouge_tokens` for the tokens elsewhere.
- chrF (:func:`chrf`): sacrebleu's ``CHRF()`` default (Popović, "chrF: character n-gram F-score
  for automatic MT evaluation", WMT 2015): character n-grams of orders 1..6 of the texts with
  whitespace removed, no word n-grams, beta = 2, precision and recall averaged over the orders
  both texts have n-grams of, then F-beta of the averages; ``CHRF().sentence_score(hyp,
  [ref]).score / 100``, so in [0, 1].

Corpus values: exact match, ROUGE-L and chrF are the *mean of the per-example values* (as
sacrebleu's and rouge-score's users average sentence scores; note sacrebleu's ``corpus_score`` for
chrF sums n-gram statistics instead, which is not what :func:`chrf` averages to).
:data:`prediction_mean` (shared with :mod:`headstart.evaluate.retrieval`) is that mean in the form
:func:`~headstart.evaluate.bootstrap.bootstrap_ci` and
:func:`~headstart.evaluate.stats.paired_bootstrap` take: the per-example scores as ``y_pred``,
``y_true`` ignored. (Plain ``numpy.mean`` does not work there: ``metric(y_true, y_pred)`` would pass
``y_pred`` as ``numpy.mean``'s ``axis``.)

Perplexity over response tokens is a corpus ratio, not a mean of per-example perplexities:
``exp(sum of token negative log-likelihoods / number of supervised tokens)``, so a long response
weighs by its tokens. :data:`perplexity` resamples ``(tokens, nll)`` pairs like
:data:`headstart.evaluate.speech.error_rate` resamples ``(length, errors)`` pairs. Its logarithm
is the ``loss`` (mean token NLL in nats).
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from .metrics import MetricSpec
from .retrieval import prediction_mean

__all__ = [
    "CHRF",
    "EXACT_MATCH",
    "BITS_PER_BYTE",
    "BitsPerByte",
    "GENERATION_METRICS",
    "LOSS",
    "PERPLEXITY",
    "ROUGE_L",
    "Perplexity",
    "chrf",
    "example_scores",
    "exact_match",
    "lcs_length",
    "normalize_answer",
    "perplexity",
    "bits_per_byte",
    "prediction_mean",
    "rouge_l",
    "rouge_tokens",
]

PERPLEXITY = MetricSpec(name="perplexity", higher_is_better=False, bounds=(1.0, math.inf))
LOSS = MetricSpec(name="loss", higher_is_better=False, bounds=(0.0, math.inf))
"""Mean negative log-likelihood per supervised response token, in nats: ``log(perplexity)``."""
ROUGE_L = MetricSpec(name="rouge_l", higher_is_better=True, bounds=(0.0, 1.0))
CHRF = MetricSpec(name="chrf", higher_is_better=True, bounds=(0.0, 1.0))
EXACT_MATCH = MetricSpec(name="exact_match", higher_is_better=True, bounds=(0.0, 1.0))
BITS_PER_BYTE = MetricSpec("bits_per_byte", higher_is_better=False, bounds=(0.0, float("inf")))
GENERATION_METRICS = {spec.name: spec for spec in (PERPLEXITY, LOSS, BITS_PER_BYTE, ROUGE_L, CHRF, EXACT_MATCH)}

CHRF_CHAR_ORDER = 6
CHRF_BETA = 2
"""sacrebleu's ``CHRF()`` defaults (``word_order=0``, ``whitespace=False``, ``eps_smoothing=False``)."""


# -- exact match -----------------------------------------------------------------------------------


def normalize_answer(text: str) -> str:
    """``text`` for exact match: Unicode NFKC, casefold, every punctuation character (Unicode
    category ``P*``: ``.,!?'"-()`` and their non-ASCII forms such as ``。「」``) removed, whitespace
    collapsed to single spaces, ends stripped. Symbols (``$ % + =``, category ``S*``) are kept.

    Punctuation is deleted, not made a space (``"don't"`` -> ``"dont"``, ``"U.S."`` -> ``"us"``), as
    SQuAD's ``normalize_answer`` does; unlike it, articles are kept (removing English "a/an/the"
    would be wrong for other languages). Idempotent.
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))
    return " ".join(text.split())


def exact_match(reference: str, hypothesis: str) -> float:
    """1.0 when :func:`normalize_answer` makes the two texts equal, else 0.0 (two empty texts match)."""
    return float(normalize_answer(reference) == normalize_answer(hypothesis))


# -- ROUGE-L ---------------------------------------------------------------------------------------

_SEPARATOR, _WORD, _SINGLE = 0, 1, 2

_SINGLE_CHAR_RANGES = (
    (0x1100, 0x11FF),  # Hangul Jamo
    (0x3005, 0x3007),  # ideographic iteration mark, closing mark, number zero
    (0x3040, 0x309F),  # Hiragana
    (0x30A0, 0x30FF),  # Katakana (with the prolonged sound mark)
    (0x3130, 0x318F),  # Hangul Compatibility Jamo
    (0x31F0, 0x31FF),  # Katakana Phonetic Extensions
    (0x3400, 0x4DBF),  # CJK Unified Ideographs Extension A
    (0x4E00, 0x9FFF),  # CJK Unified Ideographs
    (0xA960, 0xA97F),  # Hangul Jamo Extended-A
    (0xAC00, 0xD7AF),  # Hangul Syllables
    (0xD7B0, 0xD7FF),  # Hangul Jamo Extended-B
    (0xF900, 0xFAFF),  # CJK Compatibility Ideographs
    (0x20000, 0x3FFFF),  # CJK Unified Ideographs Extensions B.. and Compatibility Supplement
)
"""Characters that are each a token of their own: scripts written without spaces between words
(Chinese, Japanese) and Hangul, where one character is the unit a word-level overlap can use."""


@lru_cache(maxsize=65536)
def _char_class(ch: str) -> int:
    code = ord(ch)
    if any(low <= code <= high for low, high in _SINGLE_CHAR_RANGES):
        return _SINGLE if unicodedata.category(ch)[0] in "LNM" else _SEPARATOR
    # letters, digits and combining marks (Devanagari vowel signs, Arabic harakat) make up words
    return _WORD if unicodedata.category(ch)[0] in "LNM" else _SEPARATOR


def rouge_tokens(text: str) -> list[str]:
    """The tokens :func:`rouge_l` compares: Unicode NFKC, lowercase, then maximal runs of word
    characters (letters, digits, combining marks of any script; category ``L*``, ``N*``, ``M*``),
    except that each CJK ideograph, Hiragana, Katakana and Hangul character is a token by itself.
    Everything else (spaces, punctuation, symbols, ``_``) separates tokens and is dropped.

    On ASCII text this is rouge-score's default tokenizer exactly (lowercase, every character
    outside ``[a-z0-9]`` made a space, split; no stemming). Elsewhere rouge-score drops every
    non-ASCII character (``"café"`` -> ``["caf"]``, Chinese text -> no tokens, so a score of 0);
    here ``"café"`` is one token and ``"我喜欢猫"`` is ``["我", "喜", "欢", "猫"]``.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    tokens: list[str] = []
    start = None  # start of the current word run
    for i, ch in enumerate(text):
        kind = _char_class(ch)
        if kind == _WORD:
            if start is None:
                start = i
            continue
        if start is not None:
            tokens.append(text[start:i])
            start = None
        if kind == _SINGLE:
            tokens.append(ch)
    if start is not None:
        tokens.append(text[start:])
    return tokens


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence of two token sequences (any hashable tokens).

    Dynamic programme row by row, ``L[i, j] = max(L[i-1, j], L[i-1, j-1] + [a_i == b_j],
    L[i, j-1])``, the last term as a running maximum along the row (numpy); O(len(a) * len(b))
    time, O(len(b)) memory.
    """
    a, b = list(a), list(b)
    if not a or not b:
        return 0
    vocab: dict = {}
    a_ids = np.array([vocab.setdefault(t, len(vocab)) for t in a], dtype=np.int64)  # (n,)
    b_ids = np.array([vocab.setdefault(t, len(vocab)) for t in b], dtype=np.int64)  # (m,)
    row = np.zeros(len(b) + 1, dtype=np.int64)  # L[i - 1, :]
    for token in a_ids:
        new = row.copy()
        new[1:] = np.maximum(row[1:], row[:-1] + (b_ids == token))
        row = np.maximum.accumulate(new)
    return int(row[-1])


def rouge_l(reference: str, hypothesis: str) -> float:
    """ROUGE-L F-measure (beta = 1) of ``hypothesis`` against ``reference`` over
    :func:`rouge_tokens`: ``P = LCS / len(hyp)``, ``R = LCS / len(ref)``, ``F = 2 P R / (P + R)``
    (0 when ``P + R = 0``), as rouge-score's ``RougeScorer(["rougeL"]).score(reference,
    hypothesis)["rougeL"].fmeasure``.

    Empty token sequences (an empty text, or one of only punctuation): both empty is 1.0 (nothing
    to say, and nothing said), one empty is 0.0. rouge-score gives 0.0 for both cases.
    """
    ref, hyp = rouge_tokens(reference), rouge_tokens(hypothesis)
    if not ref or not hyp:
        return float(not ref and not hyp)
    lcs = lcs_length(ref, hyp)
    precision, recall = lcs / len(hyp), lcs / len(ref)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


# -- chrF ------------------------------------------------------------------------------------------


def _char_ngrams(text: str, order: int) -> list[Counter]:
    text = "".join(text.split())  # whitespace removed, as sacrebleu's default
    return [Counter(text[i:i + n] for i in range(len(text) - n + 1)) for n in range(1, order + 1)]


def chrf(reference: str, hypothesis: str) -> float:
    """Sentence chrF in [0, 1]: ``sacrebleu.metrics.CHRF().sentence_score(hypothesis,
    [reference]).score / 100``, reimplemented.

    For each order ``n = 1..6`` of character n-grams of the texts with all whitespace removed
    (case kept), with clipped matches ``m_n = sum min(count_hyp, count_ref)``: ``P_n = m_n /
    #hyp n-grams``, ``R_n = m_n / #ref n-grams``. Orders where either text has no n-gram (texts
    shorter than ``n``) are left out, and ``P``, ``R`` are the means of ``P_n``, ``R_n`` over the
    remaining orders (sacrebleu's "effective order"; its ``eps_smoothing=True`` variant, averaging
    F over all six orders, is not the default and not what this computes). The score is
    ``(1 + b^2) P R / (b^2 P + R)`` with ``b = 2`` (recall weighs more), 0 when ``P + R = 0``.

    Identical non-empty texts score 1.0. An empty text on either side (whitespace only counts as
    empty) scores 0.0, both empty included, as sacrebleu does.
    """
    hyp_ngrams = _char_ngrams(hypothesis, CHRF_CHAR_ORDER)
    ref_ngrams = _char_ngrams(reference, CHRF_CHAR_ORDER)
    factor = CHRF_BETA**2
    avg_prec = avg_rec = 0.0
    effective_order = 0
    for hyp, ref in zip(hyp_ngrams, ref_ngrams):
        n_hyp, n_ref = sum(hyp.values()), sum(ref.values())
        if n_hyp == 0 or n_ref == 0:
            continue
        n_match = sum(min(count, ref[ng]) for ng, count in hyp.items() if ng in ref)
        avg_prec += n_match / n_hyp
        avg_rec += n_match / n_ref
        effective_order += 1
    if effective_order == 0:
        return 0.0
    avg_prec /= effective_order
    avg_rec /= effective_order
    if avg_prec + avg_rec == 0:
        return 0.0
    return (1 + factor) * avg_prec * avg_rec / (factor * avg_prec + avg_rec)


def example_scores(reference: str, hypothesis: str) -> dict[str, float]:
    """``{"exact_match", "rouge_l", "chrf"}`` of one generated text against its reference."""
    return {
        "exact_match": exact_match(reference, hypothesis),
        "rouge_l": rouge_l(reference, hypothesis),
        "chrf": chrf(reference, hypothesis),
    }


# -- perplexity ------------------------------------------------------------------------------------


class Perplexity:
    """Corpus perplexity over supervised response tokens, ``exp(sum(y_pred) / sum(y_true))``, with
    ``y_true`` the number of supervised tokens of each example and ``y_pred`` the summed negative
    log-likelihood (nats) of those tokens, vectorised over resamples, for
    :func:`~headstart.evaluate.bootstrap.bootstrap_ci` and
    :func:`~headstart.evaluate.stats.paired_bootstrap` (two models: the same token counts, their
    own NLLs; the same resampled examples for both).

    A sample with no supervised tokens at all has no perplexity: NaN (an example with 0 tokens
    and 0 NLL is otherwise fine, it adds nothing). Negative counts or NLLs raise ``ValueError``.
    """

    def __call__(self, y_true: np.ndarray, y_pred: np.ndarray) -> float:
        tokens, nll = _token_arrays(y_true, y_pred)
        total = tokens.sum()
        return float(np.exp(nll.sum() / total)) if total > 0 else float("nan")

    def batch(self, y_true: np.ndarray, y_pred: np.ndarray, idx: np.ndarray) -> np.ndarray:
        tokens, nll = _token_arrays(y_true, y_pred)
        totals = tokens[idx].sum(axis=1)  # (R,)
        nlls = nll[idx].sum(axis=1)  # (R,)
        out = np.full(totals.shape, np.nan)
        np.divide(nlls, totals, out=out, where=totals > 0)
        return np.exp(out)

    def __repr__(self) -> str:
        return "perplexity"


perplexity = Perplexity()


class BitsPerByte:
    """Corpus bits per UTF-8 byte of the references, ``sum(y_pred) / (ln 2 * sum(y_true))``, with
    ``y_true`` each reference's byte count and ``y_pred`` the summed NLL (nats) of its supervised
    tokens. Unlike perplexity it does not depend on the tokenizer, so two bases with different
    vocabularies (drift from SmolLM2 to Gemma 3) are compared on the same scale; the supervised
    tokens include the template's end-of-turn marker, which differs by a token or so per reply
    between templates. Vectorised like :class:`Perplexity`."""

    def __call__(self, y_true: np.ndarray, y_pred: np.ndarray) -> float:
        size, nll = _token_arrays(y_true, y_pred)
        total = size.sum()
        return float(nll.sum() / (np.log(2.0) * total)) if total > 0 else float("nan")

    def batch(self, y_true: np.ndarray, y_pred: np.ndarray, idx: np.ndarray) -> np.ndarray:
        size, nll = _token_arrays(y_true, y_pred)
        totals = size[idx].sum(axis=1)
        nlls = nll[idx].sum(axis=1)
        out = np.full(totals.shape, np.nan)
        np.divide(nlls, totals * np.log(2.0), out=out, where=totals > 0)
        return out

    def __repr__(self) -> str:
        return "bits_per_byte"


bits_per_byte = BitsPerByte()


def _token_arrays(tokens: np.ndarray, nll: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tokens, nll = np.asarray(tokens, dtype=np.float64), np.asarray(nll, dtype=np.float64)
    if tokens.shape != nll.shape or tokens.ndim != 1:
        raise ValueError(f"token counts (y_true) and NLL sums (y_pred) must be 1-D arrays of the same length "
                         f"(got shapes {tokens.shape} and {nll.shape})")
    if tokens.size and (tokens.min() < 0 or nll.min() < 0):
        raise ValueError(f"token counts and negative log-likelihoods must be >= 0 (got minimums {tokens.min()!r} "
                         f"and {nll.min()!r}); pass the NLL in nats, summed over each example's supervised tokens")
    return tokens, nll
