"""The data's profile for `plan`: size, classes, examples per class (the preset regime), text
length and script/language; and the warning `adapt` gives when the data's language is not one
the backbone was trained for."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

from ..catalog import CATALOG, BackboneSpec
from ..data import Dataset
from ..methods.presets import regime_for

PROFILED_TEXTS = 2000
"""Texts read for the length and language profile (the first ones in file order)."""

LANGUAGE_WARN_SHARE = 0.5
"""`language_warning` speaks when at least this share of the profiled texts is in languages the
backbone does not list."""

MULTILINGUAL = "use-multilingual"
"""The catalog's multilingual text backbone, named in the warning when it covers the data."""


def profile(data: Dataset) -> dict:
    counts = Counter(data.labels)
    per_class = float(np.median(list(counts.values())))
    out = {"examples": len(data), "classes": len(counts), "examples_per_class": per_class,
           "smallest_class": min(counts.values()), "majority_share": round(max(counts.values()) / len(data), 4),
           "regime": regime_for(per_class), "modality": data.modality}
    if data.modality == "text":
        words = [len(t.split()) for t in data.inputs[:PROFILED_TEXTS]]
        out["words_per_text"] = float(np.mean(words)) if words else 0.0
        out["languages"] = detect_scripts(data.inputs[:PROFILED_TEXTS])
    return out


_SCRIPTS = (("ko", r"[\uac00-\ud7af]"), ("ja", r"[\u3040-\u30ff]"), ("zh", r"[\u4e00-\u9fff]"), ("th", r"[\u0e00-\u0e7f]"),
            ("ar", r"[\u0600-\u06ff]"), ("hi", r"[\u0900-\u097f]"), ("ru", r"[\u0400-\u04ff]"), ("el", r"[\u0370-\u03ff]"))
_ENGLISH = {"the", "a", "an", "and", "is", "to", "of", "i", "you", "it", "in", "my", "for", "this", "that", "was", "on", "with"}
_LANGUAGE_NAMES = {"ko": "Korean", "ja": "Japanese", "zh": "Chinese", "th": "Thai", "ar": "Arabic", "hi": "Hindi",
                   "ru": "Russian (Cyrillic)", "el": "Greek", "en": "English",
                   "other-latin": "a Latin-script language other than English"}
_LATIN = {"en", "fr", "de", "es", "it", "nl", "pl", "pt", "tr", "id", "vi"}
"""Language codes written in Latin script: a backbone listing one besides English covers the
'other-latin' guess."""


def detect_scripts(texts: list[str]) -> dict[str, float]:
    """Share of texts per language guess: by script, and for Latin script English vs other
    (English function words). A hint for choosing a multilingual backbone, not a classifier."""
    counts: dict[str, int] = {}
    for t in texts:
        lang = next((code for code, pattern in _SCRIPTS if re.search(pattern, t)), None)
        if lang is None:
            words = re.findall(r"[a-zA-Z']+", t.lower())
            lang = "en" if words and sum(w in _ENGLISH for w in words) / len(words) >= 0.08 or len(words) < 4 and words else "other-latin"
        counts[lang] = counts.get(lang, 0) + 1
    n = max(len(texts), 1)
    return {k: round(v / n, 3) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}


def covers(spec: BackboneSpec, language: str) -> bool:
    """Whether ``spec`` lists ``language`` (a code of :func:`detect_scripts`) among its languages."""
    listed = set(spec.languages)
    if "multi" in listed or language in listed:
        return True
    return language == "other-latin" and bool(listed & (_LATIN - {"en"}))


def language_warning(data: Dataset, spec: BackboneSpec) -> str | None:
    """A warning when most of ``data``'s texts are in languages the catalog backbone ``spec`` was
    not trained for (its ``languages``), naming a catalog backbone that covers them; else None.

    Only catalog entries are checked: a local folder or ``hf:`` model records no languages."""
    if data.modality != "text" or CATALOG.get(spec.name) is None:
        return None
    shares = detect_scripts(data.inputs[:PROFILED_TEXTS])
    missing = {lang: share for lang, share in shares.items() if not covers(spec, lang)}
    if sum(missing.values()) < LANGUAGE_WARN_SHARE:
        return None
    found = ", ".join(f"{_LANGUAGE_NAMES.get(lang, lang)} {share:.0%}" for lang, share in missing.items())
    generator = spec.family == "causal-lm"
    consequence = ("it has seen little of them, so expect poor replies and slow adaptation" if generator else
                   "so its features carry little of their meaning (the model may learn only the majority class)")
    message = (f"{data.source}: the texts look like {found} (by script and English function words), but backbone "
               f"{spec.name!r} was trained for {', '.join(spec.languages)} only, {consequence}")
    alternatives = [s for s in CATALOG.values() if s.modality == "text" and (s.family == "causal-lm") == generator
                    and all(covers(s, lang) for lang in missing)]
    alternatives.sort(key=lambda s: s.name != MULTILINGUAL)
    if alternatives:
        alt = alternatives[0]
        from ..backbones import family_trains

        frozen = "" if family_trains(alt) else " (frozen features: --method linear-probe)"
        return f"{message}; pass --backbone {alt.name}{frozen}, which covers them"
    return f"{message}; no catalog backbone covers them: pass a multilingual model as --backbone hf:<hub id>"
