"""The vector index: a folder of documents and embeddings, searched exactly or with faiss HNSW."""

from __future__ import annotations

import json
import os
import pickle
import sys

import numpy as np
import pytest

from headstart.errors import BadInput
from headstart.index import HNSWParams, VectorIndex, store

P = {"run": "run-a", "backbone_sha256": "a" * 64, "embedding": {"pooling": "mean", "max_length": 256}}
OTHER = {"run": "run-b", "backbone_sha256": "b" * 64, "embedding": {"pooling": "mean", "max_length": 256}}


def _vectors(n, dim=16, seed=0):
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def _clustered(n, dim=32, clusters=20, seed=0, intrinsic=12):
    """Clusters spread in a shared low-dimensional subspace, as sentence embeddings are (isotropic
    noise in all 32 dimensions is far harder for any ANN index than real embeddings)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    basis = rng.normal(size=(intrinsic, dim)) / np.sqrt(intrinsic)
    x = centres[rng.integers(clusters, size=n)] + 0.5 * rng.normal(size=(n, intrinsic)) @ basis
    return x.astype(np.float32)


def _ids(n, start=0):
    return [f"doc-{i}" for i in range(start, start + n)]


def _index(tmp_path, n=40, dim=16, kind="auto", name="ix"):
    index = VectorIndex.create(tmp_path / name, dim, P, kind=kind)
    v = _vectors(n, dim)
    index.add(_ids(n), [f"text {i}" for i in range(n)], v, producer=P, progress=False)
    return index, v


def _unit(v):
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _one_line(exc_info):
    msg = str(exc_info.value)
    assert "\n" not in msg and msg
    return msg


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != ".lock"}


def _data_file(folder, prefix):
    (path,) = [p for p in folder.iterdir() if p.name.startswith(prefix + "-")]
    return path


# -- round trip, incremental add, exact search ---------------------------------------------------


def test_save_open_round_trip(tmp_path):
    index, v = _index(tmp_path)
    same = VectorIndex.open(tmp_path / "ix")
    assert len(same) == 40 and same.ids == _ids(40) and same.text("doc-3") == "text 3"
    np.testing.assert_allclose(np.asarray(same._vectors), _unit(v), rtol=1e-6)
    m = json.loads((tmp_path / "ix" / "index.json").read_text())
    assert (m["kind"], m["requested_kind"], m["dim"], m["metric"], m["count"]) == ("exact", "auto", 16, "cosine", 40)
    assert m["producer"] == P and m["versions"]["numpy"] == np.__version__ and "m" in m["hnsw"]
    assert same.search(v[:3], 5, P) == index.search(v[:3], 5, P)


def test_exact_matches_brute_force(tmp_path):
    index, v = _index(tmp_path, n=300)
    queries = _vectors(7, seed=1)
    scores = _unit(queries) @ _unit(v).T
    for res, row in zip(index.search(queries, 10, P), scores):
        expected = np.argsort(-row, kind="stable")[:10]
        assert res.ids == [f"doc-{i}" for i in expected]
        np.testing.assert_allclose(res.scores, row[expected], rtol=1e-5)
    # k beyond the corpus: every document, best first
    (everything,) = index.search(queries[:1], 1000, P)
    assert len(everything.ids) == 300 and everything.scores == sorted(everything.scores, reverse=True)


def test_exact_chunks_merge_like_one_block(monkeypatch):
    from headstart.index import backends

    v, q = _unit(_vectors(1000)), _unit(_vectors(5, seed=2))
    whole = backends.exact_top_k(v, q, 17)
    monkeypatch.setattr(backends, "_CHUNK_ROWS", 64)
    monkeypatch.setattr(backends, "_QUERY_BLOCK", 2)
    chunked = backends.exact_top_k(v, q, 17)
    np.testing.assert_array_equal(whole[0], chunked[0])
    np.testing.assert_allclose(whole[1], chunked[1], rtol=1e-6)


def test_incremental_add_equals_one_build(tmp_path):
    v = _vectors(90)
    texts = [f"t{i}" for i in range(90)]
    one = VectorIndex.create(tmp_path / "one", 16, P)
    one.add(_ids(90), texts, v, producer=P, progress=False)
    inc = VectorIndex.create(tmp_path / "inc", 16, P)
    for s in (0, 30, 60):
        inc.add(_ids(30, s), texts[s : s + 30], v[s : s + 30], producer=P, progress=False)
    reopened = VectorIndex.open(tmp_path / "inc")
    assert reopened.ids == one.ids and [reopened.text(i) for i in reopened.ids] == texts
    q = _vectors(5, seed=3)
    assert reopened.search(q, 10, P) == one.search(q, 10, P)
    # only the current generation's files remain
    assert sorted(p.name for p in (tmp_path / "inc").iterdir()) == [".lock", "docs-000003.jsonl", "index.json", "vectors-000003.npy"]


def test_empty_index_answers_nothing(tmp_path):
    index = VectorIndex.create(tmp_path / "ix", 4, P)
    assert VectorIndex.open(tmp_path / "ix").search(np.ones((2, 4)), 3, P) == [([], []), ([], [])]
    index.add([], [], np.empty((0, 4)), producer=P)
    assert len(VectorIndex.open(tmp_path / "ix")) == 0


# -- refusals ------------------------------------------------------------------------------------


def test_duplicate_ids_are_refused_and_named(tmp_path):
    index, _ = _index(tmp_path, n=10)
    before = _snapshot(tmp_path / "ix")
    with pytest.raises(BadInput) as e:
        index.add(["new-1", "new-2", "new-1"], ["a", "b", "c"], _vectors(3), producer=P)
    assert "'new-1'" in _one_line(e) and "twice" in str(e.value)
    with pytest.raises(BadInput) as e:
        index.add(["new-1", "doc-4"], ["a", "b"], _vectors(2), producer=P)
    assert "'doc-4'" in _one_line(e) and "already" in str(e.value)
    assert _snapshot(tmp_path / "ix") == before


def test_queries_from_another_producer_are_refused(tmp_path):
    index, v = _index(tmp_path, n=10)
    with pytest.raises(BadInput) as e:
        index.search(v[:1], 3, OTHER)
    msg = _one_line(e)
    assert "run run-a" in msg and "run run-b" in msg and "aaaaaaaaaaaa" in msg
    # the same run with another preprocessing is another producer too
    with pytest.raises(BadInput, match="embedding"):
        index.search(v[:1], 3, {**P, "embedding": {"pooling": "cls", "max_length": 256}})
    # documents embedded by another run are refused the same way, and nothing is written
    before = _snapshot(tmp_path / "ix")
    with pytest.raises(BadInput, match="run-b"):
        index.add(["x"], ["x"], v[:1], producer=OTHER)
    assert _snapshot(tmp_path / "ix") == before
    # a producer that only went through JSON (tuples -> lists) is the same producer
    assert index.search(v[:1], 1, json.loads(json.dumps(P)))[0].ids == ["doc-0"]


@pytest.mark.parametrize(
    "bad, words",
    [
        (np.ones((2, 15), dtype=np.float32), "expected (n, 16)"),
        (np.vstack([np.ones((1, 16)), np.full((1, 16), np.nan)]), "NaN"),
        (np.zeros((2, 16)), "all zeros"),
    ],
)
def test_a_failed_add_writes_nothing(tmp_path, bad, words):
    index, v = _index(tmp_path, n=10)
    before = _snapshot(tmp_path / "ix")
    with pytest.raises(BadInput) as e:
        index.add(["n1", "n2"], ["a", "b"], bad, producer=P)
    assert words in _one_line(e)
    assert _snapshot(tmp_path / "ix") == before
    assert len(VectorIndex.open(tmp_path / "ix")) == 10 and len(index) == 10


def test_a_crash_during_add_leaves_the_previous_index(tmp_path, monkeypatch):
    index, v = _index(tmp_path, n=10)
    before = _snapshot(tmp_path / "ix")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # e.g. Ctrl-C just before the manifest is replaced

    monkeypatch.setattr(store, "_write_json_atomic", crash)
    with pytest.raises(KeyboardInterrupt):
        index.add(_ids(5, 10), ["x"] * 5, _vectors(5, seed=4), producer=P)
    monkeypatch.undo()
    assert _snapshot(tmp_path / "ix") == before
    again = VectorIndex.open(tmp_path / "ix")
    assert len(again) == 10 and again.search(v[:2], 3, P) == index.search(v[:2], 3, P)
    # files a killed writer left behind (never named by the manifest) are ignored, then swept
    (tmp_path / "ix" / "vectors-000002.npy").write_bytes(b"half written")
    assert len(VectorIndex.open(tmp_path / "ix")) == 10
    again.add(_ids(5, 10), ["x"] * 5, _vectors(5, seed=4), producer=P, progress=False)
    assert len(VectorIndex.open(tmp_path / "ix")) == 15


def test_bad_arguments(tmp_path):
    index, v = _index(tmp_path, n=5)
    with pytest.raises(BadInput, match="reshape"):
        index.search(v[0], 3, P)
    with pytest.raises(BadInput, match="k=0"):
        index.search(v[:1], 0, P)
    with pytest.raises(BadInput, match="one of each"):
        index.add(["a"], ["a", "b"], _vectors(1), producer=P)
    with pytest.raises(BadInput, match="non-empty one-line string"):
        index.add([7], ["a"], _vectors(1), producer=P)
    with pytest.raises(BadInput, match="already exists"):
        VectorIndex.create(tmp_path / "ix", 16, P)
    with pytest.raises(BadInput, match="kind"):
        VectorIndex.create(tmp_path / "new", 16, P, kind="ivf")
    with pytest.raises(BadInput, match="producer"):
        VectorIndex.create(tmp_path / "new", 16, {})
    with pytest.raises(BadInput, match="ef_search"):
        HNSWParams(ef_search=0)


# -- damaged folders -----------------------------------------------------------------------------


def _damage_missing(folder, prefix):
    _data_file(folder, prefix).unlink()


def _damage_count(folder):
    m = json.loads((folder / "index.json").read_text())
    m["count"] -= 1
    (folder / "index.json").write_text(json.dumps(m))


def _damage_docs_line(folder):
    path = _data_file(folder, "docs")
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))


def _damage_dtype(folder):
    path = _data_file(folder, "vectors")
    np.save(path, np.load(path).astype(np.float64))


def _damage_shape(folder):
    path = _data_file(folder, "vectors")
    np.save(path, np.load(path)[:, :8])


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda f: (f / "index.json").unlink(), "index.json is missing"),
        (lambda f: (f / "index.json").write_text("{not json"), "cannot be read"),
        (lambda f: _damage_missing(f, "vectors"), "is missing"),
        (lambda f: _damage_missing(f, "docs"), "is missing"),
        (_damage_count, "manifest says"),
        (_damage_docs_line, "has 19 documents, the manifest says 20"),
        (_damage_dtype, "float64"),
        (_damage_shape, "(20, 8)"),
        (lambda f: _data_file(f, "docs").write_text("[1]\n" * 20), "line 1"),
        (lambda f: _data_file(f, "vectors").write_bytes(b"\x93NUMPY garbage"), "not a plain .npy"),
    ],
)
def test_damaged_folders_are_one_line_bad_input(tmp_path, damage, words):
    _index(tmp_path, n=20)
    damage(tmp_path / "ix")
    with pytest.raises(BadInput) as e:
        VectorIndex.open(tmp_path / "ix")
    assert words in _one_line(e)


class _Boom:
    """Unpickling this creates a file: proof that a pickle was (or was not) loaded."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_pickle_in_place_of_the_vectors_is_never_loaded(tmp_path):
    _index(tmp_path, n=20)
    sentinel = tmp_path / "unpickled"
    vectors = _data_file(tmp_path / "ix", "vectors")
    vectors.write_bytes(pickle.dumps(_Boom(str(sentinel))))
    with pytest.raises(BadInput, match="not a plain .npy"):
        VectorIndex.open(tmp_path / "ix")
    # an .npy of Python objects (pickled inside) is refused too
    np.save(vectors, np.array([_Boom(str(sentinel))] * 2, dtype=object), allow_pickle=True)
    with pytest.raises(BadInput, match="not a plain .npy"):
        VectorIndex.open(tmp_path / "ix")
    assert not sentinel.exists()


# -- HNSW ----------------------------------------------------------------------------------------


def _recall(found_ids, truth_rows, ids):
    return np.mean([len(set(f) & {ids[r] for r in t}) / len(t) for f, t in zip(found_ids, truth_rows)])


def test_hnsw_recall_on_clustered_data(tmp_path):
    pytest.importorskip("faiss")
    both = _clustered(3200)
    x, queries = both[:3000], both[3000:]
    index = VectorIndex.create(tmp_path / "h", 32, P, kind="hnsw")
    index.add(_ids(3000), [""] * 3000, x, producer=P, progress=False)
    truth = np.argsort(-(_unit(queries) @ _unit(x).T), axis=1)[:, :10]
    reopened = VectorIndex.open(tmp_path / "h")
    assert reopened.kind == "hnsw"
    found = [r.ids for r in reopened.search(queries, 10, P)]
    assert _recall(found, truth, _ids(3000)) >= 0.95
    # a wider search for one call: at least as good, and the index's own efSearch is unchanged
    wide = [r.ids for r in reopened.search(queries, 10, P, ef_search=256)]
    assert _recall(wide, truth, _ids(3000)) >= _recall(found, truth, _ids(3000))
    assert reopened.hnsw_params == HNSWParams() and reopened._ann.hnsw.efSearch == HNSWParams().ef_search
    # scores are cosines, as in exact search
    exact = VectorIndex.create(tmp_path / "e", 32, P, kind="exact")
    exact.add(_ids(3000), [""] * 3000, x, producer=P, progress=False)
    assert abs(reopened.search(queries[:1], 1, P)[0].scores[0] - exact.search(queries[:1], 1, P)[0].scores[0]) < 1e-5
    # incremental adds keep what was there
    reopened.add(["late"], ["late doc"], queries[:1], producer=P, progress=False)
    assert VectorIndex.open(tmp_path / "h").search(queries[:1], 1, P)[0].ids == ["late"]


def test_auto_switches_to_hnsw_when_an_add_crosses_the_threshold(tmp_path, monkeypatch):
    faiss = pytest.importorskip("faiss")
    monkeypatch.setattr(store, "AUTO_HNSW_FROM", 100)
    x = _clustered(150)
    index = VectorIndex.create(tmp_path / "ix", 32, P)
    index.add(_ids(60), [""] * 60, x[:60], producer=P, progress=False)
    assert index.kind == "exact" and not any(p.suffix == ".faiss" for p in (tmp_path / "ix").iterdir())
    index.add(_ids(90, 60), [""] * 90, x[60:], producer=P, progress=False)
    reopened = VectorIndex.open(tmp_path / "ix")
    assert reopened.kind == "hnsw" and reopened.requested_kind == "auto"
    # the graph was built from every vector, the first 60 included
    assert faiss.read_index(str(_data_file(tmp_path / "ix", "hnsw"))).ntotal == 150
    assert reopened.search(x[:3], 1, P) and [r.ids[0] for r in reopened.search(x[:3], 1, P)] == _ids(3)
    # kind="exact" never switches
    forced = VectorIndex.create(tmp_path / "ex", 32, P, kind="exact")
    forced.add(_ids(150), [""] * 150, x, producer=P, progress=False)
    assert VectorIndex.open(tmp_path / "ex").kind == "exact"


def test_a_changed_faiss_file_is_refused(tmp_path):
    pytest.importorskip("faiss")
    _index(tmp_path, n=50, kind="hnsw")
    path = _data_file(tmp_path / "ix", "hnsw")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInput) as e:
        VectorIndex.open(tmp_path / "ix")
    assert "sha256" in _one_line(e)
    path.unlink()
    with pytest.raises(BadInput, match="is missing"):
        VectorIndex.open(tmp_path / "ix")


def test_without_faiss_exact_works_and_hnsw_says_how_to_install(tmp_path, monkeypatch):
    pytest.importorskip("faiss")
    _index(tmp_path, n=20, kind="hnsw", name="h")
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss -> ImportError
    index, v = _index(tmp_path, n=20, name="e")
    assert index.search(v[:1], 1, P)[0].ids == ["doc-0"]
    for attempt in (
        lambda: VectorIndex.open(tmp_path / "h"),
        lambda: VectorIndex.create(tmp_path / "h2", 16, P, kind="hnsw"),
    ):
        with pytest.raises(BadInput) as e:
            attempt()
        assert 'pip install "headstart[search]"' in _one_line(e)
    # auto refuses the add that would need HNSW, and writes nothing
    monkeypatch.setattr(store, "AUTO_HNSW_FROM", 30)
    auto, _ = _index(tmp_path, n=20, name="a")
    auto_manifest = json.loads((tmp_path / "a" / "index.json").read_text())
    assert auto_manifest["auto_hnsw_from"] == 30
    with pytest.raises(BadInput, match="headstart\\[search\\]"):
        auto.add(_ids(20, 20), [""] * 20, _vectors(20, seed=5), producer=P)
    assert len(VectorIndex.open(tmp_path / "a")) == 20


def test_progress_bars_are_optional(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HEADSTART_PROGRESS", "1")
    index = VectorIndex.create(tmp_path / "ix", 16, P)
    index.add(_ids(5), [""] * 5, _vectors(5), producer=P, progress=False)
    assert "indexing" not in capsys.readouterr().err
    index.add(_ids(5, 5), [""] * 5, _vectors(5, seed=1), producer=P, progress=True)
    assert "indexing" in capsys.readouterr().err
    assert os.listdir(tmp_path / "ix")
