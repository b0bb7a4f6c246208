"""Build an index of a corpus with a run's embeddings (`headstart index RUN CORPUS --out INDEX`).

A corpus is a table (CSV/TSV/JSONL/Parquet, e.g. BEIR's ``corpus.jsonl``) with a text column and
optionally an id and a title column, inferred by name or named; without an id column the row
number is the id. Documents are embedded by the run's body as adapted (:meth:`Run.embed`) in
chunks and added to the index chunk by chunk, so a corpus far larger than memory's embedding
matrix still indexes, and an existing index is extended (its producer must be the same run).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import BadInput, did_you_mean

TEXT_COLUMNS = ("text", "passage", "document", "content", "body", "contents", "sentence")
ID_COLUMNS = ("_id", "id", "doc_id", "docid", "corpus-id", "pid")
TITLE_COLUMNS = ("title",)
CHUNK = 2048
"""Documents embedded and added per step."""


def read_corpus(path: str | Path, *, text_col: str | None = None, id_col: str | None = None,
                fmt: str | None = None) -> tuple[list[str], list[str]]:
    """(ids, texts) of a corpus table; a title column, when present, is prepended to the text
    (as BEIR's evaluators do). Empty texts and duplicate ids are one-line errors naming the row."""
    from ..data.readers import read_table

    p = Path(path).expanduser()
    if not p.is_file():
        what = "a folder" if p.is_dir() else "no such file"
        raise BadInput(f"corpus {p}: {what}; give a CSV/TSV/JSONL/Parquet table with a text column (BEIR: its corpus.jsonl)")
    columns, origin = read_table(p, fmt=fmt, names=(text_col, id_col))

    def pick(given: str | None, names: tuple[str, ...], what: str, option: str, required: bool) -> str | None:
        if given is not None:
            if given not in columns:
                raise BadInput(f"corpus {p}: no column {given!r} for {option}.{did_you_mean(given, columns)} "
                               f"Columns: {', '.join(map(repr, columns))}")
            return given
        lower = {c.lower(): c for c in columns}
        found = next((lower[n] for n in names if n in lower), None)
        if found is None and required:
            raise BadInput(f"corpus {p}: no {what} column (looked for {', '.join(names)}); name it with {option}. "
                           f"Columns: {', '.join(map(repr, columns))}")
        return found

    tcol = pick(text_col, TEXT_COLUMNS, "text", "--text-col", True)
    icol = pick(id_col, ID_COLUMNS, "id", "--id-col", False)
    title = next((c for c in columns if c.lower() in TITLE_COLUMNS and c != tcol), None)
    texts, ids, seen = [], [], {}
    for i, where in enumerate(origin):
        body = columns[tcol][i]
        body = "" if body is None else str(body).strip()
        head = "" if title is None or columns[title][i] is None else str(columns[title][i]).strip()
        text = f"{head} {body}".strip() if head else body
        if not text:
            raise BadInput(f"{where}: empty document text (column {tcol!r}); remove the row or fill it in")
        doc_id = str(columns[icol][i]).strip() if icol is not None else str(i + 1)
        if not doc_id:
            raise BadInput(f"{where}: empty document id (column {icol!r})")
        if doc_id in seen:
            raise BadInput(f"{where}: document id {doc_id!r} appears twice (first at {seen[doc_id]}); ids must be unique")
        seen[doc_id] = where
        ids.append(doc_id)
        texts.append(text)
    if not texts:
        raise BadInput(f"corpus {p}: no documents")
    return ids, texts


def index_corpus(run, corpus: str | Path, out: str | Path, *, text_col: str | None = None, id_col: str | None = None,
                 kind: str = "auto", fmt: str | None = None):
    """Embed ``corpus`` with ``run`` into the index folder ``out`` (created, or extended when it
    holds an index of the same run). Returns the :class:`VectorIndex`."""
    from .store import VectorIndex

    reader = getattr(run.task, "read_corpus", None) or read_corpus  # image-text: image folders and tables
    ids, texts = reader(corpus, text_col=text_col, id_col=id_col, fmt=fmt)
    folder = Path(out).expanduser()
    if (folder / "index.json").is_file():
        index = VectorIndex.open(folder)
        index._check_producer(run.producer, "this run's documents")  # refuse before embedding anything
        have = set(index.ids)
        clash = next((d for d in ids if d in have), None)
        if clash is not None:
            raise BadInput(f"{corpus}: document id {clash!r} is already in the index {folder}; give new ids to add documents")
    else:
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise BadInput(f"--out {folder} exists and is neither an index nor an empty folder; choose a new folder")
        index = None
    for start in range(0, len(texts), CHUNK):
        vectors = run.embed(texts[start : start + CHUNK], role="document")
        if index is None:
            index = VectorIndex.create(folder, int(vectors.shape[1]), run.producer, kind=kind)
        index.add(ids[start : start + CHUNK], texts[start : start + CHUNK], vectors, producer=run.producer)
    return index


__all__ = ["index_corpus", "read_corpus"]
