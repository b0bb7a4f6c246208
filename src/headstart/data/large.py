"""Text tables larger than memory: read through Arrow a chunk at a time, never a Python string per row.

The rule (:func:`streams`): a classification table in Parquet, Arrow IPC (``.arrow``,
``.feather``, ``.ipc``; file or stream format) or CSV/TSV with more than :data:`LARGE_ROWS` rows
is *streamed*; ``--task-set streaming=true`` forces it for any size, ``streaming=false`` never.
Parquet and Arrow files give their row count from metadata; a delimited file counts its lines
(an upper bound when quoted fields hold line breaks). A streamed table is adapted with the
linear probe only (its features are written to disk in chunks and the head is fitted over
them chunk by chunk, :class:`TableFeatures`); any other method is refused in one line.

What a :class:`LargeTable` holds in memory: the label column as int32 codes (4 bytes a row), the
class names, and a streaming content fingerprint. Texts come out :meth:`LargeTable.iter_texts`
one chunk (4096 rows) at a time. A CSV/TSV is converted once into an Arrow IPC file in the cache
folder (``<cache>/tables``) so later passes read batches rather than parse text again.

Column choice reuses :func:`headstart.data.readers.select_columns` on the first rows (the same
names, ``--text-col``/``--label-col`` and fallbacks as for any table); every row is then checked
in the streaming pass (blank texts, missing labels) with the same one-line messages.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BadInput
from .dataset import Dataset, _label_sort_key, split_indices
from .readers import (EDGE_SPACE, UNQUOTED_SUFFIXES, ZERO_WIDTH, _check_number_spellings, _looks_like_data, _missing_label,
                      _scalar, select_columns, table_format)

LARGE_ROWS = 1_000_000
"""Tables with more rows than this are streamed (see the module docstring)."""
CHUNK = 4096
"""Texts per chunk handed to the backbone (and held as Python strings at once)."""
SAMPLE_ROWS = 1000
"""Rows the column inference (and the language check) look at."""
ARROW_SUFFIXES = {".arrow", ".feather", ".ipc"}
STREAMED_FORMATS = ("parquet", "arrow", "csv", "tsv")
_BLANK = "^[\\s\\x{b}\\x{1c}-\\x{1f}\\x{85}\\p{Z}" + "".join("\\x{%x}" % ord(c) for c in ZERO_WIDTH) + "]*$"
"""RE2 pattern of :func:`headstart.data.readers.is_blank`: only whitespace and zero-width characters."""


def table_kind(path: Path, fmt: str | None) -> str:
    """The table's format; Arrow IPC besides the formats :func:`~.readers.table_format` knows."""
    if fmt is None and path.suffix.lower() in ARROW_SUFFIXES:
        return "arrow"
    if fmt == "arrow":
        return "arrow"
    return table_format(path, fmt)


def streams(path: str | Path, fmt: str | None = None, forced: bool | None = None) -> bool:
    """Whether :mod:`headstart.tasks.classification` reads ``path`` as a :class:`LargeTable`
    (the rule in the module docstring). A folder or JSONL file never streams."""
    p = Path(path).expanduser()
    if forced is False or not p.is_file():
        return False
    kind = table_kind(p, fmt)
    if kind == "arrow":
        return True  # only this module reads Arrow IPC; a small one becomes a Dataset (LargeTable.to_dataset)
    if kind not in STREAMED_FORMATS:
        if forced:
            raise BadInput(f"{p}: --task-set streaming=true reads Parquet, Arrow IPC, CSV or TSV tables, not {kind.upper()}; "
                           "convert the file to Parquet")
        return False
    return bool(forced) or estimated_rows(p, kind) > LARGE_ROWS


def estimated_rows(path: Path, kind: str) -> int:
    """Rows from the file's metadata (Parquet), or its line count (CSV/TSV, an upper bound)."""
    if kind == "parquet":
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(path).metadata.num_rows
        except Exception:  # noqa: BLE001 - not readable: the in-memory reader says why in one line
            return 0
    lines = 0
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            lines += block.count(b"\n")
    return lines


@dataclass(frozen=True, eq=False)
class LargeTable:
    """A labelled text table on disk, read a batch at a time (see the module docstring)."""

    path: Path
    """The file read (a CSV's converted Arrow IPC copy in the cache folder)."""
    source: str
    """The user's file, for messages and the manifest."""
    kind: str
    columns: dict[str, str]
    """``{"text": name, "label": name}`` as for a :class:`~headstart.data.Dataset`."""
    n_rows: int
    codes: np.ndarray
    """(n_rows,) int32: each row's index into ``classes``."""
    classes: list[str]
    fingerprint: str

    def __len__(self) -> int:
        return self.n_rows

    @property
    def modality(self) -> str:
        return "text"

    def _batches(self, columns: list[str], batch_rows: int = CHUNK) -> Iterator:
        return _batches(self.path, "parquet" if self.kind == "parquet" else "arrow", columns, batch_rows)

    def iter_texts(self, rows: np.ndarray | None = None, chunk: int = CHUNK) -> Iterator[tuple[np.ndarray, list[str]]]:
        """``(row indices, texts)`` of at most ``chunk`` rows at a time, in row order: every row,
        or the sorted ``rows``. Only one chunk's texts are Python strings at any time."""
        import pyarrow as pa

        text = self.columns["text"]
        want = None if rows is None else np.asarray(rows, dtype=np.int64)
        pos, start = 0, 0  # next index into `want`; first row of the current batch
        pending: list = []
        pending_rows: list[np.ndarray] = []
        held = 0
        for batch in self._batches([text], chunk):
            n = batch.num_rows
            if want is None:
                local = np.arange(n)
            else:
                end = int(np.searchsorted(want, start + n, side="left"))
                local = want[pos:end] - start
                pos = end
            if len(local):
                col = batch.column(0)
                pending.append(col if want is None else col.take(pa.array(local)))
                pending_rows.append(local + start)
                held += len(local)
            start += n
            while held >= chunk:
                arr = pa.concat_arrays([c.cast(pa.large_string()) for c in pending])
                idx = np.concatenate(pending_rows)
                yield idx[:chunk], arr.slice(0, chunk).to_pylist()
                rest = arr.slice(chunk)
                pending, pending_rows = ([rest], [idx[chunk:]]) if len(rest) else ([], [])
                held = len(rest)
            if want is not None and pos >= len(want):
                break
        if held:
            arr = pa.concat_arrays([c.cast(pa.large_string()) for c in pending])
            yield np.concatenate(pending_rows), arr.to_pylist()

    def rows_view(self, rows: np.ndarray, name: str) -> TableRows:
        return TableRows(self, np.asarray(rows, dtype=np.int64), name)

    def sample(self, n: int = SAMPLE_ROWS) -> Dataset:
        """The first ``n`` rows as a :class:`~headstart.data.Dataset` (for the language check)."""
        idx, texts = next(self.iter_texts(chunk=min(n, self.n_rows)))
        return self._dataset(idx, texts)

    def to_dataset(self) -> Dataset:
        """Every row as an in-memory :class:`~headstart.data.Dataset` (a small Arrow table)."""
        idx, texts = [], []
        for i, t in self.iter_texts():
            idx.append(i)
            texts.extend(t)
        return self._dataset(np.concatenate(idx), texts)

    def _dataset(self, idx: np.ndarray, texts: list[str]) -> Dataset:
        name = Path(self.source).name
        return Dataset(inputs=texts, labels=[self.classes[c] for c in self.codes[idx]], modality="text", source=self.source,
                       origin=[f"{name} row {i + 1}" for i in idx], columns=self.columns)


@dataclass(frozen=True, eq=False)
class TableRows:
    """Some rows of a :class:`LargeTable` (a split): what the linear probe fits on and scoring
    reads when the table streams, in place of a :class:`~headstart.data.Dataset`."""

    table: LargeTable
    rows: np.ndarray
    """Sorted int64 row indices."""
    name: str

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def source(self) -> str:
        return self.table.source

    @property
    def codes(self) -> np.ndarray:
        return self.table.codes[self.rows]

    @property
    def classes(self) -> list[str]:
        return self.table.classes


def split_table(table: LargeTable, *, val_fraction: float, test_fraction: float, seed: int) -> tuple[TableRows, TableRows, TableRows | None]:
    """The seeded stratified split of :func:`~headstart.data.stratified_split`, on row indices."""
    train, val, test = split_indices(table.codes, table.classes, val_fraction=val_fraction, test_fraction=test_fraction,
                                     seed=seed, source=table.source)
    return (table.rows_view(train, "train"), table.rows_view(val, "validation"),
            table.rows_view(test, "test") if test_fraction > 0 else None)


# -- opening a table ------------------------------------------------------------------------------


def open_table(path: str | Path, *, fmt: str | None = None, header: bool | None = None, text_col: str | None = None,
               label_col: str | None = None, hint: dict | None = None, classes: list[str] | None = None) -> LargeTable:
    """Open, check and index a labelled text table in one streaming pass.

    ``hint`` is the training data's ``columns`` (a test file uses those names where it has them);
    ``classes`` the training classes a test file's labels must come from (codes index them)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise BadInput(f"{p}: no such file; check the path")
    kind = table_kind(p, fmt)
    if p.stat().st_size == 0:
        raise BadInput(f"{p}: the file is empty; it needs a header row and at least one data row")
    if kind in ("parquet", "arrow") and header is False:
        raise BadInput(f"{p}: --no-header applies to CSV/TSV/.txt files; in {kind.upper()} the column names come with the data")
    read_path = _as_arrow(p, kind, header) if kind in ("csv", "tsv") else p
    read_kind = "parquet" if kind == "parquet" else "arrow"
    try:
        first = next(_batches(read_path, read_kind, None, SAMPLE_ROWS), None)
    except BadInput:
        raise
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise BadInput(f"{p}: not a readable {kind.upper()} file ({type(e).__name__}: {str(e)[:120]})") from None
    if first is None or first.num_rows == 0:
        raise BadInput(f"{p}: the file has no rows; add examples")
    sample = {name: [_scalar(v) for v in first.column(i).to_pylist()] for i, name in enumerate(first.schema.names)}
    origin = [f"{p.name} row {i + 1}" for i in range(first.num_rows)]
    if kind in ("csv", "tsv") and header is None:
        head, below = list(sample), [[str(r[j]) for j in range(len(sample))] for r in zip(*sample.values(), strict=True)]
        why = _looks_like_data(head, below, (text_col, label_col) + tuple((hint or {}).values()))
        if why:
            raise BadInput(f"{p} line 1: the first row looks like data, not a header ({why}); pass --no-header if the file "
                           "has no header row (columns are then 0, 1, ...), or name its columns with --text-col/--label-col")
    if hint and not (text_col or label_col):
        text_col = hint.get("text") if hint.get("text") in sample else None
        label_col = hint.get("label") if hint.get("label") in sample else None
    chosen = select_columns(p, sample, origin, text_col=text_col, label_col=label_col, labels_required=True)
    if chosen.modality != "text":
        raise BadInput(f"{p}: column {chosen.columns['text']!r} holds {chosen.modality} paths; tables of {chosen.modality} are "
                       "read in memory: use a table under the streaming size or --task-set streaming=false")
    return _index(read_path, read_kind, str(p), chosen.columns, classes)


def _index(path: Path, kind: str, source: str, columns: dict[str, str], classes: list[str] | None) -> LargeTable:
    """One pass: check texts and labels, code the labels, hash the content."""
    import pyarrow as pa
    import pyarrow.compute as pc

    text, label = columns["text"], columns["label"]
    name = Path(source).name
    lengths, data = hashlib.sha256(), hashlib.sha256()
    raw_to_temp: dict = {}  # raw label value -> temporary code (first seen order)
    temp_names: list[str] = []
    parts: list[np.ndarray] = []
    n = 0
    blank_first, blank_count = None, 0
    for batch in _batches(path, kind, [text, label], 65536):
        t, y = batch.column(0), batch.column(1)
        if not pa.types.is_large_string(t.type):
            t = t.cast(pa.large_string())
        bad = pc.or_kleene(pc.is_null(t), pc.match_substring_regex(t, _BLANK)).fill_null(True)
        k = pc.sum(bad).as_py() or 0
        if k:
            blank_count += k
            if blank_first is None:
                blank_first = n + int(np.flatnonzero(bad.to_numpy(zero_copy_only=False))[0])
        if not blank_count:
            offsets = np.frombuffer(t.buffers()[1], dtype=np.int64)[t.offset : t.offset + len(t) + 1]
            lengths.update(np.diff(offsets).tobytes())
            data.update(memoryview(t.buffers()[2])[int(offsets[0]) : int(offsets[-1])] if t.buffers()[2] is not None else b"")
        enc = y.dictionary_encode() if not pa.types.is_dictionary(y.type) else y
        null_rows = np.flatnonzero(enc.is_null().to_numpy(zero_copy_only=False))
        if len(null_rows):
            raise BadInput(f"{name} row {n + int(null_rows[0]) + 1}: missing label (empty, null or NaN) in column {label!r}"
                           f" ({pc.sum(enc.is_null()).as_py()} rows in this batch); label those rows or remove them")
        local = np.empty(len(enc.dictionary), dtype=np.int32)
        for j, v in enumerate(enc.dictionary.to_pylist()):
            if v not in raw_to_temp:
                raw_to_temp[v] = len(temp_names)
                cleaned = _scalar(v)
                temp_names.append(EDGE_SPACE.sub("", cleaned) if isinstance(cleaned, str) else cleaned)
            local[j] = raw_to_temp[v]
        parts.append(local[enc.indices.to_numpy(zero_copy_only=False)])
        n += batch.num_rows
    if blank_count:
        raise BadInput(f"{name} row {blank_first + 1}: empty text in column {text!r}"
                       + (f" ({blank_count} rows in all)" if blank_count > 1 else "") + "; fill in or remove those rows")
    temp_codes = np.concatenate(parts) if parts else np.empty(0, np.int32)
    del parts
    for j, v in enumerate(temp_names):
        if not isinstance(v, str) or _missing_label(v):
            row = int(np.flatnonzero(temp_codes == j)[0])
            raise BadInput(f"{name} row {row + 1}: missing label (empty, null or NaN) in column {label!r}; "
                           "label those rows or remove them")
    distinct = sorted(set(temp_names), key=_label_sort_key)
    firsts = [f"{name} row {int(np.flatnonzero(temp_codes == temp_names.index(c))[0]) + 1}" for c in distinct]
    _check_number_spellings(distinct, firsts, label)
    if classes is None:
        classes = distinct
    else:
        unseen = [c for c in distinct if c not in set(classes)]
        if unseen:
            counts = np.bincount(temp_codes, minlength=len(temp_names))
            shown = ", ".join(f"{c!r} ({int(sum(counts[j] for j, v in enumerate(temp_names) if v == c))} rows)" for c in unseen[:5])
            raise BadInput(f"{source}: labels never seen in training: {shown}, first at {firsts[distinct.index(unseen[0])]}; "
                           "remove those rows or add training examples of them")
    position = {c: i for i, c in enumerate(classes)}
    lookup = np.array([position[v] for v in temp_names], dtype=np.int32)
    codes = lookup[temp_codes]
    del temp_codes
    h = hashlib.sha256(b"headstart.large-table/1\n")
    for part in (lengths.digest(), data.digest(), "\n".join(classes).encode(), codes.tobytes()):
        h.update(part)
    return LargeTable(path=path, source=source, kind="parquet" if kind == "parquet" else "arrow", columns=dict(columns),
                      n_rows=n, codes=codes, classes=list(classes), fingerprint=h.hexdigest())


def _batches(path: Path, kind: str, columns: list[str] | None, batch_rows: int) -> Iterator:
    """Record batches of ``columns`` (None: all) in row order: Parquet through
    ``ParquetFile.iter_batches``, Arrow IPC memory-mapped (file or stream format)."""
    import pyarrow as pa

    if kind == "parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path, memory_map=True)
        yield from pf.iter_batches(batch_size=batch_rows, columns=columns, use_threads=False)
        return
    source = pa.memory_map(str(path), "r")
    try:
        try:
            reader = pa.ipc.open_file(source)
            batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
        except pa.ArrowInvalid:
            source.seek(0)
            batches = iter(pa.ipc.open_stream(source))
        for batch in batches:
            if columns is not None:
                batch = batch.select(columns)
            for start in range(0, batch.num_rows, batch_rows):  # zero-copy slices of a big batch
                yield batch.slice(start, batch_rows)
    finally:
        source.close()


def _as_arrow(path: Path, kind: str, header: bool | None) -> Path:
    """A CSV/TSV converted once (streaming) into an Arrow IPC file in the cache folder, every
    column a string; keyed by the file's path, size and modification time."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from .._util import cache_dir

    st = path.stat()
    quoted = path.suffix.lower() not in UNQUOTED_SUFFIXES
    key = hashlib.sha256(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{header}\0{kind}\0{quoted}".encode()).hexdigest()[:24]
    out = cache_dir() / "tables" / f"{key}.arrow"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    parse = pacsv.ParseOptions(delimiter="," if kind == "csv" else "\t", quote_char='"' if quoted else False,
                               newlines_in_values=quoted)

    def reader(names=None, types=None):
        read = pacsv.ReadOptions(block_size=8 << 20, use_threads=False, encoding="utf8",
                                 column_names=names, autogenerate_column_names=False)
        if header is False and names is None:
            read.autogenerate_column_names = True
        convert = pacsv.ConvertOptions(column_types=types or {}, strings_can_be_null=False, quoted_strings_can_be_null=False)
        return pacsv.open_csv(path, read_options=read, parse_options=parse, convert_options=convert)

    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        names = reader().schema.names
        if header is False:
            names = [str(i) for i in range(len(names))]
        elif len(set(names)) != len(names) or not all(n.strip() for n in names):
            raise BadInput(f"{path} line 1: every column needs a distinct, non-empty name (got {names!r})")
        stream = reader(names if header is False else None, {n: pa.string() for n in names})
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, stream.schema) as writer:
            for batch in stream:
                writer.write_batch(batch)
        os.replace(tmp, out)
    except pa.ArrowInvalid as e:
        tmp.unlink(missing_ok=True)
        raise BadInput(f"{path}: malformed {kind.upper()} ({str(e).splitlines()[0][:160]}); fix the row or its quoting") from None
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise BadInput(f"cannot write the converted table in {out.parent} ({e.strerror or e}); free space or set "
                       "HEADSTART_CACHE to a folder with room") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


# -- features on disk, read a block at a time ----------------------------------------------------


def npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, byte offset of the data) of a ``.npy`` file."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
        return shape, dtype, f.tell()


class TableFeatures:
    """A feature file of a table (``(n_rows, D)`` float32 ``.npy``, see
    :func:`headstart.backbones.cache.table_features`) as the linear probe's feature source
    (:class:`headstart.methods.linear_probe.InMemoryFeatures`' interface): each pass reads the
    file in blocks of rows with plain reads (not a memory map, whose touched pages would count as
    resident), keeps the rows of the wanted split, and standardises them.

    ``part`` is (n_rows,) int8: 0 train, 1 validation, 2 test, -1 unused; "fit" is train + validation."""

    PARTS = {"train": (0,), "val": (1,), "fit": (0, 1), "test": (2,)}

    def __init__(self, path: Path, part: np.ndarray, codes: np.ndarray, block_bytes: int = 8 << 20):
        self.path = Path(path)
        self.part, self.codes = part, codes
        shape, dtype, self.offset = npy_header(self.path)
        if dtype != np.float32 or len(shape) != 2 or shape[0] != len(part):
            raise BadInput(f"{self.path}: not the feature file of this table (shape {shape}, {dtype}); delete it and run again")
        self.n_rows, self.dim = shape
        self.block = max(1024, block_bytes // (4 * self.dim))
        counts = np.bincount(part[part >= 0], minlength=3)
        self.sizes = {name: int(sum(counts[p] for p in ps)) for name, ps in self.PARTS.items()}
        self.mean = self.std = None

    def blocks(self, part: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(row indices, raw features)`` of the rows of ``part``, one block of rows at a time."""
        wanted = self.PARTS[part]
        with open(self.path, "rb") as f:
            for start in range(0, self.n_rows, self.block):
                stop = min(self.n_rows, start + self.block)
                mask = np.isin(self.part[start:stop], wanted)
                if not mask.any():
                    continue
                f.seek(self.offset + start * self.dim * 4)
                x = np.fromfile(f, dtype=np.float32, count=(stop - start) * self.dim).reshape(stop - start, self.dim)
                yield np.flatnonzero(mask) + start, x if mask.all() else x[mask]  # a fresh array either way

    def standardiser(self):
        """Training-split mean and std (float64 sums, float32 result; as ``_standardiser``)."""
        import torch

        from ..methods.linear_probe import std_floor

        total = np.zeros(self.dim)
        squares = np.zeros(self.dim)
        biggest = 0.0
        n = 0
        for _, x in self.blocks("train"):
            x64 = x.astype(np.float64)
            total += x64.sum(0)
            squares += (x64 * x64).sum(0)
            biggest = max(biggest, float(np.abs(x).max()))
            n += len(x)
        mean = total / n
        std = np.sqrt(np.maximum(squares / n - mean * mean, 0.0))
        if not np.isfinite(std).all() or not np.isfinite(mean).all():
            raise BadInput("features contain NaN or infinity; the backbone produced invalid outputs")
        std = np.maximum(std, std_floor(biggest))
        return torch.from_numpy(mean.astype(np.float32)), torch.from_numpy(std.astype(np.float32))

    def standardise(self, mean, std) -> None:
        self.mean, self.std = mean, std

    def chunks(self, part: str):
        import torch

        for rows, x in self.blocks(part):
            yield torch.from_numpy(x).sub_(self.mean).div_(self.std), torch.from_numpy(self.codes[rows].astype(np.int64))
