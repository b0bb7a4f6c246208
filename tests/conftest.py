"""Shared fixtures: isolated headstart state per test, tiny random backbones, tiny datasets.

Everything runs offline on tiny random models built from a config (``headstart.backbones.testing``);
no test here loads the packaged weights.
"""

from __future__ import annotations

import csv
import io
import json
import random
import sys
from pathlib import Path

import pytest

# Words the tiny tokenizer knows (all in headstart.backbones.testing.VOCAB).
POSITIVE = ("good", "great", "love")
NEGATIVE = ("bad", "awful", "hate")
FILLER = ("the", "movie", "food", "price", "card", "was", "is", "my", "it", "this", "film", "delivery", "very")


# -- isolation ---------------------------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """The tiny models gain nothing from intra-op threads, and on a shared 2-core machine OpenMP
    spin-waits make each tiny op (the L-BFGS steps of the linear probe) up to 100x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _isolate(tmp_path, monkeypatch):
    """Every test gets its own headstart home (cache, store, runs) and runs without progress bars."""
    monkeypatch.setenv("HEADSTART_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HEADSTART_PROGRESS", "0")
    monkeypatch.delenv("HEADSTART_STORE", raising=False)
    monkeypatch.delenv("HEADSTART_CACHE", raising=False)
    monkeypatch.chdir(tmp_path)


# -- tiny backbones (session-scoped: built once) ------------------------------------------------


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer random BERT with a word-level tokenizer, as an ordinary HF folder."""
    from headstart.backbones.testing import tiny_text_model

    return tiny_text_model(tmp_path_factory.mktemp("backbones") / "tiny-bert")


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory) -> Path:
    """A 2-layer random ViT on 32x32 inputs, with a preprocessor config."""
    from headstart.backbones.testing import tiny_image_model

    return tiny_image_model(tmp_path_factory.mktemp("backbones") / "tiny-vit")


# -- tiny data ---------------------------------------------------------------------------------


def sentiment_rows(n: int = 40, seed: int = 0, labels: tuple[str, str] = ("pos", "neg")) -> list[tuple[str, str]]:
    """``n`` short texts, half per label; a text is positive iff it holds a positive word."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = labels[i % 2]
        words = rng.sample(FILLER, 3) + [rng.choice(POSITIVE if label == labels[0] else NEGATIVE)]
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


# Retrieval toy: a query names a topic word, its document a different word (a relation a random
# encoder does not know and a trained one learns), so zero-shot nDCG is low and training lifts it.
TOPICS = (("cat", "red"), ("dog", "blue"), ("bird", "green"), ("fish", "big"), ("money", "small"),
          ("refund", "fast"), ("login", "slow"), ("password", "happy"), ("account", "sad"), ("parcel", "movie"))
QUERY_FILLER = ("the", "a", "is", "was", "my", "your", "it", "this", "that", "and", "very", "please", "help", "where",
                "when", "why", "how")


def retrieval_rows(per_topic: int = 12, seed: int = 0, negatives: bool = False) -> list[tuple[str, ...]]:
    """(query, positive[, negative]) rows: ``per_topic`` distinct queries per topic document."""
    rng = random.Random(seed)
    rows: list[tuple[str, ...]] = []
    for t, (query_word, doc_word) in enumerate(TOPICS):
        doc = f"{doc_word} {doc_word} food price"
        seen: set[str] = set()
        while len(seen) < per_topic:
            text = " ".join([query_word, *rng.sample(QUERY_FILLER, 3)])
            if text in seen:
                continue
            seen.add(text)
            other = TOPICS[(t + 1) % len(TOPICS)][1]
            rows.append((text, doc, f"{other} {other} food price") if negatives else (text, doc))
    return rows


def similarity_rows(n: int = 200, seed: int = 0) -> list[tuple[str, str, float]]:
    """(sentence1, sentence2, score) rows on the retrieval toy's relation: 5 when sentence2 is the
    topic document of sentence1's topic word, 0-1 otherwise."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        t = rng.randrange(len(TOPICS))
        same = rng.random() < 0.5
        u = t if same else (t + rng.randrange(1, len(TOPICS))) % len(TOPICS)
        first = " ".join([TOPICS[t][0], *rng.sample(QUERY_FILLER, 2)])
        rows.append((first, f"{TOPICS[u][1]} {TOPICS[u][1]} food", 5.0 if same else rng.choice([0.0, 0.5, 1.0])))
    return rows


def write_table(path: Path, rows: list[tuple], columns: tuple[str, ...] = ("text", "label")) -> Path:
    """Write rows as CSV / TSV / JSONL / Parquet, chosen by the file's extension."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kind = path.suffix.lower()
    if kind in (".csv", ".tsv"):
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, delimiter="," if kind == ".csv" else "\t")
            writer.writerow(columns)
            writer.writerows(rows)
    elif kind == ".jsonl":
        path.write_text("".join(json.dumps(dict(zip(columns, r, strict=True))) + "\n" for r in rows), encoding="utf-8")
    elif kind == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({c: [r[i] for r in rows] for i, c in enumerate(columns)})
        pq.write_table(table, path)
    else:
        raise ValueError(f"write_table: no writer for {kind}")
    return path


@pytest.fixture(scope="session")
def data_helpers():
    """``(sentiment_rows, write_table)`` for fixtures wider than one test (module or session
    scope). Test modules must not ``from conftest import``: with tests/integration on sys.path
    that name resolves to the other conftest."""
    return sentiment_rows, write_table


@pytest.fixture(scope="session")
def retrieval_helpers():
    """``retrieval_rows`` for wider fixtures (see :func:`data_helpers`); ``.similarity`` gives
    :func:`similarity_rows`."""
    retrieval_rows.similarity = similarity_rows
    return retrieval_rows


@pytest.fixture(name="sentiment_rows")
def _sentiment_rows():
    return sentiment_rows


@pytest.fixture(name="write_table")
def _write_table():
    return write_table


@pytest.fixture
def train_csv(tmp_path) -> Path:
    """40 labelled texts (pos/neg), columns text,label."""
    return write_table(tmp_path / "train.csv", sentiment_rows(40))


@pytest.fixture
def pairs_csv(tmp_path) -> Path:
    """120 (query, positive) pairs over 10 topic documents, columns query,positive."""
    return write_table(tmp_path / "pairs.csv", retrieval_rows(), ("query", "positive"))


@pytest.fixture
def sts_csv(tmp_path) -> Path:
    """200 scored sentence pairs, columns sentence1,sentence2,score (0-5)."""
    return write_table(tmp_path / "sts.csv", similarity_rows(), ("sentence1", "sentence2", "score"))


# -- the command line --------------------------------------------------------------------------


class CliResult:
    def __init__(self, rc: int, out: str, err: str):
        self.rc, self.out, self.err = rc, out, err

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()

    def json(self):
        return json.loads(self.out)

    def __repr__(self) -> str:
        return f"CliResult(rc={self.rc!r}, out={self.out[:300]!r}, err={self.err[:600]!r})"


@pytest.fixture
def cli(capsys, monkeypatch):
    """``cli(*argv, stdin=None)`` runs ``headstart`` in-process and returns rc, stdout and stderr."""
    from headstart.cli import main

    def run(*argv, stdin: str | None = None) -> CliResult:
        capsys.readouterr()  # drop anything printed before (fixture setup)
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as e:  # argparse: --help, --version, usage errors
            rc = e.code if isinstance(e.code, int) else 2
        captured = capsys.readouterr()
        return CliResult(rc, captured.out, captured.err)

    return run


def assert_bad_input(result: CliResult, *needles: str, out_dir: Path | None = None, store: Path | None = None) -> str:
    """Exit 2, exactly one 'error: ' line on stderr naming ``needles``, no traceback, nothing written."""
    assert result.rc == 2, result
    assert len(result.err_lines) == 1, result
    line = result.err_lines[0]
    assert line.startswith("error: "), result
    assert "Traceback" not in result.err, result
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    if out_dir is not None:
        assert_no_run_folder(out_dir)
    if store is not None:
        assert_no_store_rows(store)
    return line


def assert_no_run_folder(out_dir: Path) -> None:
    """No run folder and no leftover temporary folder under ``out_dir``."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        assert sorted(p.name for p in out_dir.iterdir()) == [], f"{out_dir} should be empty"


def assert_no_store_rows(store: Path) -> None:
    from headstart.runs import Store

    store = Path(store)
    if store.exists():
        assert Store(store).runs() == []


@pytest.fixture(name="assert_bad_input")
def _assert_bad_input():
    return assert_bad_input


@pytest.fixture(name="assert_no_run_folder")
def _assert_no_run_folder():
    return assert_no_run_folder


# -- one trained run shared by the read-only tests ----------------------------------------------


class TrainedRun:
    def __init__(self, path: Path, run_id: str, store: Path, data: Path, rows: list[tuple[str, str]]):
        self.path, self.id, self.store, self.data, self.rows = path, run_id, store, data, rows

    def copy_to(self, folder: Path) -> Path:
        """A private copy of the run folder, for tests that damage it."""
        import shutil

        dest = Path(folder) / self.path.name
        shutil.copytree(self.path, dest)
        return dest


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_bert) -> TrainedRun:
    """A linear-probe run on 40 texts with the tiny BERT. Treat as read-only (copy it to damage it)."""
    import headstart as hs

    root = tmp_path_factory.mktemp("trained-run")
    rows = sentiment_rows(40)
    data = write_table(root / "train.csv", rows)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HEADSTART_HOME", str(root / "home"))
        mp.setenv("HEADSTART_PROGRESS", "0")
        mp.delenv("HEADSTART_STORE", raising=False)
        mp.delenv("HEADSTART_CACHE", raising=False)
        run = hs.adapt(data, backbone=str(tiny_bert), out=root / "runs", store=root / "store.sqlite3")
    return TrainedRun(run.path, run.id, root / "store.sqlite3", data, rows)


# -- images ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def image_maker():
    """:func:`make_image` for test modules (they cannot import it: ``conftest`` names two files,
    tests/conftest.py and tests/integration/conftest.py, and which one an import finds depends on
    what pytest collected first)."""
    return make_image


def make_image(path: Path, channel: int, rng, size: int = 32) -> Path:
    """A noisy image where ``channel`` (0 red, 2 blue) dominates."""
    import numpy as np
    from PIL import Image

    arr = rng.integers(0, 80, (size, size, 3)).astype(np.uint8)
    arr[..., channel] = rng.integers(170, 256, (size, size))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """red/ and blue/ subfolders, 16 PNGs each (32x32)."""
    import numpy as np

    root = tmp_path_factory.mktemp("images") / "train"
    rng = np.random.default_rng(0)
    for label, channel in (("red", 0), ("blue", 2)):
        for i in range(16):
            make_image(root / label / f"{label}{i:02d}.png", channel, rng)
    return root


@pytest.fixture(scope="session")
def flat_images(tmp_path_factory) -> tuple[Path, list[str]]:
    """A flat folder of 6 unlabelled images and their true colours, in file-name order."""
    import numpy as np

    root = tmp_path_factory.mktemp("images") / "flat"
    rng = np.random.default_rng(1)
    truth = ["red", "blue", "red", "blue", "blue", "red"]
    for i, label in enumerate(truth):
        make_image(root / f"img{i}.png", 0 if label == "red" else 2, rng)
    return root, truth


# -- a real HTTP server ------------------------------------------------------------------------


class HttpServer:
    """``headstart serve``'s application under uvicorn in a thread, on a free 127.0.0.1 port
    (``url``); entering waits until ``/ready`` answers 200, leaving stops it as SIGINT would."""

    def __init__(self, served: list, settings=None):
        import uvicorn

        from headstart.serve.app import ServeSettings, build_app
        from headstart.serve.server import bind

        self.app = build_app(served, settings or ServeSettings())
        self.sock = bind("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="on", loop="asyncio", http="h11"))
        self.thread = __import__("threading").Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> HttpServer:
        import time

        import httpx

        self.thread.start()
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/ready", timeout=5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError("the server did not become ready in 60 s")

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


@pytest.fixture(scope="session")
def http_server():
    """``http_server(served_models, settings=None)``: a context manager giving a running
    :class:`HttpServer` (skips when the serve extra or httpx is missing)."""
    pytest.importorskip("fastapi", reason="the serve extra (FastAPI + uvicorn) is not installed")
    pytest.importorskip("uvicorn", reason="the serve extra (FastAPI + uvicorn) is not installed")
    pytest.importorskip("httpx", reason="httpx (the test client) is not installed")
    return HttpServer
