"""Retrieval data: pairs/triplets/scored pairs in four formats, BEIR, SMART (Cranfield) and SQuAD
readers, one-line errors naming the row or line, and query-/group-disjoint seeded splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from headstart.data.retrieval import (
    CRANFIELD_GAINS,
    Pairs,
    check_disjoint,
    eval_from_pairs,
    load_pairs,
    load_retrieval_eval,
    load_scored_pairs,
    pairs_from_eval,
    query_key,
    read_beir,
    read_cranfield,
    read_smart,
    read_squad,
    split_eval,
    split_pairs,
)
from headstart.errors import BadInput

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"

PAIRS = [
    ("how do I reset my card pin", "Resetting a PIN: open the app, choose Card, then PIN."),
    ("where is my parcel", "Parcels are tracked under Orders, with the courier's link."),
    ("can I pay with a card abroad", "Cards work abroad wherever the network logo is shown."),
]


def bad(match: str):
    """pytest.raises(BadInput) whose message is one line matching ``match``."""
    return pytest.raises(BadInput, match=match)


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


# -- pairs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_pairs_read_the_same_in_every_format(tmp_path, write_table, suffix):
    pairs = load_pairs(write_table(tmp_path / f"pairs{suffix}", PAIRS, columns=("query", "positive")))
    assert pairs.queries == [q for q, _ in PAIRS]
    assert pairs.positives == [p for _, p in PAIRS]
    assert pairs.negatives is None and pairs.groups is None
    assert pairs.columns == {"query": "query", "positive": "positive"}
    assert pairs.origin[0] in (f"pairs{suffix} line 2", f"pairs{suffix} line 1", f"pairs{suffix} row 1")
    reference = load_pairs(write_table(tmp_path / "reference.csv", PAIRS, columns=("query", "positive")))
    assert pairs.fingerprint == reference.fingerprint


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_triplets_are_inferred_in_every_format(tmp_path, write_table, suffix):
    rows = [(q, p, f"unrelated text {i}") for i, (q, p) in enumerate(PAIRS)]
    pairs = load_pairs(write_table(tmp_path / f"triplets{suffix}", rows, columns=("anchor", "pos", "hard_negative")))
    assert pairs.columns == {"query": "anchor", "positive": "pos", "negative": "hard_negative"}
    assert pairs.negatives == [n for _, _, n in rows]
    pairs_only = load_pairs(write_table(tmp_path / f"pairs{suffix}", PAIRS, columns=("anchor", "pos")))
    assert pairs.fingerprint != pairs_only.fingerprint  # the negatives are content


@pytest.mark.parametrize(
    ("columns", "query", "positive"),
    [
        (("question", "context"), "question", "context"),
        (("text", "document"), "text", "document"),
        (("sentence1", "sentence2"), "sentence1", "sentence2"),  # no score: pairs
        (("Query", "Passage"), "Query", "Passage"),
    ],
)
def test_pair_columns_inferred_by_name(tmp_path, write_table, columns, query, positive):
    pairs = load_pairs(write_table(tmp_path / "p.csv", PAIRS, columns=columns))
    assert pairs.columns == {"query": query, "positive": positive}


def test_named_columns_and_group(tmp_path, write_table):
    rows = [(q, p, "art") for q, p in PAIRS]
    path = write_table(tmp_path / "p.jsonl", rows, columns=("q", "doc", "article"))
    pairs = load_pairs(path, query_col="q", positive_col="doc")
    assert pairs.groups == ["art"] * 3 and pairs.columns["group"] == "article"
    with bad("--query-col 'qq' is not a column; columns are 'q', 'doc', 'article'. Did you mean 'q'") as e:
        load_pairs(path, query_col="qq", positive_col="doc")
    one_line(e)


def test_missing_column_lists_columns_and_options(tmp_path, write_table):
    with bad(r"no positive column among 'query', 'other' .*--positive-col .*--query-col") as e:
        load_pairs(write_table(tmp_path / "p.csv", PAIRS, columns=("query", "other")))
    one_line(e)
    with bad(r"no query column among 'a', 'b' .*--query-col"):
        load_pairs(write_table(tmp_path / "q.csv", PAIRS, columns=("a", "b")))
    with bad("column 'x' is both the query and the positive"):
        load_pairs(write_table(tmp_path / "x.csv", PAIRS, columns=("x", "y")), query_col="x", positive_col="x")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_pair_with_an_empty_side_names_the_row(tmp_path, write_table, suffix):
    rows = [PAIRS[0], (PAIRS[1][0], "   "), PAIRS[2]]
    with bad(r"pairs\S* (line|row) \d: empty positive in column 'positive'") as e:
        load_pairs(write_table(tmp_path / f"pairs{suffix}", rows, columns=("query", "positive")))
    assert one_line(e).startswith({".csv": "pairs.csv line 3", ".jsonl": "pairs.jsonl line 2", ".parquet": "pairs.parquet row 2"}[suffix])
    with bad("empty query in column 'query' .2 rows in all"):
        load_pairs(write_table(tmp_path / "q.csv", [("", "a b c"), ("\u200b", "d e f"), PAIRS[0]], columns=("query", "positive")))
    with bad("q.jsonl line 1: empty negative"):
        load_pairs(write_table(tmp_path / "q.jsonl", [(*PAIRS[0], None), (*PAIRS[1], "n")], columns=("query", "positive", "negative")))


# -- scored pairs --------------------------------------------------------------------------------


SCORED = [("A man plays a guitar.", "A person plays music.", "4.2"), ("A dog runs.", "The stock fell.", "0"),
          ("Two kids play.", "Children are playing.", "5")]


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_scored_pairs_record_and_normalise_the_range(tmp_path, write_table, suffix):
    rows = SCORED if suffix != ".parquet" else [(a, b, float(s)) for a, b, s in SCORED]
    scored = load_scored_pairs(write_table(tmp_path / f"sts{suffix}", rows, columns=("sentence1", "sentence2", "score")))
    assert scored.scores == [4.2, 0.0, 5.0]
    assert scored.score_range == (0.0, 5.0)  # inferred: the first known scale holding every score
    unit = scored.normalised()
    assert unit.scores == pytest.approx([0.84, 0.0, 1.0]) and unit.score_range == (0.0, 1.0)
    assert unit.fingerprint != scored.fingerprint
    assert load_scored_pairs(write_table(tmp_path / "sts.csv", SCORED, columns=("sentence1", "sentence2", "similarity"))
                             ).fingerprint == scored.fingerprint


def test_scored_pairs_given_range_and_errors(tmp_path, write_table):
    path = write_table(tmp_path / "sts.csv", SCORED, columns=("sentence1", "sentence2", "label"))
    assert load_scored_pairs(path, score_range=(0, 10)).normalised().scores == pytest.approx([0.42, 0.0, 0.5])
    with bad(r"sts.csv line 4: score 5 in column 'label' is outside the given range 0..4.5"):
        load_scored_pairs(path, score_range=(0, 4.5))
    rows = [SCORED[0], (SCORED[1][0], SCORED[1][1], "high"), SCORED[2]]
    with bad("bad.csv line 3: score 'high' in column 'score' is not a number") as e:
        load_scored_pairs(write_table(tmp_path / "bad.csv", rows, columns=("sentence1", "sentence2", "score")))
    one_line(e)
    with bad("nan.csv line 2: score 'nan'"):
        load_scored_pairs(write_table(tmp_path / "nan.csv", [("a b", "c d", "nan")] + SCORED, columns=("sentence1", "sentence2", "score")))
    with bad(r"no score column among 'sentence1', 'sentence2' .*--score-col"):
        load_scored_pairs(write_table(tmp_path / "two.csv", [r[:2] for r in SCORED], columns=("sentence1", "sentence2")))


def test_a_scored_file_is_not_read_as_pairs(tmp_path, write_table):
    with bad("scored pairs .similarity., not .query, positive. pairs") as e:
        load_pairs(write_table(tmp_path / "sts.csv", SCORED, columns=("sentence1", "sentence2", "score")))
    one_line(e)


# -- BEIR --------------------------------------------------------------------------------------


def write_beir(root: Path, *, qrels_rows: list[str], qrels_name: str = "qrels/test.tsv", corpus_extra: str = "",
               queries_extra: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    corpus = [{"_id": "d1", "title": "Cards", "text": "How to reset a PIN."}, {"_id": "d2", "text": "Tracking parcels."},
              {"_id": 3, "title": "", "text": "Paying abroad."}]
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus) + corpus_extra, encoding="utf-8")
    queries = [{"_id": "q1", "text": "reset pin"}, {"_id": "q2", "text": "parcel"}, {"_id": "q3", "text": "a train query"}]
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries) + queries_extra, encoding="utf-8")
    qrels = root / qrels_name
    qrels.parent.mkdir(parents=True, exist_ok=True)
    qrels.write_text("query-id\tcorpus-id\tscore\n" + "".join(r + "\n" for r in qrels_rows), encoding="utf-8")
    return root


def test_beir_layout_with_graded_relevance(tmp_path):
    root = write_beir(tmp_path / "beir", qrels_rows=["q1\td1\t2", "q1\t3\t1", "q2\td2\t1", "q2\td1\t0"])
    ev = read_beir(root)
    assert ev.qrels == {"q1": {"d1": 2, "3": 1}, "q2": {"d2": 1, "d1": 0}}
    assert set(ev.queries) == {"q1", "q2"}  # as BEIR's loader: only the judged queries of the split
    assert ev.corpus["3"] == "Paying abroad." and ev.titles == {"d1": "Cards"}
    assert ev.documents()["d1"] == "Cards How to reset a PIN."
    assert ev.sizes() == {"queries": 2, "corpus": 3, "judgements": 4}
    flat = write_beir(tmp_path / "flat", qrels_rows=["q1\td1\t2", "q1\t3\t1", "q2\td2\t1", "q2\td1\t0"], qrels_name="qrels.tsv")
    assert load_retrieval_eval(flat).fingerprint == ev.fingerprint  # content, not layout


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"qrels_rows": ["q1\td1\t1", "q2\td9\t1"]}, r"test.tsv line 3: document 'd9' is not in the corpus"),
        ({"qrels_rows": ["q1\td1\t1", "q7\td1\t1"]}, r"test.tsv line 3: query 'q7' is not in the queries"),
        ({"qrels_rows": ["q1\td1\tyes"]}, r"test.tsv line 2: grade 'yes' is not an integer"),
        ({"qrels_rows": ["q1\td1\t1", "q1\td1\t2"]}, r"test.tsv line 3: query 'q1', document 'd1' judged 2 here but 1 at line 2"),
        ({"qrels_rows": ["q1\td1\t1"], "corpus_extra": json.dumps({"_id": "d2", "text": "again"}) + "\n"},
         r"corpus.jsonl line 4: _id 'd2' appears again \(first at corpus.jsonl line 2\)"),
        ({"qrels_rows": ["q1\td1\t1"], "queries_extra": json.dumps({"_id": "q1", "text": "again"}) + "\n"},
         r"queries.jsonl line 4: _id 'q1' appears again \(first at queries.jsonl line 1\)"),
        ({"qrels_rows": ["q1\td1\t1"], "queries_extra": json.dumps({"_id": "q9", "text": " "}) + "\n"},
         r"queries.jsonl line 4: empty 'text' for _id 'q9'"),
        ({"qrels_rows": ["q1\td1\t1"], "corpus_extra": json.dumps({"text": "no id"}) + "\n"},
         r"corpus.jsonl line 4: missing or empty '_id'"),
    ],
)
def test_beir_errors_name_the_line(tmp_path, kwargs, match):
    root = write_beir(tmp_path / "beir", **kwargs)
    with bad(match) as e:
        read_beir(root)
    one_line(e)


def test_beir_without_qrels_says_where_it_looked(tmp_path):
    root = write_beir(tmp_path / "beir", qrels_rows=["q1\td1\t1"], qrels_name="qrels/dev.tsv")
    with bad(r"no relevance judgements: looked for qrels/test.tsv and qrels.tsv"):
        read_beir(root)
    assert read_beir(root, split="dev").qrels == {"q1": {"d1": 1}}


# -- SMART / Cranfield -----------------------------------------------------------------------------


DOCS = """.I 1
.T
wing in a slipstream .
.A
someone
.B
j. ae. scs. 25, 1958.
.W
wing in a slipstream .
an experimental study
of a wing .
.I 2
.T
.A
.B
.W
.I 3
.T
shear flow .
.W
shear flow past a plate .
.W
a second, damaged .W section .
"""
QUERIES = """.I 001
.W
what is a slipstream .
.I 004
.W
shear flow past
plates .
"""


def write_smart(root: Path, qrels: str, docs: str = DOCS, queries: str = QUERIES) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cran.all.1400").write_text(docs)
    (root / "cran.qry").write_text(queries)
    (root / "cranqrel").write_text(qrels)
    return root


def test_smart_reader_with_cranfield_conventions(tmp_path):
    root = write_smart(tmp_path / "cran", "1 1 1 \n1 3 -1\n2 3 2\n2 1 4\n")
    ev = read_cranfield(root)
    # qrels number queries by position (1, 2), not by their .I ids (001, 004)
    assert ev.queries == {"1": "what is a slipstream .", "2": "shear flow past plates ."}
    assert ev.corpus == {"1": "wing in a slipstream . an experimental study of a wing .", "2": "",  # empty doc kept
                         "3": "shear flow past a plate . a second, damaged .W section ."}
    assert ev.titles == {"1": "wing in a slipstream .", "3": "shear flow ."}
    assert ev.documents()["1"] == ev.corpus["1"]  # the text already starts with its title
    assert ev.documents()["3"] == "shear flow . shear flow past a plate . a second, damaged .W section ."
    # gains = 5 - grade; -1 is judged non-relevant
    assert ev.qrels == {"1": {"1": 4, "3": 0}, "2": {"3": 3, "1": 1}}
    assert CRANFIELD_GAINS == {1: 4, 2: 3, 3: 2, 4: 1, -1: 0}
    assert load_retrieval_eval(root).fingerprint == ev.fingerprint


def test_smart_reader_by_id_and_trec_columns(tmp_path):
    root = write_smart(tmp_path / "smart", "4 0 3 1\n1 0 1 2\n")
    ev = read_smart(root / "cran.all.1400", root / "cran.qry", root / "cranqrel", qrels_columns=(0, 2, 3))
    assert set(ev.queries) == {"1", "4"}  # .I 001 -> "1"
    assert ev.qrels == {"4": {"3": 1}, "1": {"1": 2}}


@pytest.mark.parametrize(
    ("qrels", "docs", "match"),
    [
        ("1 1 1\n2 9 2\n", DOCS, r"cranqrel line 2: document '9' is not in the corpus"),
        ("1 1 1\n3 1 2\n", DOCS, r"cranqrel line 2: query '3' is not in the queries \(2 queries\) \(qrels number queries by position"),
        ("1 1 7\n", DOCS, r"cranqrel line 1: grade 7 is not one of -1, 1, 2, 3, 4"),
        ("1 1\n", DOCS, r"cranqrel line 1: 2 fields, expected 3"),
        ("1 1 1\n", DOCS + ".I 2\n.W\nagain\n", r"cran.all.1400 line 2\d: id '2' appears again \(first at line 12\)"),
        ("1 1 1\n", "stray text\n" + DOCS, r"cran.all.1400 line 1: text before the first '.I <id>' line"),
    ],
)
def test_smart_errors_name_the_line(tmp_path, qrels, docs, match):
    root = write_smart(tmp_path / "cran", qrels, docs=docs)
    with bad(match) as e:
        read_cranfield(root)
    one_line(e)


def test_empty_smart_query_is_refused(tmp_path):
    root = write_smart(tmp_path / "cran", "1 1 1\n", queries=".I 1\n.W\n\n.I 2\n.W\nfine .\n")
    with bad(r"cran.qry line 1: record .I 1 has no text"):
        read_cranfield(root)


# -- SQuAD / XQuAD -------------------------------------------------------------------------------


def write_squad(path: Path, articles: list[tuple[str, list[tuple[str, list[str]]]]]) -> Path:
    data = [{"title": t, "paragraphs": [{"context": c, "qas": [{"id": f"{t}-{i}-{j}", "question": q, "answers": []}
                                                              for j, q in enumerate(qs)]} for i, (c, qs) in enumerate(ps)]}
            for t, ps in articles]
    path.write_text(json.dumps({"version": "1.1", "data": data}), encoding="utf-8")
    return path


def test_read_squad_question_to_paragraph_grouped_by_article(tmp_path):
    path = write_squad(tmp_path / "xquad.xx.json", [
        ("Rhine", [("The Rhine flows north.", ["Where does the Rhine flow?", "What flows north?"]), ("It is long.", ["How long?"])]),
        ("Tesla", [("Tesla died in 1943.", ["When did Tesla die? "])]),
    ])
    pairs = read_squad(path)
    assert pairs.queries == ["Where does the Rhine flow?", "What flows north?", "How long?", "When did Tesla die?"]
    assert pairs.positives == ["The Rhine flows north.", "The Rhine flows north.", "It is long.", "Tesla died in 1943."]
    assert pairs.groups == ["Rhine", "Rhine", "Rhine", "Tesla"]
    assert pairs.origin[3] == "xquad.xx.json article 2 (Tesla) paragraph 1 question Tesla-0-0"
    ev = eval_from_pairs(pairs)
    assert ev.sizes() == {"queries": 4, "corpus": 3, "judgements": 4}
    assert ev.qrels["q2"] == {"d1": 1} and ev.corpus["d1"] == "The Rhine flows north."
    blank = write_squad(tmp_path / "blank.json", [("Rhine", [("The Rhine.", ["ok?", " "])])])
    with bad(r"blank.json article 1 \(Rhine\) paragraph 1 question Rhine-0-1: empty or missing 'question'") as e:
        read_squad(blank)
    one_line(e)
    (tmp_path / "other.json").write_text('{"rows": []}')
    with bad("not a SQuAD v1.1 file"):
        read_squad(tmp_path / "other.json")


def test_eval_from_triplets_and_back_to_pairs():
    pairs = Pairs(queries=["a", "b", "a"], positives=["P1", "P2", "P3"], negatives=["N", "P1", "N"])
    ev = eval_from_pairs(pairs)
    assert ev.queries == {"q1": "a", "q2": "b"}
    assert ev.corpus == {"d1": "P1", "d2": "N", "d3": "P2", "d4": "P3"}
    assert ev.qrels == {"q1": {"d1": 1, "d4": 1}, "q2": {"d3": 1}}  # negatives are distractors, not judged
    back = pairs_from_eval(ev)
    assert sorted(zip(back.queries, back.positives)) == [("a", "P1"), ("a", "P3"), ("b", "P2")]


# -- splits ----------------------------------------------------------------------------------------


def many_pairs(n_queries: int = 40, repeats: int = 3) -> Pairs:
    """Every query on several rows, spelled differently (case, spaces): one query for splits."""
    queries, positives, groups = [], [], []
    for i in range(n_queries):
        for r in range(repeats):
            spelling = [f"question {i}", f"Question  {i}", f" QUESTION {i} "][r % 3]
            queries.append(spelling)
            positives.append(f"passage {i} {r}")
            groups.append(f"article {i // 4}")
    return Pairs(queries=queries, positives=positives, groups=groups, source="pairs.csv",
                 origin=[f"pairs.csv line {i + 2}" for i in range(len(queries))])


def _keys(p: Pairs | None) -> set[str]:
    return set() if p is None else {query_key(q) for q in p.queries}


def test_split_by_query_never_puts_a_query_in_two_splits():
    pairs = many_pairs()
    split = split_pairs(pairs, val_fraction=0.1, test_fraction=0.2, seed=0)
    train, val, test = _keys(split.train), _keys(split.val), _keys(split.test)
    assert not (train & val) and not (train & test) and not (val & test)
    assert (len(train), len(val), len(test)) == (28, 4, 8)  # fractions of the 40 queries
    assert sum(split.sizes().values()) == len(pairs)
    assert sorted(split.train.origin + split.val.origin + split.test.origin) == sorted(pairs.origin)
    again = split_pairs(pairs, val_fraction=0.1, test_fraction=0.2, seed=0)
    other = split_pairs(pairs, val_fraction=0.1, test_fraction=0.2, seed=1)
    assert again.test.queries == split.test.queries and _keys(other.test) != test
    reversed_rows = pairs.subset(list(range(len(pairs)))[::-1])
    assert _keys(split_pairs(reversed_rows, val_fraction=0.1, test_fraction=0.2, seed=0).test) == test  # row order is irrelevant


def test_split_by_group_is_article_disjoint_and_query_disjoint():
    pairs = many_pairs()
    # a query asked in two articles ties them together
    pairs = Pairs(queries=pairs.queries + ["question 0"], positives=pairs.positives + ["elsewhere"],
                  groups=pairs.groups + ["article 9"], source=pairs.source, origin=pairs.origin + ["pairs.csv line 999"])
    split = split_pairs(pairs, val_fraction=0.2, test_fraction=0.2, seed=3, by="group")
    groups = [set(p.groups) for p in (split.train, split.val, split.test)]
    assert not (groups[0] & groups[1]) and not (groups[0] & groups[2]) and not (groups[1] & groups[2])
    assert not (_keys(split.train) & _keys(split.test)) and not (_keys(split.train) & _keys(split.val))
    together = next(g for g in groups if "article 0" in g)
    assert "article 9" in together
    with bad("no group column to split by; name it with --group-col"):
        split_pairs(Pairs(queries=["a", "b"], positives=["c", "d"], source="p.csv"), val_fraction=0, test_fraction=0.5, seed=0, by="group")


def test_split_sizes_and_refusals():
    pairs = many_pairs(n_queries=3, repeats=1)
    split = split_pairs(pairs, val_fraction=0, test_fraction=0.3, seed=0)
    assert split.val is None and split.sizes() == {"train": 2, "val": 0, "test": 1}
    with bad(r"pairs.csv: queries: 2 to split, too few for 1 test, 1 validation and at least 1 for training") as e:
        split_pairs(many_pairs(n_queries=2, repeats=5), val_fraction=0.1, test_fraction=0.1, seed=0)
    one_line(e)
    with bad("split fractions"):
        split_pairs(pairs, val_fraction=0.5, test_fraction=0.5, seed=0)


def test_check_disjoint_names_the_leaked_row():
    train = Pairs(queries=["Where is my card?", "b"], positives=["x", "y"], source="train.csv",
                  origin=["train.csv line 2", "train.csv line 3"])
    test = Pairs(queries=["c", "where is  my card?"], positives=["z", "w"], source="test.csv",
                 origin=["test.csv line 2", "test.csv line 3"])
    with bad(r"test.csv line 3: query 'where is  my card\?' is also in train.csv line 2") as e:
        check_disjoint(train, test)
    one_line(e)


def test_split_eval_is_query_disjoint_and_keeps_the_corpus():
    pairs = many_pairs(n_queries=20, repeats=1)
    ev = eval_from_pairs(Pairs(queries=pairs.queries + ["QUESTION 3"], positives=pairs.positives + ["extra"]))
    split = split_eval(ev, val_fraction=0, test_fraction=0.25, seed=0)
    assert split.val is None
    train, test = split.train, split.test
    assert {query_key(t) for t in train.queries.values()}.isdisjoint({query_key(t) for t in test.queries.values()})
    assert len(train.queries) + len(test.queries) == len(ev.queries) == 21
    assert train.corpus is ev.corpus and test.corpus is ev.corpus
    assert set(test.qrels) == set(test.queries)


# -- real data ---------------------------------------------------------------------------------------


@pytest.mark.integration
def test_real_cranfield_and_xquad():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (../shared/data beside the project)")
    ev = read_cranfield(SHARED_DATA / "cranfield")
    assert ev.sizes() == {"queries": 225, "corpus": 1400, "judgements": 1837}
    assert [d for d, t in ev.corpus.items() if not t] == ["471", "995"]  # empty in the source, kept
    grades = [g for judged in ev.qrels.values() for g in judged.values()]
    assert {g: grades.count(g) for g in set(grades)} == {4: 128, 3: 387, 2: 734, 1: 363, 0: 225}  # codes 1,2,3,4,-1
    assert ev.queries["3"].startswith("what problems of heat conduction in composite slabs")  # .I 004, third in the file
    assert ev.qrels["1"]["13"] == 1  # cranqrel "1 13 4": minimum interest
    pairs = read_squad(SHARED_DATA / "xquad" / "xquad.en.json")
    assert len(pairs) == 1190
    assert len(set(pairs.positives)) == 240 and len(set(pairs.groups)) == 48
    assert len(set(pairs.queries)) == 1185  # three questions asked twice, two more differing only by a trailing space
    split = split_pairs(pairs, val_fraction=0.1, test_fraction=0.2, seed=0, by="group")
    assert not set(split.train.groups) & set(split.test.groups)
    assert not _keys(split.train) & _keys(split.test)
    assert eval_from_pairs(split.test).sizes()["corpus"] == len(set(split.test.positives))
