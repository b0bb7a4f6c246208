"""Word and character error rates (WER, CER), per utterance, with corpus totals and bootstrap
intervals over utterances.

Per utterance, :func:`utterance_errors` aligns the normalised reference and hypothesis
(Levenshtein, unit costs) and records the edit count and the reference length, for words and for
characters. A corpus's error rate is the *sum of errors over the sum of reference lengths*
(:func:`corpus_wer`, :func:`corpus_cer`): the standard definition (NIST sclite, jiwer on a list
of sentences), not the mean of per-utterance rates, which would weight a one-word utterance like a
fifty-word one.

Definitions (``S``, ``D``, ``I``: substitutions, deletions, insertions of a minimum-edit
alignment; ``N``: reference length):

- WER: tokens are the words of the normalised text split on spaces; ``wer = (S + D + I) / N``.
- CER: tokens are the characters of the normalised text, spaces included (jiwer's ``cer``, whose
  default transform only strips the ends; the normaliser has already collapsed inner spaces).
- Empty reference (``N = 0``, e.g. a clip with no speech): the rate is ``(S + D + I) / max(N, 1)``,
  i.e. 0 for an empty hypothesis and the number of inserted tokens otherwise, as jiwer does.
  The corpus rate uses the same rule on the totals, so an utterance's rate is the corpus rate of
  a corpus of that utterance, and empty references add their insertions to the numerator only.

Bootstrap: resampling utterances resamples ``(errors, length)`` pairs, and each resample's rate
is the ratio of its sums (:func:`ratio_statistic`). :data:`error_rate` is that statistic in the
form :func:`headstart.evaluate.bootstrap.bootstrap_ci` and
:func:`headstart.evaluate.stats.paired_bootstrap` take: ``y_true`` the reference lengths, shared
by two systems scored on the same references, ``y_pred`` a system's error counts.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from .bootstrap import bootstrap_ci
from .metrics import MetricSpec

WER = MetricSpec(name="wer", higher_is_better=False, bounds=(0.0, math.inf))
CER = MetricSpec(name="cer", higher_is_better=False, bounds=(0.0, math.inf))
"""Error rates: lower is better, 0 at best and unbounded above (insertions can exceed the reference)."""
SPEECH_METRICS = {"wer": WER, "cer": CER}

NORMALIZER_VERSION = "en-1"
"""Recorded with every run's scores: a changed normaliser changes WER, so scores under different
versions are not comparable."""
NORMALIZER_DOC = (
    "English, en-1: Unicode NFKC and lowercase; numbers written as words without 'and' "
    "('42' -> 'forty two', '2024' -> 'two thousand twenty four', '1,000' -> 'one thousand', "
    "'3.14' -> 'three point one four', '21st' -> 'twenty first', '90s' -> 'nineties', '5%' -> "
    "'five percent', leading-zero and over-15-digit numbers digit by digit); dots of "
    "single-letter abbreviations dropped ('p.m.' -> 'pm'); apostrophes kept inside words "
    "('don't'); every other punctuation mark, hyphen or symbol made a space; whitespace collapsed."
)
"""One sentence for the run manifest and README: what :func:`normalize_transcript` does."""

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
         "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (10**3, "thousand"))
_ORDINAL_WORDS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                  "nine": "ninth", "twelve": "twelfth"}
_MAX_CARDINAL_DIGITS = 15

_THOUSANDS = re.compile(r"(?<![\d.,])\d{1,3}(?:,\d{3})+(?!\d|,\d)")
_DECIMAL = re.compile(r"(\d+)\.(\d+)")
_ORDINAL = re.compile(r"(\d+)(st|nd|rd|th)\b")
_PLURAL = re.compile(r"(\d+)'?s\b")
_DIGITS = re.compile(r"\d+")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})
_ABBREVIATION = re.compile(r"(?<!\w)[^\W\d_](?:\.[^\W\d_])+\.?(?!\w)")
_NOT_WORD = re.compile(r"[^\w'\s]|_")
_LONE_APOSTROPHE = re.compile(r"(?<!\w)'|'(?!\w)")


def normalize_transcript(text: str) -> str:
    """``text`` normalised for scoring, by the rules of :data:`NORMALIZER_DOC` (version
    :data:`NORMALIZER_VERSION`), in this order:

    1. Unicode NFKC, lowercase, curly apostrophes made ``'``.
    2. Numbers as words: thousands separators dropped (``1,000,000``); decimals read digit by digit
       after "point" (``3.14`` -> ``three point one four``); ordinals (``1st``, ``22nd``) and plurals
       (``1990s``, ``90's``) inflect the last word; every other
       digit run is a cardinal without "and" (``105`` -> ``one hundred five``; years are cardinals
       too: ``1999`` -> ``one thousand nine hundred ninety nine``). A run with a leading zero
       (``007``, the ``05`` of ``2:05``) or over 15 digits is read digit by digit. Digits glued to
       letters are split off (``mp3`` -> ``mp three``); signs and currency symbols are dropped.
    3. ``%`` is the word "percent" (``5%``, ``3.5 %``); the dots of single-letter abbreviations
       are dropped (``u.s.a.`` -> ``usa``, ``p.m.`` -> ``pm``); apostrophes are kept only between
       word characters (``don't``, ``it's``); every other punctuation mark, hyphen, dash, slash or
       symbol becomes a space.
    4. Whitespace collapsed to single spaces, ends stripped.

    Deterministic and idempotent: ``normalize_transcript(normalize_transcript(t)) ==
    normalize_transcript(t)``. Contractions are not expanded (``it's`` stays one word).
    """
    text = unicodedata.normalize("NFKC", text).lower().translate(_APOSTROPHES)
    text = _THOUSANDS.sub(lambda m: m.group(0).replace(",", ""), text)
    text = _DECIMAL.sub(lambda m: f" {_number_words(m.group(1))} point {_digit_words(m.group(2))} ", text)
    text = _ORDINAL.sub(lambda m: f" {_ordinal(_number_words(m.group(1)))} ", text)
    text = _PLURAL.sub(lambda m: f" {_plural(_number_words(m.group(1)))} ", text)
    text = _DIGITS.sub(lambda m: f" {_number_words(m.group(0))} ", text)
    text = _ABBREVIATION.sub(lambda m: m.group(0).replace(".", ""), text.replace("%", " percent "))
    text = _NOT_WORD.sub(" ", text)
    text = _LONE_APOSTROPHE.sub(" ", text)
    return " ".join(text.split())


def _number_words(digits: str) -> str:
    """A digit string as words: a cardinal, or digit by digit for a leading zero or > 15 digits."""
    if (len(digits) > 1 and digits[0] == "0") or len(digits) > _MAX_CARDINAL_DIGITS:
        return _digit_words(digits)
    return _cardinal(int(digits))


def _digit_words(digits: str) -> str:
    return " ".join(_ONES[int(d)] for d in digits)


def _cardinal(n: int) -> str:
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        return _ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + _cardinal(n % 100))
    for value, name in _SCALES:
        if n >= value:
            head, rest = divmod(n, value)
            return _cardinal(head) + " " + name + ("" if rest == 0 else " " + _cardinal(rest))
    raise AssertionError(n)  # unreachable: every n >= 1000 has a scale


def _ordinal(words: str) -> str:
    head, _, last = words.rpartition(" ")
    if last in _ORDINAL_WORDS:
        last = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return f"{head} {last}".strip()


def _plural(words: str) -> str:
    head, _, last = words.rpartition(" ")
    if last.endswith("y"):
        last = last[:-1] + "ies"
    elif last.endswith("x"):
        last += "es"
    else:
        last += "s"
    return f"{head} {last}".strip()


# -- alignment -------------------------------------------------------------------------------------


def edit_counts(reference_tokens: Sequence, hypothesis_tokens: Sequence) -> tuple[int, int, int, int]:
    """``(substitutions, deletions, insertions, len(reference_tokens))`` of a minimum-edit
    (Levenshtein, unit costs) alignment of two token sequences (words, characters, any hashable).

    ``S + D + I`` is the edit distance. Among alignments of that distance, the backtrace prefers a
    substitution (or match), then a deletion, then an insertion, so counts are deterministic; the
    split between S, D and I may differ from another tool's equally minimal alignment. Time and
    memory are O(n * m) (one int32 table; rows are filled with numpy).
    """
    ref, hyp = list(reference_tokens), list(hypothesis_tokens)
    n, m = len(ref), len(hyp)
    if n == 0 or m == 0:
        return 0, n, m, n
    vocab: dict = {}
    r = np.array([vocab.setdefault(t, len(vocab)) for t in ref], dtype=np.int64)  # (n,)
    h = np.array([vocab.setdefault(t, len(vocab)) for t in hyp], dtype=np.int64)  # (m,)
    d = np.empty((n + 1, m + 1), dtype=np.int32)  # d[i, j]: distance of ref[:i] and hyp[:j]
    d[0] = np.arange(m + 1)
    offsets = np.arange(m + 1, dtype=np.int32)
    for i in range(1, n + 1):
        row = np.empty(m + 1, dtype=np.int32)
        row[0] = i
        row[1:] = np.minimum(d[i - 1, 1:] + 1, d[i - 1, :-1] + (h != r[i - 1]))  # deletion, substitution/match
        # insertions chain along the row: row[j] = min_k<=j row[k] + (j - k)
        d[i] = np.minimum.accumulate(row - offsets) + offsets
    subs = dels = ins = 0
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and d[i, j] == d[i - 1, j - 1] + (r[i - 1] != h[j - 1]):
            subs += int(r[i - 1] != h[j - 1])
            i, j = i - 1, j - 1
        elif i > 0 and d[i, j] == d[i - 1, j] + 1:
            dels += 1
            i -= 1
        else:
            ins += 1
            j -= 1
    return subs, dels, ins, n


def utterance_errors(reference: str, hypothesis: str, *, normalize: bool = True) -> dict:
    """One utterance's error counts and rates (see the module docstring for the definitions).

    Returns ``{"wer_errors", "wer_words", "cer_errors", "cer_chars"}`` (ints: edits and reference
    length, for words and characters) and ``{"wer", "cer"}`` (floats: errors / max(length, 1)).
    ``normalize=False`` scores the texts as given, only split on whitespace for words and stripped
    at the ends for characters (jiwer's default transforms).
    """
    if normalize:
        reference, hypothesis = normalize_transcript(reference), normalize_transcript(hypothesis)
    s, d, i, n_words = edit_counts(reference.split(), hypothesis.split())
    cs, cd, ci, n_chars = edit_counts(reference.strip(), hypothesis.strip())
    wer_errors, cer_errors = s + d + i, cs + cd + ci
    return {
        "wer_errors": wer_errors,
        "wer_words": n_words,
        "cer_errors": cer_errors,
        "cer_chars": n_chars,
        "wer": wer_errors / max(n_words, 1),
        "cer": cer_errors / max(n_chars, 1),
    }


# -- corpus rates and bootstrap --------------------------------------------------------------------


def ratio_statistic(errors: np.ndarray, lengths: np.ndarray) -> float:
    """``sum(errors) / max(sum(lengths), 1)``: the corpus error rate of utterances with these
    error counts and reference lengths (a bootstrap resample draws (errors, length) pairs)."""
    errors, lengths = np.asarray(errors, dtype=np.float64), np.asarray(lengths, dtype=np.float64)
    if errors.shape != lengths.shape or errors.ndim != 1:
        raise ValueError(f"errors and lengths must be 1-D arrays of the same length (got shapes {errors.shape} and {lengths.shape})")
    return float(errors.sum() / max(lengths.sum(), 1.0))


class ErrorRate:
    """Corpus error rate ``sum(y_pred) / max(sum(y_true), 1)`` with ``y_true`` the reference
    lengths and ``y_pred`` the error counts of the same utterances, vectorised over resamples, for
    :func:`~headstart.evaluate.bootstrap.bootstrap_ci` and
    :func:`~headstart.evaluate.stats.paired_bootstrap` (two systems: same lengths, their own
    errors; the same resampled utterances for both)."""

    def __call__(self, y_true: np.ndarray, y_pred: np.ndarray) -> float:
        return ratio_statistic(y_pred, y_true)

    def batch(self, y_true: np.ndarray, y_pred: np.ndarray, idx: np.ndarray) -> np.ndarray:
        lengths = np.asarray(y_true, dtype=np.float64)[idx].sum(axis=1)  # (R,)
        errors = np.asarray(y_pred, dtype=np.float64)[idx].sum(axis=1)  # (R,)
        return errors / np.maximum(lengths, 1.0)

    def __repr__(self) -> str:
        return "error_rate"


error_rate = ErrorRate()


def error_arrays(records: Iterable[Mapping], metric: str = "wer") -> tuple[np.ndarray, np.ndarray]:
    """``(lengths, errors)`` int64 arrays of ``"wer"`` (words) or ``"cer"`` (characters) from
    :func:`utterance_errors` records, in order: the ``(y_true, y_pred)`` of :data:`error_rate`."""
    if metric not in SPEECH_METRICS:
        raise ValueError(f"unknown speech metric {metric!r}; choose from {', '.join(SPEECH_METRICS)}")
    unit = "words" if metric == "wer" else "chars"
    records = list(records)
    lengths = np.array([r[f"{metric}_{unit}"] for r in records], dtype=np.int64)
    errors = np.array([r[f"{metric}_errors"] for r in records], dtype=np.int64)
    return lengths, errors


def corpus_wer(records: Iterable[Mapping]) -> float:
    """Total word errors / total reference words over :func:`utterance_errors` records (jiwer's
    ``wer`` on the lists of sentences)."""
    lengths, errors = error_arrays(records, "wer")
    return ratio_statistic(errors, lengths)


def corpus_cer(records: Iterable[Mapping]) -> float:
    """Total character errors / total reference characters (jiwer's ``cer`` on the lists)."""
    lengths, errors = error_arrays(records, "cer")
    return ratio_statistic(errors, lengths)


def error_rate_interval(records: Iterable[Mapping], metric: str = "wer", *, n_resamples: int = 1000,
                        level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """``(corpus rate, low, high)``: the percentile-bootstrap interval of the corpus WER or CER
    over utterances (:func:`~headstart.evaluate.bootstrap.bootstrap_ci` with :data:`error_rate`)."""
    lengths, errors = error_arrays(records, metric)
    return bootstrap_ci(lengths, errors, error_rate, n_resamples=n_resamples, level=level, seed=seed)
