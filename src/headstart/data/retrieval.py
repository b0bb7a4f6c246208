"""Retrieval data: training pairs, scored pairs, and evaluation collections (corpus + queries + qrels).

Training data
    :func:`load_pairs` reads (query, positive) pairs and (query, positive, negative) triplets from
    CSV/TSV/JSONL/Parquet (through :func:`headstart.data.readers.read_table`), the columns inferred
    by name (:data:`QUERY_NAMES`, :data:`POSITIVE_NAMES`, :data:`NEGATIVE_NAMES`) or named.
    :func:`load_scored_pairs` reads (sentence1, sentence2, score) rows for similarity training
    (CoSENT), recording the score range so scores can be mapped to [0, 1]. :func:`read_squad` turns
    a SQuAD v1.1 file (XQuAD) into question -> paragraph pairs grouped by article.

Evaluation data
    :class:`RetrievalEval` holds queries, a corpus and graded relevance judgements. It is read from
    the BEIR layout (:func:`read_beir`), from a SMART collection such as Cranfield
    (:func:`read_smart`, :func:`read_cranfield`), or built from pairs (:func:`eval_from_pairs`).

Splits
    :func:`split_pairs` and :func:`split_eval` are seeded and split by query text (never the same
    query, compared case- and whitespace-insensitively, in two splits) or, for pairs, by a group
    column (an article), and check the result with :func:`check_disjoint`.

Every problem with the user's files is one :class:`~headstart.errors.BadInput` line naming the
file, the line/row or column, and the fix.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from ..errors import BadInput, did_you_mean
from .readers import EDGE_SPACE, is_blank, read_utf8, read_table

QUERY_NAMES = ("query", "anchor", "question", "sentence1", "text")
POSITIVE_NAMES = ("positive", "pos", "document", "passage", "answer", "context", "sentence2")
NEGATIVE_NAMES = ("negative", "neg", "hard_negative")
GROUP_NAMES = ("group", "article")
SCORE_NAMES = ("score", "similarity", "label")
SCORED_FIRST_NAMES = ("sentence1",)
SCORED_SECOND_NAMES = ("sentence2",)

KNOWN_SCORE_RANGES = ((0.0, 1.0), (-1.0, 1.0), (0.0, 5.0), (0.0, 10.0), (0.0, 100.0))
"""Score scales tried in order when no range is given: the first that holds every score is the
range (STS-B's 0-5 scores read as (0, 5)); scores that fit none use their observed min and max."""

CRANFIELD_GAINS = {1: 4, 2: 3, 3: 2, 4: 1, -1: 0}
"""Cranfield relevance codes -> nDCG gains. Cleverdon's codes run the other way from gains: 1 =
"references which are a complete answer to the question", 2 = "of a high degree of relevance",
3 = "useful as general background", 4 = "of minimum interest", 5 = "of no interest" (Cleverdon,
Mills & Keen, *Factors Determining the Performance of Indexing Systems*, vol. 1, 1966, p. 21;
restated in the cranqrel readme of Ed Fox's Virginia Disc 1, fox.cs.vt.edu/VAD1). So gain =
5 - code for codes 1..4, and -1 (the "no interest" judgements this cranqrel holds, one per query)
is judged non-relevant (gain 0). Note: ir_datasets' ``cranfield`` lists the codes in the reverse
order (4 = complete answer) and uses the raw codes as gains; that disagrees with the source."""


# -- types ---------------------------------------------------------------------------------------


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def query_key(text: str) -> str:
    """What makes two query texts "the same query" for splits: case-folded, whitespace collapsed."""
    return " ".join(EDGE_SPACE.sub("", text).split()).casefold()


@dataclass(frozen=True, eq=False)
class Pairs:
    """(query, positive) pairs, or (query, positive, negative) triplets when ``negatives`` is set.

    ``groups`` (e.g. an article per row) lets :func:`split_pairs` keep a group in one split;
    ``origin`` says where each row came from (``"pairs.csv line 3"``); ``columns`` which columns
    were read (``{"query": "question", "positive": "context"}``).
    """

    queries: list[str]
    positives: list[str]
    negatives: list[str] | None = None
    groups: list[str] | None = None
    source: str = ""
    origin: list[str] = field(repr=False, default_factory=list)
    columns: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.queries)
        for name in ("positives", "negatives", "groups", "origin"):
            values = getattr(self, name)
            if values is not None and (values or name != "origin") and len(values) != n:
                raise ValueError(f"Pairs: {name} has {len(values)} entries but queries has {n}")

    def __len__(self) -> int:
        return len(self.queries)

    @cached_property
    def fingerprint(self) -> str:
        """sha256 over the rows' texts (and groups), in order; independent of file name and format."""
        h = hashlib.sha256(b"pairs")
        for i in range(len(self)):
            neg = _sha(self.negatives[i]) if self.negatives is not None else ""
            group = _sha(self.groups[i]) if self.groups is not None else ""
            h.update(f"{_sha(self.queries[i])}\t{_sha(self.positives[i])}\t{neg}\t{group}\n".encode())
        return h.hexdigest()

    def subset(self, index: Sequence[int] | np.ndarray, source: str | None = None) -> Pairs:
        index = [int(i) for i in index]
        return Pairs(
            queries=[self.queries[i] for i in index],
            positives=[self.positives[i] for i in index],
            negatives=None if self.negatives is None else [self.negatives[i] for i in index],
            groups=None if self.groups is None else [self.groups[i] for i in index],
            source=source or self.source,
            origin=[self.origin[i] for i in index] if self.origin else [],
            columns=self.columns,
        )


@dataclass(frozen=True, eq=False)
class ScoredPairs:
    """Sentence pairs with a similarity score each (STS-style), for CoSENT and correlation metrics.

    ``score_range`` is the scale the scores are on (given, or inferred: see
    :data:`KNOWN_SCORE_RANGES`); :meth:`normalised` maps it to (0, 1).
    """

    sentences1: list[str]
    sentences2: list[str]
    scores: list[float]
    score_range: tuple[float, float]
    source: str = ""
    origin: list[str] = field(repr=False, default_factory=list)
    columns: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.sentences1)
        if len(self.sentences2) != n or len(self.scores) != n:
            raise ValueError(f"ScoredPairs: {n} first sentences, {len(self.sentences2)} second, {len(self.scores)} scores")
        lo, hi = self.score_range
        if not lo < hi:
            raise ValueError(f"ScoredPairs: score_range {self.score_range} must have low < high")

    def __len__(self) -> int:
        return len(self.sentences1)

    @cached_property
    def fingerprint(self) -> str:
        """sha256 over the pairs, their scores and the score range, in order."""
        h = hashlib.sha256(f"scored-pairs\t{self.score_range[0]!r}\t{self.score_range[1]!r}\n".encode())
        for a, b, s in zip(self.sentences1, self.sentences2, self.scores, strict=True):
            h.update(f"{_sha(a)}\t{_sha(b)}\t{float(s)!r}\n".encode())
        return h.hexdigest()

    def normalised(self) -> ScoredPairs:
        """The same pairs with scores mapped linearly from ``score_range`` to [0, 1]."""
        lo, hi = self.score_range
        return ScoredPairs(
            sentences1=self.sentences1, sentences2=self.sentences2,
            scores=[(float(s) - lo) / (hi - lo) for s in self.scores], score_range=(0.0, 1.0),
            source=self.source, origin=self.origin, columns=self.columns,
        )


@dataclass(frozen=True, eq=False)
class RetrievalEval:
    """An evaluation collection: ``queries`` and ``corpus`` map ids to texts, ``qrels`` maps a
    query id to ``{doc id: grade}`` (graded; grade > 0 is relevant, 0 judged non-relevant).

    ``titles`` holds document titles where the source has them (BEIR ``title``, SMART ``.T``);
    :meth:`documents` gives the texts to embed. Every qrels id is a known query/document (the
    readers check it); queries without judgements may be present and are left out by the metrics.
    """

    queries: dict[str, str]
    corpus: dict[str, str]
    qrels: dict[str, dict[str, int]]
    source: str = ""
    titles: dict[str, str] = field(default_factory=dict)

    @cached_property
    def fingerprint(self) -> str:
        """sha256 over queries, documents (with titles) and judgements, sorted by id."""
        h = hashlib.sha256(b"retrieval-eval")
        for qid in sorted(self.queries):
            h.update(f"q\t{_sha(qid)}\t{_sha(self.queries[qid])}\n".encode())
        for did in sorted(self.corpus):
            h.update(f"d\t{_sha(did)}\t{_sha(self.titles.get(did, ''))}\t{_sha(self.corpus[did])}\n".encode())
        for qid in sorted(self.qrels):
            for did in sorted(self.qrels[qid]):
                h.update(f"r\t{_sha(qid)}\t{_sha(did)}\t{int(self.qrels[qid][did])}\n".encode())
        return h.hexdigest()

    def documents(self) -> dict[str, str]:
        """Each document's text to embed: ``title + " " + text`` as BEIR joins them, or the text
        alone when it has no title or already begins with it (Cranfield's ``.W`` repeats ``.T``)."""
        out = {}
        for did, text in self.corpus.items():
            title = self.titles.get(did, "")
            out[did] = f"{title} {text}".strip() if title and not query_key(text).startswith(query_key(title)) else text
        return out

    def sizes(self) -> dict[str, int]:
        return {"queries": len(self.queries), "corpus": len(self.corpus),
                "judgements": sum(len(r) for r in self.qrels.values())}


@dataclass(frozen=True)
class PairSplit:
    train: Pairs
    val: Pairs | None
    """None when ``val_fraction`` is 0."""
    test: Pairs | None
    """None when ``test_fraction`` is 0 (the caller supplies the test set)."""

    def sizes(self) -> dict[str, int]:
        return {k: len(v) if v is not None else 0 for k, v in (("train", self.train), ("val", self.val), ("test", self.test))}


@dataclass(frozen=True)
class EvalSplit:
    """Query-disjoint parts of one collection; each keeps the whole corpus."""

    train: RetrievalEval
    val: RetrievalEval | None
    test: RetrievalEval | None


# -- training pairs --------------------------------------------------------------------------------


def load_pairs(path: str | Path, *, query_col: str | None = None, positive_col: str | None = None,
               negative_col: str | None = None, group_col: str | None = None, fmt: str | None = None,
               header: bool | None = None) -> Pairs:
    """Read (query, positive[, negative]) rows from a CSV/TSV/JSONL/Parquet file.

    Columns are named or inferred: query from :data:`QUERY_NAMES`, positive from
    :data:`POSITIVE_NAMES`, an optional negative from :data:`NEGATIVE_NAMES`, an optional group
    from :data:`GROUP_NAMES`. A file of (sentence1, sentence2, numeric score) is scored pairs, not
    pairs, and is refused here (read it with :func:`load_scored_pairs`). Empty cells are refused
    by row. ``fmt`` and ``header`` as in :func:`headstart.data.load_dataset`.
    """
    p = _existing(path)
    named = (query_col, positive_col, negative_col, group_col)
    columns, origin = read_table(p, fmt=fmt, header=header, names=(*named, *QUERY_NAMES, *POSITIVE_NAMES, *NEGATIVE_NAMES))
    names = list(columns)
    _check_named(p, names, {"--query-col": query_col, "--positive-col": positive_col,
                            "--negative-col": negative_col, "--group-col": group_col})
    taken = {c for c in named if c}
    if query_col is None and positive_col is None:
        score = _by_name(names, SCORE_NAMES, taken)
        first, second = _by_name(names, SCORED_FIRST_NAMES, taken), _by_name(names, SCORED_SECOND_NAMES, taken)
        if first and second and score and _mostly_numbers(columns[score]):
            raise BadInput(
                f"{p}: columns {first!r}, {second!r} and a numeric {score!r} are scored pairs (similarity), not "
                "(query, positive) pairs; read them as scored pairs, or name --query-col and --positive-col"
            )
    query = query_col or _by_name(names, QUERY_NAMES, taken)
    taken.add(query)
    positive = positive_col or _by_name(names, POSITIVE_NAMES, taken)
    taken.add(positive)
    negative = negative_col or _by_name(names, NEGATIVE_NAMES, taken)
    taken.add(negative)
    group = group_col or _by_name(names, GROUP_NAMES, taken)
    for role, col, opt, wanted in (("query", query, "--query-col", QUERY_NAMES), ("positive", positive, "--positive-col", POSITIVE_NAMES)):
        if col is None:
            raise BadInput(
                f"{p}: no {role} column among {', '.join(map(repr, names))} (looked for {', '.join(wanted)}); "
                f"name it with {opt} (and --query-col/--positive-col/--negative-col for the others)"
            )
    _check_distinct(p, {"query": query, "positive": positive, "negative": negative, "group": group})
    picked = {"query": query, "positive": positive}
    if negative:
        picked["negative"] = negative
    texts = {role: _texts(columns[col], origin, col, role) for role, col in picked.items()}
    groups = None
    if group:
        picked["group"] = group
        groups = _texts(columns[group], origin, group, "group")
    return Pairs(queries=texts["query"], positives=texts["positive"], negatives=texts.get("negative"), groups=groups,
                 source=str(p), origin=origin, columns=picked)


def load_scored_pairs(path: str | Path, *, sentence1_col: str | None = None, sentence2_col: str | None = None,
                      score_col: str | None = None, score_range: tuple[float, float] | None = None,
                      fmt: str | None = None, header: bool | None = None) -> ScoredPairs:
    """Read (sentence1, sentence2, score) rows; the score column is ``score``, ``similarity`` or
    ``label`` (or named) and must be numeric in every row.

    ``score_range`` is the scale (e.g. ``(0, 5)`` for STS-B); without it the first of
    :data:`KNOWN_SCORE_RANGES` that holds every score is used. A score outside a given range is
    refused by row.
    """
    p = _existing(path)
    named = (sentence1_col, sentence2_col, score_col)
    columns, origin = read_table(p, fmt=fmt, header=header, names=(*named, *SCORED_FIRST_NAMES, *SCORED_SECOND_NAMES, *SCORE_NAMES))
    names = list(columns)
    _check_named(p, names, {"--sentence1-col": sentence1_col, "--sentence2-col": sentence2_col, "--score-col": score_col})
    taken = {c for c in named if c}
    first = sentence1_col or _by_name(names, SCORED_FIRST_NAMES, taken)
    second = sentence2_col or _by_name(names, SCORED_SECOND_NAMES, taken | {first})
    score = score_col or _by_name(names, SCORE_NAMES, taken | {first, second})
    for role, col, opt, wanted in (("first-sentence", first, "--sentence1-col", SCORED_FIRST_NAMES),
                                   ("second-sentence", second, "--sentence2-col", SCORED_SECOND_NAMES),
                                   ("score", score, "--score-col", SCORE_NAMES)):
        if col is None:
            raise BadInput(
                f"{p}: no {role} column among {', '.join(map(repr, names))} (looked for {', '.join(wanted)}); "
                f"name it with {opt} (and --sentence1-col/--sentence2-col/--score-col for the others)"
            )
    _check_distinct(p, {"sentence1": first, "sentence2": second, "score": score})
    a = _texts(columns[first], origin, first, "first sentence")
    b = _texts(columns[second], origin, second, "second sentence")
    scores = []
    for v, where in zip(columns[score], origin, strict=True):
        number = _number(v)
        if number is None:
            raise BadInput(f"{where}: score {v!r} in column {score!r} is not a number; write a number (e.g. 3.8) or remove the row")
        scores.append(number)
    if score_range is not None:
        lo, hi = float(score_range[0]), float(score_range[1])
        if not lo < hi:
            raise BadInput(f"score range {score_range!r}: the low end must be below the high end, e.g. 0 5")
        bad = next((i for i, s in enumerate(scores) if not lo <= s <= hi), None)
        if bad is not None:
            raise BadInput(f"{origin[bad]}: score {scores[bad]:g} in column {score!r} is outside the given range {lo:g}..{hi:g}; "
                           "fix the score or give the range the file uses")
    else:
        lo, hi = infer_score_range(scores)
    return ScoredPairs(sentences1=a, sentences2=b, scores=scores, score_range=(lo, hi), source=str(p), origin=origin,
                       columns={"sentence1": first, "sentence2": second, "score": score})


def infer_score_range(scores: Sequence[float]) -> tuple[float, float]:
    """The first of :data:`KNOWN_SCORE_RANGES` holding every score, else (min, max) of the scores."""
    lo, hi = min(scores), max(scores)
    for a, b in KNOWN_SCORE_RANGES:
        if a <= lo and hi <= b:
            return a, b
    if lo == hi:
        raise BadInput(f"every score is {lo:g}, outside the known scales; give the score range")
    return float(lo), float(hi)


def read_squad(path: str | Path) -> Pairs:
    """A SQuAD v1.1 JSON file (XQuAD) as question -> paragraph pairs: every question's positive is
    the paragraph it was asked on, its group the article title (for article-disjoint splits)."""
    p = _existing(path)
    try:
        doc = json.loads(read_utf8(p))
    except json.JSONDecodeError as e:
        raise BadInput(f"{p} line {e.lineno}: not valid JSON ({e.msg}); a SQuAD file is one JSON object") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise BadInput(f"{p}: not a SQuAD v1.1 file: expected an object with a 'data' list of articles")
    queries, positives, groups, origin = [], [], [], []
    for a, article in enumerate(doc["data"], 1):
        title = article.get("title") if isinstance(article, dict) else None
        if is_blank(title) or not isinstance(article.get("paragraphs"), list):
            raise BadInput(f"{p}: article {a} needs a 'title' and a 'paragraphs' list (SQuAD v1.1 layout)")
        for n, para in enumerate(article["paragraphs"], 1):
            context = para.get("context") if isinstance(para, dict) else None
            if is_blank(context):
                raise BadInput(f"{p}: article {a} ({title!r}) paragraph {n}: empty or missing 'context'; fill it in or remove it")
            for qa in para.get("qas") or []:
                question = qa.get("question") if isinstance(qa, dict) else None
                where = f"{p.name} article {a} ({title}) paragraph {n} question {qa.get('id', '?') if isinstance(qa, dict) else '?'}"
                if is_blank(question):
                    raise BadInput(f"{where}: empty or missing 'question'; fill it in or remove it")
                queries.append(EDGE_SPACE.sub("", question))
                positives.append(EDGE_SPACE.sub("", context))
                groups.append(title)
                origin.append(where)
    if not queries:
        raise BadInput(f"{p}: no questions found; a SQuAD file has data[].paragraphs[].qas[].question")
    return Pairs(queries=queries, positives=positives, groups=groups, source=str(p), origin=origin,
                 columns={"query": "question", "positive": "context", "group": "title"})


# -- evaluation collections -------------------------------------------------------------------------


def read_beir(folder: str | Path, *, split: str = "test") -> RetrievalEval:
    """A BEIR-layout folder: ``corpus.jsonl`` (``_id``, optional ``title``, ``text``),
    ``queries.jsonl`` (``_id``, ``text``; an empty query is refused, an empty document kept) and ``qrels/<split>.tsv`` or ``qrels.tsv`` (header
    ``query-id corpus-id score``, integer grades). As BEIR's loader, only queries judged in the
    qrels file are kept (``queries.jsonl`` usually holds every split's queries)."""
    root = _existing(folder)
    if not root.is_dir():
        raise BadInput(f"{root}: not a folder; a BEIR collection is a folder with corpus.jsonl, queries.jsonl and qrels/{split}.tsv")
    candidates = [root / "qrels" / f"{split}.tsv", root / "qrels.tsv"]
    qrels_path = next((c for c in candidates if c.is_file()), None)
    if qrels_path is None:
        raise BadInput(f"{root}: no relevance judgements: looked for {' and '.join(str(c.relative_to(root)) for c in candidates)}")
    corpus, titles = _read_id_jsonl(root / "corpus.jsonl", with_title=True)
    queries, _ = _read_id_jsonl(root / "queries.jsonl", with_title=False)
    qrels = _read_qrels(qrels_path, set(queries), set(corpus), columns=(0, 1, 2))
    return RetrievalEval(queries={q: queries[q] for q in queries if q in qrels}, corpus=corpus, qrels=qrels,
                         source=str(root), titles=titles)


def read_smart(docs: str | Path, queries: str | Path, qrels: str | Path, *, qrels_query_ids: str = "id",
               qrels_columns: tuple[int, int, int | None] = (0, 1, 2), gains: Mapping[int, int] | None = None,
               text_sections: tuple[str, ...] = ("W",), title_section: str | None = "T") -> RetrievalEval:
    """A SMART-format collection (Cranfield, CISI, MED, ...): records start with ``.I <id>``,
    sections with ``.T`` (title), ``.A`` (authors), ``.B`` (bibliography), ``.W`` (text), ``.X``...

    ``text_sections`` are joined into the text (a section repeated in one record is appended:
    Cranfield's documents 576-578 are damaged that way), ``title_section`` gives the title; other
    sections are ignored. Lines are joined with single spaces. A document with no text is kept
    as an empty text (Cranfield's 471 and 995 are empty: the corpus keeps its 1400 documents); a
    query with no text is refused. Numeric ids lose leading zeros
    (``.I 001`` is ``1``). The qrels file has whitespace-separated columns; ``qrels_columns`` are
    the positions of (query, document, grade), grade None meaning every line is grade 1 (3
    columns for Cranfield, ``(0, 2, 3)`` for TREC-style qrels). ``qrels_query_ids="order"`` when
    the qrels number queries 1..N in file order rather than by ``.I`` id (Cranfield): query ids
    are then those numbers. ``gains`` maps the file's grades to gains (e.g.
    :data:`CRANFIELD_GAINS`); a grade it lacks is refused by line.
    """
    if qrels_query_ids not in ("id", "order"):
        raise ValueError(f"qrels_query_ids must be 'id' or 'order' (got {qrels_query_ids!r})")
    docs_p, queries_p, qrels_p = _existing(docs), _existing(queries), _existing(qrels)
    records = _read_smart_records(docs_p, text_sections, title_section, allow_empty=True)
    corpus = {i: text for i, (text, _, _) in records.items()}
    titles = {i: title for i, (_, title, _) in records.items() if title}
    query_records = _read_smart_records(queries_p, text_sections, None, allow_empty=False)
    if qrels_query_ids == "order":
        query_texts = {str(n): text for n, (text, _, _) in enumerate(query_records.values(), 1)}
    else:
        query_texts = {i: text for i, (text, _, _) in query_records.items()}
    judged = _read_qrels(qrels_p, set(query_texts), set(corpus), columns=qrels_columns, gains=gains,
                         header=False, numeric_ids=True,
                         query_hint=" (qrels number queries by position in the queries file here)" if qrels_query_ids == "order" else "")
    return RetrievalEval(queries=query_texts, corpus=corpus, qrels=judged, source=str(docs_p.parent), titles=titles)


def read_cranfield(folder: str | Path) -> RetrievalEval:
    """The Cranfield collection (``cran.all.1400``, ``cran.qry``, ``cranqrel``): 1400 documents,
    225 queries with ids ``1``..``225`` (the qrels number queries in file order, not by their
    ``.I`` ids), grades mapped to gains by :data:`CRANFIELD_GAINS`."""
    root = _existing(folder)
    return read_smart(root / "cran.all.1400", root / "cran.qry", root / "cranqrel", qrels_query_ids="order",
                      gains=CRANFIELD_GAINS)


def eval_from_pairs(pairs: Pairs) -> RetrievalEval:
    """An evaluation collection from pairs: each unique query text is a query (``q1``, ``q2``, ...
    in order of first appearance), each unique positive or negative text a document (``d1``, ...),
    and each pair a grade-1 judgement; negatives are distractors in the corpus, not judged."""
    qids: dict[str, str] = {}
    dids: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for i, (q, pos) in enumerate(zip(pairs.queries, pairs.positives, strict=True)):
        qid = qids.setdefault(q, f"q{len(qids) + 1}")
        did = dids.setdefault(pos, f"d{len(dids) + 1}")
        qrels.setdefault(qid, {})[did] = 1
        if pairs.negatives is not None:
            dids.setdefault(pairs.negatives[i], f"d{len(dids) + 1}")
    return RetrievalEval(queries={v: k for k, v in qids.items()}, corpus={v: k for k, v in dids.items()}, qrels=qrels,
                         source=pairs.source)


def pairs_from_eval(ev: RetrievalEval, *, min_grade: int = 1) -> Pairs:
    """Training pairs from a collection: one (query, document) pair per judgement with grade >=
    ``min_grade``, queries in id order; documents as :meth:`RetrievalEval.documents` gives them."""
    docs = ev.documents()
    queries, positives, origin = [], [], []
    for qid in sorted(ev.qrels, key=_id_sort_key):
        for did, grade in sorted(ev.qrels[qid].items(), key=lambda kv: _id_sort_key(kv[0])):
            if grade >= min_grade:
                queries.append(ev.queries[qid])
                positives.append(docs[did])
                origin.append(f"{ev.source} query {qid} document {did}")
    if not queries:
        raise BadInput(f"{ev.source}: no judgement with grade >= {min_grade}; nothing to train on")
    return Pairs(queries=queries, positives=positives, source=ev.source, origin=origin,
                 columns={"query": "query", "positive": "document"})


def load_retrieval_eval(path: str | Path, *, split: str = "test") -> RetrievalEval:
    """An evaluation collection from whatever ``path`` is: a BEIR folder (``corpus.jsonl``), a
    Cranfield folder (``cran.all.1400``), a SQuAD ``.json`` file, or a pairs table."""
    p = _existing(path)
    if p.is_dir():
        if (p / "corpus.jsonl").is_file():
            return read_beir(p, split=split)
        if (p / "cran.all.1400").is_file():
            return read_cranfield(p)
        raise BadInput(f"{p}: not a retrieval collection: expected corpus.jsonl, queries.jsonl and qrels/ (BEIR) or cran.all.1400")
    if p.suffix.lower() == ".json":
        return eval_from_pairs(read_squad(p))
    return eval_from_pairs(load_pairs(p))


# -- splits --------------------------------------------------------------------------------------


def split_pairs(pairs: Pairs, *, val_fraction: float, test_fraction: float, seed: int, by: str = "query") -> PairSplit:
    """Seeded split of pairs with no query in two splits.

    ``by="query"``: the units are the distinct queries (:func:`query_key`), so every row of a
    query lands in the same split. ``by="group"``: the units are groups (articles), and groups that
    share a query are kept together, so the split is group- and query-disjoint. Fractions are of
    units, not rows; a fraction of 0 gives no such split (None), a positive one at least one unit.
    Units are ordered by key before the seeded shuffle, so the split does not depend on row order.
    """
    if by not in ("query", "group"):
        raise BadInput(f"split by {by!r}: use 'query' or 'group'")
    _check_fractions(val_fraction, test_fraction)
    keys = [query_key(q) for q in pairs.queries]
    if by == "query":
        unit_of_row = keys
    else:
        if pairs.groups is None:
            raise BadInput(f"{pairs.source}: no group column to split by; name it with --group-col (e.g. the article)")
        unit_of_row = _linked_groups(pairs.groups, keys)
    units = sorted(set(unit_of_row))
    where = _assign(units, val_fraction, test_fraction, seed, what=f"{pairs.source}: {'queries' if by == 'query' else 'groups'}")
    part = [where[u] for u in unit_of_row]
    take = {name: [i for i, w in enumerate(part) if w == name] for name in ("train", "val", "test")}
    split = PairSplit(
        train=pairs.subset(take["train"]),
        val=pairs.subset(take["val"]) if val_fraction > 0 else None,
        test=pairs.subset(take["test"]) if test_fraction > 0 else None,
    )
    parts = [x for x in (split.train, split.val, split.test) if x is not None]
    for i, a in enumerate(parts):
        for b in parts[i + 1:]:
            check_disjoint(a, b, by=by)
    return split


def split_eval(ev: RetrievalEval, *, val_fraction: float, test_fraction: float, seed: int) -> EvalSplit:
    """Seeded query-disjoint split of a collection (queries with the same text stay together);
    every part keeps the whole corpus and the judgements of its queries. Queries without
    judgements are left out. Fractions as in :func:`split_pairs`."""
    _check_fractions(val_fraction, test_fraction)
    judged = [q for q in ev.queries if q in ev.qrels]
    key_of = {q: query_key(ev.queries[q]) for q in judged}
    where = _assign(sorted(set(key_of.values())), val_fraction, test_fraction, seed, what=f"{ev.source}: queries")

    def part(name: str) -> RetrievalEval:
        ids = [q for q in judged if where[key_of[q]] == name]
        return RetrievalEval(queries={q: ev.queries[q] for q in ids}, corpus=ev.corpus, qrels={q: ev.qrels[q] for q in ids},
                             source=ev.source, titles=ev.titles)

    split = EvalSplit(train=part("train"), val=part("val") if val_fraction > 0 else None,
                      test=part("test") if test_fraction > 0 else None)
    seen: dict[str, str] = {}
    for name, p in (("train", split.train), ("val", split.val), ("test", split.test)):
        for text in (p.queries.values() if p is not None else ()):
            other = seen.setdefault(query_key(text), name)
            if other != name:
                raise AssertionError(f"split_eval leaked query {text!r} into {other} and {name}")
    return split


def check_disjoint(a: Pairs, b: Pairs, *, by: str = "query") -> None:
    """Refuse two pair sets that share a query (compared by :func:`query_key`) or, with
    ``by="group"``, a group: the held-out one would measure memorisation."""
    first = {}
    for q, where in zip(a.queries, a.origin or [a.source] * len(a), strict=True):
        first.setdefault(query_key(q), where)
    for q, where in zip(b.queries, b.origin or [b.source] * len(b), strict=True):
        if query_key(q) in first:
            raise BadInput(
                f"{where}: query {_short(q)} is also in {first[query_key(q)]}; a query must be in one split only "
                "(remove it from one file, or let headstart split one file by query)"
            )
    if by == "group" and a.groups is not None and b.groups is not None:
        shared = sorted(set(a.groups) & set(b.groups))
        if shared:
            raise BadInput(f"{b.source}: group {shared[0]!r} is in two splits ({len(shared)} groups in all); a group must be in one split only")


# -- helpers ---------------------------------------------------------------------------------------


def _existing(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise BadInput(f"{p}: no such file or folder; check the path")
    return p


def _by_name(names: list[str], wanted: tuple[str, ...], exclude: set) -> str | None:
    lower = {n.lower(): n for n in reversed(names) if n not in exclude}
    return next((lower[w] for w in wanted if w in lower), None)


def _check_named(path: Path, names: list[str], named: dict[str, str | None]) -> None:
    for opt, col in named.items():
        if col is not None and col not in names:
            raise BadInput(f"{path}: {opt} {col!r} is not a column; columns are {', '.join(map(repr, names))}.{did_you_mean(col, names)}")


def _check_distinct(path: Path, roles: dict[str, str | None]) -> None:
    seen: dict[str, str] = {}
    for role, col in roles.items():
        if col is None:
            continue
        if col in seen:
            raise BadInput(f"{path}: column {col!r} is both the {seen[col]} and the {role}; name each with its own --{seen[col]}-col/--{role}-col")
        seen[col] = role


def _texts(values: list, origin: list[str], column: str, role: str) -> list[str]:
    bad = [i for i, v in enumerate(values) if is_blank(v)]
    if bad:
        raise BadInput(
            f"{origin[bad[0]]}: empty {role} in column {column!r}" + (f" ({len(bad)} rows in all)" if len(bad) > 1 else "")
            + "; fill in or remove those rows"
        )
    return [EDGE_SPACE.sub("", v) for v in values]


def _number(v) -> float | None:
    if not isinstance(v, str):
        return None
    try:
        x = float(v)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def _mostly_numbers(values: list) -> bool:
    filled = [v for v in values if not is_blank(v)]
    return bool(filled) and sum(_number(v) is not None for v in filled) >= 0.9 * len(filled)


def _short(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _normal_id(raw: str, numeric: bool) -> str:
    return str(int(raw)) if numeric and raw.isdigit() else raw


def _id_sort_key(i: str):
    return (0, int(i), i) if i.isdigit() else (1, 0, i)


def _read_id_jsonl(path: Path, *, with_title: bool) -> tuple[dict[str, str], dict[str, str]]:
    """``{_id: text}`` (and ``{_id: title}``) from a BEIR corpus/queries file; refuses missing or
    duplicate ids, naming the line(s), and empty queries (an empty document is kept: it is part
    of the collection, and simply never relevant by content)."""
    allow_empty = with_title
    if not path.is_file():
        raise BadInput(f"{path}: missing; a BEIR collection has corpus.jsonl and queries.jsonl beside qrels/")
    if path.suffix.lower() != ".jsonl":
        raise BadInput(f"{path}: expected a .jsonl file")
    columns, origin = read_table(path, fmt="jsonl")
    ids, texts = columns.get("_id"), columns.get("text")
    if ids is None or texts is None:
        raise BadInput(f"{path}: each line needs '_id' and 'text' (found {', '.join(map(repr, columns))})")
    titles_col = columns.get("title") if with_title else None
    out: dict[str, str] = {}
    titles: dict[str, str] = {}
    first: dict[str, str] = {}
    for n, (raw, text, where) in enumerate(zip(ids, texts, origin, strict=True)):
        if not isinstance(raw, str) or not raw.strip():
            raise BadInput(f"{where}: missing or empty '_id'; every record needs an id")
        i = raw.strip()
        if i in first:
            raise BadInput(f"{where}: _id {i!r} appears again (first at {first[i]}); ids must be unique: rename or remove one")
        first[i] = where
        title = titles_col[n] if titles_col is not None else None
        title = EDGE_SPACE.sub("", title) if isinstance(title, str) else ""
        if is_blank(text) and not title and not allow_empty:
            raise BadInput(f"{where}: empty 'text' for _id {i!r}; fill it in or remove the line")
        out[i] = EDGE_SPACE.sub("", text) if isinstance(text, str) else ""
        if title:
            titles[i] = title
    return out, titles


_HEADER_WORDS = {"query-id", "query_id", "qid", "queryid", "query"}


def _read_qrels(path: Path, query_ids: set[str], doc_ids: set[str], *, columns: tuple[int, int, int | None],
                gains: Mapping[int, int] | None = None, header: bool | None = None, numeric_ids: bool = False,
                query_hint: str = "") -> dict[str, dict[str, int]]:
    """``{query id: {doc id: grade}}`` from a whitespace/tab-separated qrels file. ``header=None``
    skips a first line whose first field is a header word (``query-id``). Unknown ids, non-integer
    grades and one pair judged twice with different grades are refused by line."""
    qcol, dcol, gcol = columns
    width = max(c for c in columns if c is not None) + 1
    qrels: dict[str, dict[str, int]] = {}
    seen: dict[tuple[str, str], tuple[int, int]] = {}
    for n, line in enumerate(read_utf8(path).splitlines(), 1):
        fields = line.split("\t") if "\t" in line else line.split()
        fields = [f.strip() for f in fields]
        if not any(fields):
            continue
        if n == 1 and header is not False and fields[0].lower() in _HEADER_WORDS:
            continue
        if len(fields) < width:
            raise BadInput(f"{path} line {n}: {len(fields)} fields, expected {width} (query, document, grade); fix the line")
        qid, did = _normal_id(fields[qcol], numeric_ids), _normal_id(fields[dcol], numeric_ids)
        if gcol is None:
            grade = 1
        else:
            try:
                grade = int(fields[gcol])
            except ValueError:
                raise BadInput(f"{path} line {n}: grade {fields[gcol]!r} is not an integer; relevance grades are whole numbers (0, 1, 2, ...)") from None
        if gains is not None:
            if grade not in gains:
                raise BadInput(f"{path} line {n}: grade {grade} is not one of {', '.join(map(str, sorted(gains)))}; fix the line")
            grade = int(gains[grade])
        if qid not in query_ids:
            raise BadInput(f"{path} line {n}: query {qid!r} is not in the queries ({len(query_ids)} queries){query_hint}; "
                           "fix the id or remove the line")
        if did not in doc_ids:
            raise BadInput(f"{path} line {n}: document {did!r} is not in the corpus ({len(doc_ids)} documents); fix the id or remove the line")
        if (qid, did) in seen and seen[(qid, did)][0] != grade:
            raise BadInput(f"{path} line {n}: query {qid!r}, document {did!r} judged {grade} here but {seen[(qid, did)][0]} at line "
                           f"{seen[(qid, did)][1]}; keep one judgement")
        seen.setdefault((qid, did), (grade, n))
        qrels.setdefault(qid, {})[did] = grade
    if not qrels:
        raise BadInput(f"{path}: no relevance judgements; each line is 'query-id<TAB>corpus-id<TAB>score'")
    return qrels


_MARKER = re.compile(r"^\.([A-Z])(?:\s+(.*))?$")


def _read_smart_records(path: Path, text_sections: tuple[str, ...], title_section: str | None, *,
                        allow_empty: bool) -> dict[str, tuple[str, str, int]]:
    """``{id: (text, title, line)}`` from a SMART file, in file order; a record with no text is
    refused unless ``allow_empty`` (documents: kept as "")."""
    records: dict[str, tuple[str, str, int]] = {}
    current: dict[str, list[str]] | None = None
    section = None
    rid, start = None, 0

    def close():
        if current is None:
            return
        text = " ".join(" ".join(current.get(s, [])) for s in text_sections)
        text = " ".join(text.split())
        title = " ".join(" ".join(current.get(title_section, [])).split()) if title_section else ""
        if not text and not allow_empty:
            raise BadInput(f"{path} line {start}: record .I {rid} has no text (no {'/'.join('.' + s for s in text_sections)} section "
                           "or an empty one); add it or remove the record")
        records[rid] = (text, title, start)

    for n, line in enumerate(read_utf8(path).splitlines(), 1):
        m = _MARKER.match(line.rstrip())
        if m and m.group(1) == "I":
            close()
            raw = (m.group(2) or "").strip()
            if not raw:
                raise BadInput(f"{path} line {n}: '.I' without an id; write '.I <id>'")
            rid = _normal_id(raw, True)
            if rid in records:
                raise BadInput(f"{path} line {n}: id {rid!r} appears again (first at line {records[rid][2]}); ids must be unique")
            current, section, start = {}, None, n
        elif m:
            if current is None:
                raise BadInput(f"{path} line {n}: section '.{m.group(1)}' before any '.I <id>' line; not a SMART file?")
            section = m.group(1)
            current.setdefault(section, [])
            if m.group(2):
                current[section].append(m.group(2))
        elif line.strip():
            if current is None:
                raise BadInput(f"{path} line {n}: text before the first '.I <id>' line; a SMART file starts with '.I <id>'")
            if section is not None:
                current[section].append(line.strip())
    close()
    if not records:
        raise BadInput(f"{path}: no '.I <id>' records; not a SMART-format file")
    return records


def _linked_groups(groups: list[str], keys: list[str]) -> list[str]:
    """Each row's unit for a group split: its group, merged with every group it shares a query
    with (union-find), named by the smallest group name in the merged set."""
    parent = {g: g for g in groups}

    def find(g: str) -> str:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    first_group: dict[str, str] = {}
    for g, k in zip(groups, keys, strict=True):
        other = first_group.setdefault(k, g)
        a, b = find(g), find(other)
        if a != b:
            parent[max(a, b)] = min(a, b)
    return [find(g) for g in groups]


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise BadInput(f"split fractions must be in [0, 1) and sum below 1 (validation {val_fraction}, test {test_fraction})")


def _assign(units: list[str], val_fraction: float, test_fraction: float, seed: int, *, what: str) -> dict[str, str]:
    """``{unit: "train" | "val" | "test"}``: a seeded shuffle of the sorted units, cut by fractions."""
    n = len(units)
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
    if n - n_test - n_val < 1:
        raise BadInput(f"{what}: {n} to split, too few for {n_test} test, {n_val} validation and at least 1 for training; add data "
                       "or lower the fractions")
    order = np.random.default_rng(seed).permutation(n)
    out = {}
    for rank, i in enumerate(order):
        out[units[i]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return out
