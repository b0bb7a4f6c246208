"""Read user data into a validated :class:`Dataset`.

Tables: CSV, TSV (``.txt``: one ``text<TAB>label`` row per line, no quoting), JSONL and Parquet
(columns inferred or named; a delimited file's first row is its header unless ``header=False``, and
a first row that looks like data is refused rather than guessed). Folders: one subfolder per label
holding images, or holding ``.txt`` documents (one text per file). Every problem becomes one
:class:`BadInput` line naming the file, the line or column, and the fix; nothing is half-read and
nothing doubtful (a NaN label, an invisible text, ``1`` beside ``1.0``) is used silently.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import sys
from pathlib import Path

from ..errors import BadInput
from .dataset import Dataset

TABLE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".txt": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
FORMATS = ("csv", "tsv", "jsonl", "parquet")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
TEXT_SUFFIXES = {".txt"}
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3"}
"""What :func:`headstart.data.audio.read_audio` reads (the same set; a unit test holds them equal)."""
AUDIO_NAMES = ("audio", "audio_path", "audio_file", "path", "file", "filename", "file_name", "wav")
"""Column names taken as the audio-path column (when their values are audio files)."""
IMAGE_NAMES = ("image", "image_path", "image_file", "img", "photo", "path", "file", "filename", "file_name")
"""Column names taken as the image-path column (when their values are image files)."""
FILE_COLUMNS = {"audio": (AUDIO_SUFFIXES, AUDIO_NAMES), "image": (IMAGE_SUFFIXES, IMAGE_NAMES)}
"""Modalities a table holds as a column of file paths (relative to the table's folder): (suffixes,
column names looked at first)."""
UNQUOTED_SUFFIXES = {".txt"}
"""Delimited files read line by line with no quoting: a '"' in them is text."""

TEXT_NAMES = ("text", "sentence", "content", "document", "review", "utterance", "query", "message", "question", "body", "input", "prompt")
LABEL_NAMES = ("label", "labels", "category", "class", "target", "intent", "sentiment", "y", "tag")

Columns = dict[str, list]

ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff"
"""Characters that print as nothing; a text of only these and whitespace is empty."""
EDGE_SPACE = re.compile(f"^[\\s{ZERO_WIDTH}]+|[\\s{ZERO_WIDTH}]+$")
"""Leading and trailing whitespace and zero-width characters: ``EDGE_SPACE.sub("", text)`` trims a cell."""
MISSING_LABELS = {"nan"}
"""Label cells that mean "missing" (compared lower-cased), besides empty ones and JSON null: pandas
writes a missing value as ``nan`` once the column went through ``astype(str)``. ``None``/``null``
stay labels in CSV/TSV ("none" is a real class in many intent and toxicity sets)."""


def load_dataset(
    path: str | Path,
    *,
    text_col: str | None = None,
    label_col: str | None = None,
    fmt: str | None = None,
    labels_required: bool = True,
    header: bool | None = None,
) -> Dataset:
    """Read a table file or a folder (images or .txt texts, one subfolder per label).

    ``labels_required=False`` is for prediction inputs. ``header`` applies to CSV/TSV/.txt files:
    None reads the first row as the header unless it looks like data (then refuses), True always
    does, False reads every row as data, the columns named ``0``, ``1``, ...
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise BadInput(f"{p}: no such file or folder; check the path")
    if p.is_dir():
        if text_col or label_col:
            raise BadInput(f"{p} is a folder of files (one subfolder per label): --text-col/--label-col apply to table files only")
        if header is not None:
            raise BadInput(f"{p} is a folder of files (one subfolder per label): --no-header applies to CSV/TSV/.txt files only")
        return read_folder(p, labels_required=labels_required)
    columns, origin = read_table(p, fmt=fmt, header=header, names=(text_col, label_col))
    return select_columns(p, columns, origin, text_col=text_col, label_col=label_col, labels_required=labels_required)


def table_format(path: Path, fmt: str | None) -> str:
    if fmt:
        if fmt not in FORMATS:
            raise BadInput(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
        return fmt
    found = TABLE_FORMATS.get(path.suffix.lower())
    if found is None:
        raise BadInput(
            f"{path}: unknown format {path.suffix or '(no extension)'!r}; use .csv, .tsv, .txt, .jsonl or .parquet, "
            "or name the format with --format"
        )
    return found


def read_table(path: Path, fmt: str | None = None, *, header: bool | None = None,
               names: tuple[str | None, ...] = ()) -> tuple[Columns, list[str]]:
    """Return ``{column: values}`` and each row's origin (``"file line N"``).

    ``header`` as in :func:`load_dataset`; ``names`` are column names the caller expects (named
    with --text-col/--label-col, or the training data's): a first row holding one is a header.
    """
    kind = table_format(path, fmt)
    if path.stat().st_size == 0:
        raise BadInput(f"{path}: the file is empty; it needs a header row and at least one data row")
    if kind in ("parquet", "jsonl") and header is False:
        raise BadInput(f"{path}: --no-header applies to CSV/TSV/.txt files; in {kind.upper()} the column names come with the data")
    if kind == "parquet":
        return _read_parquet(path)
    text = read_utf8(path)
    if kind == "jsonl":
        return _read_jsonl(path, text)
    quoted = path.suffix.lower() not in UNQUOTED_SUFFIXES
    return _read_delimited(path, text, "," if kind == "csv" else "\t", header=header, names=names, quoted=quoted)


def read_utf8(path: Path) -> str:
    """The file's text as UTF-8 (a byte-order mark dropped); BadInput naming the line of the first invalid byte."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise BadInput(
            f"{path} line {line}: not valid UTF-8 (byte 0x{raw[e.start]:02x}); re-save the file as UTF-8"
        ) from None


def _read_delimited(path: Path, text: str, delimiter: str, *, header: bool | None = None,
                    names: tuple[str | None, ...] = (), quoted: bool = True) -> tuple[Columns, list[str]]:
    csv.field_size_limit(sys.maxsize)
    quoting = csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    sep = "comma" if delimiter == "," else "tab"
    rows: list[tuple[int, list[str]]] = []  # (physical line where the row ends, fields)
    start = 1
    try:
        for row in reader:
            if row and not (len(row) == 1 and not row[0].strip()) and (rows or any(v.strip() for v in row)):
                if delimiter == "\t" and quoted and any("\t" in v and "\n" in v for v in row):
                    raise BadInput(
                        f"{path} line {start}: a '\"' opens a quoted field that swallows tabs and line breaks up to line "
                        f"{reader.line_num}; if quotes in this file are plain text, rename it to .txt (read line by line, "
                        "no quoting), else close the quote"
                    )
                rows.append((reader.line_num, row))
            start = reader.line_num + 1
    except csv.Error as e:
        raise BadInput(f"{path} line {reader.line_num}: malformed {sep}-separated row ({e}); fix the quoting") from None
    if not rows:
        raise BadInput(f"{path}: the file is empty; it needs a header row and at least one data row")
    if header is None:
        why = _looks_like_data(rows[0][1], [r for _, r in rows[1:]], names)
        if why:
            raise BadInput(
                f"{path} line {rows[0][0]}: the first row looks like data, not a header ({why}); pass --no-header if the "
                "file has no header row (columns are then 0, 1, ...), or name its columns with --text-col/--label-col"
            )
    if header is False:
        width = len(rows[0][1])
        head, what = [str(i) for i in range(width)], "the first row"
    else:
        head, what = [h.strip() for h in rows[0][1]], "the header"
        _check_header(path, head)
        rows = rows[1:]
    columns: Columns = {h: [] for h in head}
    origin: list[str] = []
    for line, row in rows:
        if len(row) != len(head):
            fix = f"quote fields that contain a {sep} or fix the row" if quoted else "fix the row"
            raise BadInput(f"{path} line {line}: {len(row)} fields but {what} has {len(head)}; {fix}")
        for h, v in zip(head, row, strict=True):
            columns[h].append(v)
        origin.append(f"{path.name} line {line}")
    if not origin:
        raise BadInput(f"{path}: no data rows below the header; add examples")
    return columns, origin


def _looks_like_data(first: list[str], below: list[list[str]], names: tuple[str | None, ...]) -> str | None:
    """Why a first row reads as a data row rather than a header, or None when it may be a header.

    A header it is when a cell is a column name the readers infer by (or one the caller named,
    positional names aside) that does not recur below it, or when a column whose values below are
    numbers has a non-number at the top. Otherwise the row looks like data when a cell's value
    recurs in its column below (a label), or when a cell reads like a sentence."""
    cells = [c.strip() for c in first]
    below = [r for r in below if len(r) == len(first)]
    values = [[r[j].strip() for r in below] for j in range(len(first))]
    known = {n.lower() for n in TEXT_NAMES + LABEL_NAMES + AUDIO_NAMES + IMAGE_NAMES} | {n.lower() for n in names if n and not n.isdigit()}
    if any(c.lower() in known and c not in set(col) for c, col in zip(cells, values, strict=True)):
        return None
    if not below:
        return None
    if len(cells) == 1 and cells[0]:
        return f"one column, and {cells[0][:40]!r} is not a column name the readers know"  # texts, one per line
    for c, col in zip(cells, values, strict=True):
        numbers = sum(_is_number(v) for v in col if v)
        if numbers and numbers >= 0.9 * sum(1 for v in col if v) and c and not _is_number(c):
            return None  # 'rating' above 1, 5, 3, ...
    for j, (c, col) in enumerate(zip(cells, values, strict=True), 1):
        if c and c in set(col):
            return f"{c!r} in column {j} is also a value further down"
    sentence = next((c for c in cells if len(c) >= 25 and len(c.split()) >= 5), None)
    if sentence:
        return f"{sentence[:40] + '...' if len(sentence) > 40 else sentence!r} reads like an example"
    return None


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
    if isinstance(v, float) and math.isnan(v):
        return None  # JSON NaN, a Parquet float NaN: missing, like null
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
    text = text_col or _file_column(columns, exclude=label) or _by_name(names, TEXT_NAMES, exclude=label) \
        or _longest_text_column(columns, exclude=label)
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
    bad = [i for i, t in enumerate(texts) if is_blank(t)]
    if bad:
        where = origin[bad[0]]
        raise BadInput(
            f"{where}: empty text in column {text!r}" + (f" ({len(bad)} rows in all)" if len(bad) > 1 else "")
            + "; fill in or remove those rows"
        )
    labels = None
    if label is not None and not labels_required and any(_missing_label(v) for v in columns[label]):
        label = None  # prediction input: a partly blank label column is simply not used
    if label is not None:
        labels = columns[label]
        bad = [i for i, v in enumerate(labels) if _missing_label(v)]
        if bad:
            raise BadInput(
                f"{origin[bad[0]]}: missing label (empty, null or NaN) in column {label!r}"
                + (f" ({len(bad)} rows in all)" if len(bad) > 1 else "")
                + "; label those rows or remove them"
            )
        labels = [EDGE_SPACE.sub("", v) for v in labels]
        _check_number_spellings(labels, origin, label)
    cols = {"text": text}
    if label is not None:
        cols["label"] = label
    modality = file_modality(texts)
    if modality is not None:
        return Dataset(inputs=file_paths(path, texts, origin, text, modality), labels=labels, modality=modality,
                       source=str(path), origin=origin, columns=cols)
    return Dataset(inputs=list(texts), labels=labels, modality="text", source=str(path), origin=origin, columns=cols)


def _is_file_column(values: list, suffixes: set[str]) -> bool:
    return bool(values) and all(isinstance(v, str) and Path(v.strip()).suffix.lower() in suffixes for v in values)


def is_audio_column(values: list) -> bool:
    """Every value a string naming a file with an audio suffix."""
    return _is_file_column(values, AUDIO_SUFFIXES)


def file_modality(values: list) -> str | None:
    """The modality (:data:`FILE_COLUMNS`) of a column whose every value names such a file; None: text."""
    return next((m for m, (suffixes, _) in FILE_COLUMNS.items() if _is_file_column(values, suffixes)), None)


def _column_of(columns: Columns, exclude: str | None, names: tuple[str, ...], test) -> str | None:
    named = [n for w in names for n in columns if n.lower() == w and n != exclude]
    others = [n for n in columns if n not in named and n != exclude]
    return next((n for n in named + others if test(columns[n])), None)


def _audio_column(columns: Columns, exclude: str | None) -> str | None:
    """A column of audio file paths: one named like one (audio, path, file...) first, else any."""
    return _column_of(columns, exclude, AUDIO_NAMES, is_audio_column)


def _file_column(columns: Columns, exclude: str | None) -> str | None:
    """A column of audio or image file paths: one named like one (audio, image, path...) first, else any."""
    names = tuple(dict.fromkeys(n for _, known in FILE_COLUMNS.values() for n in known))
    return _column_of(columns, exclude, names, lambda values: file_modality(values) is not None)


def audio_paths(table: Path, values: list[str], origin: list[str], column: str) -> list[str]:
    """Audio paths of a table's column (:func:`file_paths`)."""
    return file_paths(table, values, origin, column, "audio")


def file_paths(table: Path, values: list[str], origin: list[str], column: str, modality: str) -> list[str]:
    """File paths of a table's column, relative ones resolved against the table's folder;
    a file that does not exist is refused with its row."""
    out: list[str] = []
    missing: list[int] = []
    for i, v in enumerate(values):
        p = Path(v.strip()).expanduser()
        if not p.is_absolute():
            p = table.parent / p
        if not p.is_file():
            missing.append(i)
        out.append(str(p))
    if missing:
        raise BadInput(f"{origin[missing[0]]}: {modality} file {out[missing[0]]} (column {column!r}) does not exist"
                       + (f" ({len(missing)} rows in all)" if len(missing) > 1 else "")
                       + "; paths are read relative to the table's folder: fix them or remove those rows")
    return out


def is_blank(v) -> bool:
    """Not a string, or only whitespace and zero-width characters."""
    return not isinstance(v, str) or not EDGE_SPACE.sub("", v)


def _missing_label(v) -> bool:
    return is_blank(v) or EDGE_SPACE.sub("", v).lower() in MISSING_LABELS


def _check_number_spellings(labels: list[str], origin: list[str], column: str) -> None:
    """Refuse labels that are different strings but the same number ('1' and '1.0', '01'): they
    would silently become two classes. Refusing, not normalising: which spelling is the class name
    (and whether '1.0' was meant) is the user's call, and a run's classes must not depend on it."""
    first: dict[float, tuple[str, int]] = {}
    for i, v in enumerate(labels):
        try:
            number = float(v)
        except ValueError:
            continue
        if number not in first:
            first[number] = (v, i)
        elif first[number][0] != v:
            seen, j = first[number]
            raise BadInput(
                f"{origin[i]}: label {v!r} in column {column!r} is the same number as {seen!r} ({origin[j]}), but a "
                f"different string, so they would be two classes; write every such label one way (e.g. all {seen!r})"
            )


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


def read_folder(path: Path, *, labels_required: bool = True) -> Dataset:
    """A folder with one subfolder per label holding images, or holding .txt documents (one text
    per file); for prediction also a flat folder of either. Mixing the two kinds is refused."""
    subdirs = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not subdirs and labels_required:
        raise BadInput(
            f"{path}: no class subfolders; a folder dataset has one subfolder per label (cat/, dog/, ... of images, "
            "or pos/, neg/, ... of .txt files)"
        )
    groups = [(d, sorted(f for f in d.rglob("*") if f.is_file())) for d in subdirs] if subdirs else \
        [(path, sorted(f for f in path.iterdir() if f.is_file()))]
    kinds = {"images": IMAGE_SUFFIXES, ".txt texts": TEXT_SUFFIXES, "audio files": AUDIO_SUFFIXES}
    found_kinds = {kind: [f for _, files in groups for f in files if f.suffix.lower() in suffixes]
                   for kind, suffixes in kinds.items()}
    present = [(kind, fs) for kind, fs in found_kinds.items() if fs]
    if len(present) > 1:
        (k1, f1), (k2, f2) = present[:2]
        raise BadInput(
            f"{path}: mixes {k1} ({len(f1)}, e.g. {f1[0].relative_to(path)}) and {k2} ({len(f2)}, e.g. "
            f"{f2[0].relative_to(path)}); a dataset holds one kind: move the other out"
        )
    kind = present[0][0] if present else "images"
    modality = {"images": "image", ".txt texts": "text", "audio files": "audio"}[kind]
    suffixes = kinds[kind]
    files: list[Path] = []
    labels: list[str] = []
    for d, found in groups:
        mine = [f for f in found if f.suffix.lower() in suffixes]
        if not mine and subdirs:
            raise BadInput(
                f"{d}: class folder {d.name!r} holds no {kind} ({', '.join(sorted(suffixes))}); "
                "add some or remove it"
            )
        files.extend(mine)
        labels.extend([d.name] * len(mine))
    if not files:
        raise BadInput(f"{path}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}), .txt texts or audio files "
                       f"({', '.join(sorted(AUDIO_SUFFIXES))}) found")
    origin = [str(f.relative_to(path)) for f in files]
    inputs = _read_text_files(files) if modality == "text" else [str(f) for f in files]
    return Dataset(
        inputs=inputs,
        labels=labels if subdirs else None,
        modality=modality,
        source=str(path),
        origin=origin,
        columns={},
    )


def _read_text_files(files: list[Path]) -> list[str]:
    """Each file's UTF-8 content, stripped; an empty or undecodable file is refused by name."""
    texts: list[str] = []
    empty: list[Path] = []
    for f in files:
        raw = f.read_bytes()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            line = raw[: e.start].count(b"\n") + 1
            raise BadInput(f"{f} line {line}: not valid UTF-8 (byte 0x{raw[e.start]:02x}); re-save the file as UTF-8") from None
        if is_blank(text):
            empty.append(f)
        texts.append(EDGE_SPACE.sub("", text))
    if empty:
        more = f" ({len(empty)} files in all)" if len(empty) > 1 else ""
        raise BadInput(f"{empty[0]}: empty text file{more}; write the text in it or remove it")
    return texts


def read_lines(stream, source: str = "<stdin>") -> Dataset:
    """Texts from a stream, one per line (for `headstart predict RUN -`)."""
    lines = [(n, line.rstrip("\r\n")) for n, line in enumerate(stream, 1)]
    lines = [(n, t) for n, t in lines if not is_blank(t)]
    if not lines:
        raise BadInput(f"{source}: no texts to predict; give one text per line")
    return Dataset(inputs=[t for _, t in lines], labels=None, modality="text", source=source,
                   origin=[f"{source} line {n}" for n, _ in lines])


def read_with_hint(path: Path, hint: dict, *, labels_required: bool, fmt: str | None = None, text_col: str | None = None,
                   label_col: str | None = None, header: bool | None = None) -> tuple[Dataset, Columns]:
    """Read a table with the training data's column names (``hint``: {"text": .., "label": ..})
    where the file has them and no column was named, else infer; also return the raw columns.
    ``header`` as in :func:`load_dataset` (a first row holding a hinted name is a header)."""
    columns, origin = read_table(path, fmt=fmt, header=header, names=(text_col, label_col, hint.get("text"), hint.get("label")))
    text_col = text_col or (hint.get("text") if hint.get("text") in columns else None)
    label_col = label_col or (hint.get("label") if hint.get("label") in columns else None)
    data = select_columns(path, columns, origin, text_col=text_col, label_col=label_col, labels_required=labels_required)
    return data, columns
