"""Read user data into a validated :class:`Dataset`.

Tables: CSV, TSV, JSONL and Parquet (columns inferred or named). Folders: one subfolder per label
holding images. Every problem becomes one :class:`BadInput` line naming the file, the line or
column, and the fix; nothing is half-read.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

from ..errors import BadInput
from .dataset import Dataset

TABLE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
FORMATS = ("csv", "tsv", "jsonl", "parquet")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}

TEXT_NAMES = ("text", "sentence", "content", "document", "review", "utterance", "query", "message", "question", "body", "input", "prompt")
LABEL_NAMES = ("label", "labels", "category", "class", "target", "intent", "sentiment", "y", "tag")

Columns = dict[str, list]


def load_dataset(
    path: str | Path,
    *,
    text_col: str | None = None,
    label_col: str | None = None,
    fmt: str | None = None,
    labels_required: bool = True,
) -> Dataset:
    """Read a table file or an image folder. ``labels_required=False`` is for prediction inputs."""
    p = Path(path).expanduser()
    if not p.exists():
        raise BadInput(f"{p}: no such file or folder; check the path")
    if p.is_dir():
        if text_col or label_col:
            raise BadInput(f"{p} is a folder of files (one subfolder per label): --text-col/--label-col apply to table files only")
        return read_image_folder(p, labels_required=labels_required)
    columns, origin = read_table(p, fmt=fmt)
    return select_columns(p, columns, origin, text_col=text_col, label_col=label_col, labels_required=labels_required)


def table_format(path: Path, fmt: str | None) -> str:
    if fmt:
        if fmt not in FORMATS:
            raise BadInput(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
        return fmt
    found = TABLE_FORMATS.get(path.suffix.lower())
    if found is None:
        raise BadInput(
            f"{path}: unknown format {path.suffix or '(no extension)'!r}; use .csv, .tsv, .jsonl or .parquet, "
            "or name the format with --format"
        )
    return found


def read_table(path: Path, fmt: str | None = None) -> tuple[Columns, list[str]]:
    """Return ``{column: values}`` and each row's origin (``"file line N"``)."""
    kind = table_format(path, fmt)
    if path.stat().st_size == 0:
        raise BadInput(f"{path}: the file is empty; it needs a header row and at least one data row")
    if kind == "parquet":
        return _read_parquet(path)
    text = _decode(path)
    if kind == "jsonl":
        return _read_jsonl(path, text)
    return _read_delimited(path, text, "," if kind == "csv" else "\t")


def _decode(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise BadInput(
            f"{path} line {line}: not valid UTF-8 (byte 0x{raw[e.start]:02x}); re-save the file as UTF-8"
        ) from None


def _read_delimited(path: Path, text: str, delimiter: str) -> tuple[Columns, list[str]]:
    csv.field_size_limit(sys.maxsize)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader, None)
        while header is not None and not any(h.strip() for h in header):
            header = next(reader, None)
        if header is None:
            raise BadInput(f"{path}: the file is empty; it needs a header row and at least one data row")
        header = [h.strip() for h in header]
        _check_header(path, header)
        columns: Columns = {h: [] for h in header}
        origin: list[str] = []
        sep = "comma" if delimiter == "," else "tab"
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != len(header):
                raise BadInput(
                    f"{path} line {reader.line_num}: {len(row)} fields but the header has {len(header)}; "
                    f"quote fields that contain a {sep} or fix the row"
                )
            for h, v in zip(header, row, strict=True):
                columns[h].append(v)
            origin.append(f"{path.name} line {reader.line_num}")
    except csv.Error as e:
        raise BadInput(f"{path} line {reader.line_num}: malformed {sep}-separated row ({e}); fix the quoting") from None
    if not origin:
        raise BadInput(f"{path}: no data rows below the header; add examples")
    return columns, origin


def _check_header(path: Path, header: list[str]) -> None:
    seen = set()
    for i, h in enumerate(header, 1):
        if not h:
            raise BadInput(f"{path} line 1: column {i} has no name; every column needs a header")
        if h in seen:
            raise BadInput(f"{path} line 1: column name {h!r} appears twice; rename one")
        seen.add(h)


def _read_jsonl(path: Path, text: str) -> tuple[Columns, list[str]]:
    rows: list[dict] = []
    origin: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise BadInput(f"{path} line {n}: not valid JSON ({e.msg}); each line must be one JSON object") from None
        if not isinstance(obj, dict):
            raise BadInput(f"{path} line {n}: a JSON {type(obj).__name__}, not an object; each line must be {{\"text\": ..., \"label\": ...}}")
        rows.append(obj)
        origin.append(f"{path.name} line {n}")
    if not rows:
        raise BadInput(f"{path}: the file has no JSON lines; add examples")
    names: list[str] = []
    for r in rows:
        names.extend(k for k in r if k not in names)
    columns: Columns = {k: [_scalar(r.get(k)) for r in rows] for k in names}
    return columns, origin


def _read_parquet(path: Path) -> tuple[Columns, list[str]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise BadInput(f"{path}: not a readable Parquet file ({type(e).__name__}: {str(e)[:120]})") from None
    if table.num_rows == 0:
        raise BadInput(f"{path}: the file has no rows; add examples")
    columns = {name: [_scalar(v) for v in table.column(name).to_pylist()] for name in table.column_names}
    return columns, [f"{path.name} row {i + 1}" for i in range(table.num_rows)]


def _scalar(v):
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, (int, float)):
        return str(v)
    return v  # lists/dicts: rejected where a text or label is needed


def select_columns(path: Path, columns: Columns, origin: list[str], *, text_col, label_col, labels_required) -> Dataset:
    """Pick (or validate) the text and label columns of an already-read table."""
    names = list(columns)
    for opt, col in (("--text-col", text_col), ("--label-col", label_col)):
        if col is not None and col not in columns:
            raise BadInput(f"{path}: {opt} {col!r} is not a column; columns are {', '.join(map(repr, names))}")
    label = label_col or _by_name(names, LABEL_NAMES, exclude=text_col)
    text = text_col or _by_name(names, TEXT_NAMES, exclude=label) or _longest_text_column(columns, exclude=label)
    if text is None:
        raise BadInput(f"{path}: no text column found among {', '.join(map(repr, names))}; name it with --text-col")
    if label is None and labels_required and len(names) == 2:
        label = next(n for n in names if n != text)
    if label is None and labels_required:
        raise BadInput(
            f"{path}: label column missing: none of {', '.join(map(repr, names))} is named like a label "
            f"({', '.join(LABEL_NAMES[:5])}, ...); name it with --label-col"
        )
    if label == text:
        raise BadInput(f"{path}: the text and label columns are both {text!r}; name them with --text-col and --label-col")
    texts = columns[text]
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad:
        where = origin[bad[0]]
        raise BadInput(
            f"{where}: empty text in column {text!r}" + (f" ({len(bad)} rows in all)" if len(bad) > 1 else "")
            + "; fill in or remove those rows"
        )
    labels = None
    if label is not None and not labels_required and any(not isinstance(v, str) or not v.strip() for v in columns[label]):
        label = None  # prediction input: a partly blank label column is simply not used
    if label is not None:
        labels = columns[label]
        bad = [i for i, v in enumerate(labels) if not isinstance(v, str) or not v.strip()]
        if bad:
            raise BadInput(
                f"{origin[bad[0]]}: missing label in column {label!r}"
                + (f" ({len(bad)} rows in all)" if len(bad) > 1 else "")
                + "; label those rows or remove them"
            )
        labels = [v.strip() for v in labels]
    cols = {"text": text}
    if label is not None:
        cols["label"] = label
    return Dataset(inputs=list(texts), labels=labels, modality="text", source=str(path), origin=origin, columns=cols)


def _by_name(names: list[str], wanted: tuple[str, ...], exclude: str | None) -> str | None:
    lower = {n.lower(): n for n in names if n != exclude}
    for w in wanted:
        if w in lower:
            return lower[w]
    return None


def _longest_text_column(columns: Columns, exclude: str | None) -> str | None:
    """The column whose values look most like free text: strings, mostly non-numeric, longest."""
    best, best_len = None, 0.0
    for name, values in columns.items():
        if name == exclude:
            continue
        strs = [v for v in values if isinstance(v, str)]
        if len(strs) < len(values) * 0.9 or not strs:
            continue
        numeric = sum(_is_number(v) for v in strs)
        if numeric > len(strs) / 2:
            continue
        mean_len = sum(len(v) for v in strs) / len(strs)
        if mean_len > best_len:
            best, best_len = name, mean_len
    return best


def _is_number(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def read_image_folder(path: Path, *, labels_required: bool = True) -> Dataset:
    """A folder with one subfolder per label, or (for prediction) a flat folder of images."""
    subdirs = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    inputs: list[str] = []
    labels: list[str] = []
    if subdirs:
        for d in subdirs:
            files = sorted(f for f in d.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise BadInput(f"{d}: class folder {d.name!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); add some or remove it")
            inputs.extend(str(f) for f in files)
            labels.extend([d.name] * len(files))
    else:
        if labels_required:
            raise BadInput(
                f"{path}: no class subfolders; an image dataset is a folder with one subfolder per label (cat/, dog/, ...)"
            )
        inputs = [str(f) for f in sorted(path.iterdir()) if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
    if not inputs:
        raise BadInput(f"{path}: no image files found ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return Dataset(
        inputs=inputs,
        labels=labels if subdirs else None,
        modality="image",
        source=str(path),
        origin=[str(Path(f).relative_to(path)) for f in inputs],
        columns={},
    )


def read_lines(stream, source: str = "<stdin>") -> Dataset:
    """Texts from a stream, one per line (for `headstart predict RUN -`)."""
    texts = [line.rstrip("\r\n") for line in stream]
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise BadInput(f"{source}: no texts to predict; give one text per line")
    return Dataset(inputs=texts, labels=None, modality="text", source=source, origin=[f"{source} line {i + 1}" for i in range(len(texts))])


def read_with_hint(path: Path, hint: dict, *, labels_required: bool, fmt: str | None = None, text_col: str | None = None,
                   label_col: str | None = None) -> tuple[Dataset, Columns]:
    """Read a table with the training data's column names (``hint``: {"text": .., "label": ..})
    where the file has them and no column was named, else infer; also return the raw columns."""
    columns, origin = read_table(path, fmt=fmt)
    text_col = text_col or (hint.get("text") if hint.get("text") in columns else None)
    label_col = label_col or (hint.get("label") if hint.get("label") in columns else None)
    data = select_columns(path, columns, origin, text_col=text_col, label_col=label_col, labels_required=labels_required)
    return data, columns
