"""The run store: an embedded SQLite database (WAL mode; many processes may write at once).

Default path ``<headstart home>/store.sqlite3``; override with ``HEADSTART_STORE`` or ``--store``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from .._util import home
from ..errors import BadInput

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    created_at TEXT NOT NULL,
    modality TEXT NOT NULL,
    backbone TEXT NOT NULL,
    backbone_sha256 TEXT NOT NULL,
    method TEXT NOT NULL,
    data_fingerprint TEXT NOT NULL,
    seed INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    manifest_sha256 TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS evals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs(id),
    created_at TEXT NOT NULL,
    data_source TEXT NOT NULL,
    data_fingerprint TEXT NOT NULL,
    metrics TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS evals_run ON evals(run_id);
CREATE TABLE IF NOT EXISTS drifts (
    id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    old_run TEXT NOT NULL,
    new_run TEXT NOT NULL,
    verdict TEXT NOT NULL,
    report TEXT NOT NULL,
    result TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS comparisons (
    id TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    created_at TEXT NOT NULL,
    data_fingerprint TEXT NOT NULL,
    run_ids TEXT NOT NULL,
    rows TEXT NOT NULL
);
"""


MIGRATIONS = {
    # Columns added after the first release; stores written before them gain the columns on open.
    "runs": {"parent": "TEXT", "deployed": "INTEGER NOT NULL DEFAULT 0"},
    "evals": {"suite": "TEXT", "suite_sha256": "TEXT", "passed": "INTEGER", "result": "TEXT"},
}


def _migrate(con: sqlite3.Connection) -> None:
    for table, columns in MIGRATIONS.items():
        have = {r[1] for r in con.execute(f"PRAGMA table_info({table})")}
        for name, decl in columns.items():
            if name not in have:
                try:
                    con.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")
                except sqlite3.OperationalError as e:  # another process added it first
                    if "duplicate column" not in str(e):
                        raise


def default_store_path() -> Path:
    env = os.environ.get("HEADSTART_STORE")
    return Path(env).expanduser() if env else home() / "store.sqlite3"


REQUIRED_COLUMNS = {
    "runs": ("id", "path", "created_at", "modality", "backbone", "backbone_sha256", "method", "data_fingerprint", "seed",
             "metrics", "manifest_sha256"),
    "evals": ("id", "run_id", "created_at", "data_source", "data_fingerprint", "metrics"),
    "drifts": ("id", "created_at", "old_run", "new_run", "verdict", "report", "result"),
    "comparisons": ("id", "path", "created_at", "data_fingerprint", "run_ids", "rows"),
}
"""What this code reads from each table: a store whose tables lack one is someone else's database."""

_REPAIR_HINT = ("restore it from a backup, or move it away and run `headstart runs --repair` to rebuild the run list from the "
                "run folders (eval and drift history are not in the folders)")


class Store:
    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path).expanduser() if path else default_store_path()

    def connect(self) -> sqlite3.Connection:
        """An open connection to a checked store; a new store is created whole (never a 0-byte file)."""
        try:
            if not self.path.exists():
                self._create()
            elif self.path.is_dir():
                raise BadInput(f"store {self.path}: cannot open it (a folder); pass a file path with --store")
            elif self.path.stat().st_size == 0:
                raise BadInput(f"store {self.path} is empty (0 bytes): it was truncated or is not a store; {_REPAIR_HINT}")
            con = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        except OSError as e:
            raise BadInput(f"store {self.path}: cannot open it ({e.strerror or e}); pass another path with --store") from None
        try:
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA busy_timeout=60000")
            con.executescript(SCHEMA)
            _migrate(con)
            self._check_schema(con)
        except sqlite3.DatabaseError as e:
            con.close()
            raise BadInput(f"store {self.path} is not a readable headstart store ({e}); {_REPAIR_HINT}") from None
        except BaseException:
            con.close()
            raise
        return con

    def _create(self) -> None:
        """Build the schema in a private file, then link it into place: a concurrent opener sees no
        store or a whole one, never the empty file sqlite creates before its first write."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.new")
        con = sqlite3.connect(tmp, isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(SCHEMA)
            _migrate(con)
        finally:
            con.close()
        try:
            os.link(tmp, self.path)
        except FileExistsError:
            pass  # another process created it first: use theirs
        finally:
            tmp.unlink(missing_ok=True)

    def _check_schema(self, con: sqlite3.Connection) -> None:
        for table, columns in REQUIRED_COLUMNS.items():
            have = {r[1] for r in con.execute(f"PRAGMA table_info({table})")}
            missing = [c for c in columns if c not in have]
            if missing:
                raise BadInput(f"store {self.path} is not a headstart store (its table {table!r} has no column "
                               f"{missing[0]!r}); pass the headstart store with --store, or a new path")

    def check(self) -> None:
        """Open the store once and read every row's JSON, so that a damaged store is refused before
        an adaptation spends its time, not after."""
        self.runs()

    @contextmanager
    def _session(self):
        """A checked connection; damage that shows only on reading becomes one line."""
        con = self.connect()
        try:
            yield con
        except sqlite3.IntegrityError:
            raise  # a constraint the caller broke (a duplicate id), not a damaged file
        except sqlite3.DatabaseError as e:
            raise BadInput(f"store {self.path} is damaged ({e}); {_REPAIR_HINT}") from None
        finally:
            con.close()

    def add_run(self, manifest: dict, path: Path, manifest_sha256: str) -> None:
        with self._session() as con:
            try:
                con.execute("BEGIN IMMEDIATE")
                con.execute(
                    "INSERT INTO runs (id, path, created_at, modality, backbone, backbone_sha256, method, data_fingerprint, seed, "
                    "metrics, manifest_sha256, parent) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        manifest["id"],
                        str(path.resolve()),
                        manifest["created_at"],
                        manifest["modality"],
                        manifest["backbone"]["name"],
                        manifest["backbone"]["sha256"],
                        manifest["method"]["name"],
                        manifest["data"]["train"]["fingerprint"],
                        manifest["seed"],
                        json.dumps(manifest["metrics"].get("test", {}).get("summary", {})),
                        manifest_sha256,
                        (manifest.get("lineage") or {}).get("parent"),
                    ),
                )
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise

    def _execute(self, sql: str, params: tuple = ()) -> int:
        """Run one statement on a fresh connection (autocommit); returns the last row id."""
        with self._session() as con:
            return int(con.execute(sql, params).lastrowid or 0)

    def _query(self, sql: str, params: tuple = (), convert=dict) -> list[dict]:
        with self._session() as con:
            rows = con.execute(sql, params).fetchall()
        out = []
        for r in rows:
            try:
                out.append(convert(r))
            except ValueError as e:
                ident = r["id"] if "id" in r.keys() else "?"
                raise BadInput(f"store {self.path}: row {ident!r} holds invalid JSON ({e}); {_REPAIR_HINT}") from None
        return out

    def add_eval(self, run_id: str, source: str, fingerprint: str, metrics: dict, *, suite: str | None = None,
                 suite_sha256: str | None = None, passed: bool | None = None, result: dict | None = None) -> int:
        """Record an evaluation (a data file, or a suite: then its name, hash, gate outcome and full result)."""
        return self._execute(
            "INSERT INTO evals (run_id, created_at, data_source, data_fingerprint, metrics, suite, suite_sha256, passed, result) "
            "VALUES (?,?,?,?,?,?,?,?,?)",
            (run_id, time.strftime("%Y-%m-%dT%H:%M:%S%z"), source, fingerprint, json.dumps(metrics), suite, suite_sha256,
             None if passed is None else int(passed), None if result is None else json.dumps(result, default=str)),
        )

    def set_deployed(self, run_id: str, deployed: bool) -> None:
        self._execute("UPDATE runs SET deployed = ? WHERE id = ?", (int(deployed), run_id))

    def deployed(self) -> list[dict]:
        return self._query("SELECT * FROM runs WHERE deployed = 1 ORDER BY created_at, id", convert=_row)

    def children(self, run_id: str) -> list[dict]:
        """Runs re-adapted from ``run_id`` (by drift or watch), oldest first."""
        return self._query("SELECT * FROM runs WHERE parent = ? ORDER BY created_at, id", (run_id,), convert=_row)

    def add_drift(self, drift_id: str, created_at: str, old_run: str, new_run: str, verdict: str, report: Path, result: dict) -> None:
        self._execute("INSERT INTO drifts VALUES (?,?,?,?,?,?,?)",
                      (drift_id, created_at, old_run, new_run, verdict, str(report), json.dumps(result, default=str)))

    def drifts(self, run_id: str) -> list[dict]:
        """Drift checks in which ``run_id`` was the old or the new run, oldest first."""
        return self._query("SELECT id, created_at, old_run, new_run, verdict, report FROM drifts "
                           "WHERE old_run = ? OR new_run = ? ORDER BY created_at, id", (run_id, run_id))

    def ids(self) -> set[str]:
        """Every recorded run id (cheap: no JSON decoded)."""
        return {r["id"] for r in self._query("SELECT id FROM runs")}

    def runs(self) -> list[dict]:
        return self._query("SELECT * FROM runs ORDER BY created_at DESC, id DESC", convert=_row)

    def find(self, ref: str) -> dict | None:
        """A run by id or unique id prefix."""
        return self._find("runs", "run", ref, _row)

    def _find(self, table: str, what: str, ref: str, convert) -> dict | None:
        """A row of ``table`` by id or unique id prefix (a literal prefix: no LIKE wildcards)."""
        rows = self._query(f"SELECT * FROM {table} WHERE substr(id, 1, length(?)) = ? ORDER BY id", (ref, ref), convert=convert)
        exact = [r for r in rows if r["id"] == ref]
        if exact:
            return exact[0]
        if len(rows) > 1:
            raise BadInput(f"{what} {ref!r} is ambiguous: it starts {len(rows)} {what} ids ({', '.join(r['id'] for r in rows[:3])}, ...); give more of the id")
        return rows[0] if rows else None

    def add_comparison(
        self, comparison_id: str, path: Path, created_at: str, data_fingerprint: str, run_ids: list[str], rows: list[dict]
    ) -> None:
        """Record a ``compare`` result: its folder, the runs it compared and its table rows (JSON)."""
        self._execute(
            "INSERT INTO comparisons (id, path, created_at, data_fingerprint, run_ids, rows) VALUES (?,?,?,?,?,?)",
            (comparison_id, str(Path(path).resolve()), created_at, data_fingerprint, json.dumps(run_ids), json.dumps(rows, default=str)),
        )

    def list_comparisons(self) -> list[dict]:
        """Every recorded comparison, newest first."""
        return self._query("SELECT * FROM comparisons ORDER BY created_at DESC, id DESC", convert=_comparison_row)

    def find_comparison(self, ref: str) -> dict | None:
        """A comparison by id or unique id prefix."""
        return self._find("comparisons", "comparison", ref, _comparison_row)

    def evals(self, run_id: str) -> list[dict]:
        return self._query("SELECT * FROM evals WHERE run_id = ? ORDER BY id", (run_id,), convert=_eval_row)


def _eval_row(r: sqlite3.Row) -> dict:
    d = dict(r)
    d["metrics"] = json.loads(d["metrics"])
    d["result"] = json.loads(d["result"]) if d["result"] else None
    return d


def _comparison_row(r: sqlite3.Row) -> dict:
    d = dict(r)
    d["run_ids"] = json.loads(d["run_ids"])
    d["rows"] = json.loads(d["rows"])
    return d


def _row(r: sqlite3.Row) -> dict:
    d = dict(r)
    d["metrics"] = json.loads(d["metrics"])
    return d
