"""The SQLite run store: runs, lookup by id prefix, evals."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from headstart.errors import BadInput
from headstart.runs import Store


def manifest(run_id: str, accuracy: float = 0.9, created: str = "2025-01-01T00:00:00+0000") -> dict:
    return {
        "id": run_id,
        "created_at": created,
        "modality": "text",
        "backbone": {"name": "tiny-bert", "sha256": "ab" * 32},
        "method": {"name": "linear-probe"},
        "data": {"train": {"fingerprint": "cd" * 32}},
        "seed": 3,
        "metrics": {"test": {"summary": {"accuracy": accuracy, "macro_f1": accuracy, "n": 10}}},
    }


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "store.sqlite3")


def test_empty_store(store):
    assert store.runs() == []
    assert store.find("anything") is None
    assert store.evals("anything") == []


def test_add_and_list(store, tmp_path):
    store.add_run(manifest("20250101-000000-a-linear-probe-aaaaaa"), tmp_path / "runs" / "a", "m1")
    store.add_run(manifest("20250102-000000-b-linear-probe-bbbbbb", 0.5, "2025-01-02T00:00:00+0000"), tmp_path / "b", "m2")
    rows = store.runs()
    assert [r["id"] for r in rows] == ["20250102-000000-b-linear-probe-bbbbbb", "20250101-000000-a-linear-probe-aaaaaa"]  # newest first
    a = rows[1]
    assert a["path"] == str((tmp_path / "runs" / "a").resolve())
    assert a["backbone"] == "tiny-bert" and a["backbone_sha256"] == "ab" * 32
    assert a["method"] == "linear-probe" and a["seed"] == 3 and a["modality"] == "text"
    assert a["data_fingerprint"] == "cd" * 32
    assert a["metrics"] == {"accuracy": 0.9, "macro_f1": 0.9, "n": 10}
    assert a["manifest_sha256"] == "m1"


def test_duplicate_id_is_refused_and_store_unchanged(store, tmp_path):
    store.add_run(manifest("run-a"), tmp_path, "m1")
    with pytest.raises(sqlite3.IntegrityError):
        store.add_run(manifest("run-a"), tmp_path, "m2")
    assert [r["manifest_sha256"] for r in store.runs()] == ["m1"]


def test_find_by_id_and_prefix(store, tmp_path):
    store.add_run(manifest("20250101-000000-a-lp-aaaaaa"), tmp_path, "m")
    store.add_run(manifest("20250101-000000-a-lp-abbbbb"), tmp_path, "m")
    store.add_run(manifest("20250102-000000-b-lp-cccccc"), tmp_path, "m")
    assert store.find("20250101-000000-a-lp-aaaaaa")["id"] == "20250101-000000-a-lp-aaaaaa"
    assert store.find("20250102")["id"] == "20250102-000000-b-lp-cccccc"
    assert store.find("20250101-000000-a-lp-ab")["id"] == "20250101-000000-a-lp-abbbbb"
    assert store.find("2026") is None
    with pytest.raises(BadInput, match="'20250101' is ambiguous: it starts 2 run ids"):
        store.find("20250101")


def test_exact_id_wins_over_longer_ids(store, tmp_path):
    store.add_run(manifest("run-1"), tmp_path, "m")
    store.add_run(manifest("run-10"), tmp_path, "m")
    assert store.find("run-1")["id"] == "run-1"


def test_prefix_is_literal(store, tmp_path):
    """'_' and case are not wildcards: only a real prefix of an id finds it."""
    store.add_run(manifest("run-abc"), tmp_path, "m")
    assert store.find("run_") is None
    assert store.find("RUN-ABC") is None
    assert store.find("%") is None


def test_evals(store, tmp_path):
    store.add_run(manifest("run-a"), tmp_path, "m")
    first = store.add_eval("run-a", "eval.csv", "ef" * 32, {"accuracy": 0.75, "n": 4})
    second = store.add_eval("run-a", "other.csv", "01" * 32, {"accuracy": 1.0, "n": 2})
    assert second > first
    evals = store.evals("run-a")
    assert [e["data_source"] for e in evals] == ["eval.csv", "other.csv"]
    assert evals[0]["metrics"] == {"accuracy": 0.75, "n": 4}
    assert evals[0]["data_fingerprint"] == "ef" * 32
    assert store.evals("run-b") == []


def test_several_store_objects_share_one_file(tmp_path):
    a, b = Store(tmp_path / "s.sqlite3"), Store(tmp_path / "s.sqlite3")
    a.add_run(manifest("run-a"), tmp_path, "m")
    b.add_run(manifest("run-b"), tmp_path, "m")
    assert {r["id"] for r in a.runs()} == {"run-a", "run-b"}


def test_default_path(tmp_path, monkeypatch):
    assert Store().path == tmp_path / "home" / "store.sqlite3"
    monkeypatch.setenv("HEADSTART_STORE", str(tmp_path / "env.sqlite3"))
    assert Store().path == tmp_path / "env.sqlite3"
    assert Store(tmp_path / "given.sqlite3").path == tmp_path / "given.sqlite3"


def test_unopenable_store_is_bad_input(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(BadInput, match="cannot open it"):
        Store(tmp_path / "folder").runs()
    not_sqlite = tmp_path / "not.sqlite3"
    not_sqlite.write_bytes(b"this is not a database" * 100)
    with pytest.raises(BadInput, match="not a readable headstart store"):
        Store(not_sqlite).runs()
    assert isinstance(Store(tmp_path / "folder").path, Path)


def test_a_store_from_before_drift_gains_the_new_columns(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite3"
    con = sqlite3.connect(path)
    con.executescript(
        "CREATE TABLE runs (id TEXT PRIMARY KEY, path TEXT NOT NULL, created_at TEXT NOT NULL, modality TEXT NOT NULL, "
        "backbone TEXT NOT NULL, backbone_sha256 TEXT NOT NULL, method TEXT NOT NULL, data_fingerprint TEXT NOT NULL, "
        "seed INTEGER NOT NULL, metrics TEXT NOT NULL, manifest_sha256 TEXT NOT NULL);"
        "CREATE TABLE evals (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, created_at TEXT NOT NULL, "
        "data_source TEXT NOT NULL, data_fingerprint TEXT NOT NULL, metrics TEXT NOT NULL);"
        "INSERT INTO runs VALUES ('r1', '/x', '2026-01-01', 'text', 'minilm-l6', 'abc', 'linear-probe', 'fp', 0, '{}', 'm');"
    )
    con.commit()
    con.close()
    from headstart.runs import Store

    store = Store(path)
    assert store.find("r1")["deployed"] == 0 and store.find("r1")["parent"] is None
    store.set_deployed("r1", True)
    store.add_eval("r1", "suite.yaml", "fp", {"accuracy": 0.9}, suite="s", suite_sha256="h", passed=True, result={"ok": 1})
    assert [r["id"] for r in store.deployed()] == ["r1"]
    (e,) = store.evals("r1")
    assert (e["suite"], e["passed"], e["result"]) == ("s", 1, {"ok": 1})
