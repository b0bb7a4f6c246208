"""Readers: tables in four formats, column inference, label normalisation, origins, image folders."""

from __future__ import annotations

import pytest

from headstart.data import load_dataset, read_lines
from headstart.data.readers import read_table
from headstart.errors import BadInput


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_every_format_reads_the_same_dataset(tmp_path, write_table, sentiment_rows, suffix):
    rows = sentiment_rows(20)
    ds = load_dataset(write_table(tmp_path / f"data{suffix}", rows))
    assert ds.inputs == [t for t, _ in rows]
    assert ds.labels == [y for _, y in rows]
    assert ds.modality == "text"
    assert ds.classes == ["neg", "pos"]
    assert ds.columns == {"text": "text", "label": "label"}
    reference = load_dataset(write_table(tmp_path / "reference.csv", rows))
    assert ds.fingerprint == reference.fingerprint


def test_format_override_and_uppercase_extension(tmp_path, write_table, sentiment_rows):
    rows = sentiment_rows(6)
    data = write_table(tmp_path / "data.csv", rows).rename(tmp_path / "data.dat")
    assert load_dataset(data, fmt="csv").inputs == [t for t, _ in rows]
    upper = write_table(tmp_path / "other.tsv", rows).rename(tmp_path / "OTHER.TSV")
    assert load_dataset(upper).labels == [y for _, y in rows]
    with pytest.raises(BadInput, match="--format 'xls'"):
        load_dataset(data, fmt="xls")


@pytest.mark.parametrize(
    ("columns", "text", "label"),
    [
        (("sentence", "label"), "sentence", "label"),
        (("label", "content"), "content", "label"),
        (("review", "sentiment"), "review", "sentiment"),
        (("Text", "Category"), "Text", "Category"),
        (("query", "intent"), "query", "intent"),
        (("blurb", "target"), "blurb", "target"),  # text by content: the only non-numeric column
        (("words", "kind"), "words", "kind"),  # two columns, no known names: longest is text, the other the label
    ],
)
def test_column_inference(tmp_path, write_table, sentiment_rows, columns, text, label):
    rows = sentiment_rows(10)
    if columns.index(text) == 1:
        rows = [(y, t) for t, y in rows]
    ds = load_dataset(write_table(tmp_path / "data.csv", rows, columns))
    assert ds.columns == {"text": text, "label": label}
    assert ds.inputs == [t for t, _ in sentiment_rows(10)]


def test_text_column_found_by_content_among_several(tmp_path, write_table, sentiment_rows):
    rows = [(str(i), t, "short", y) for i, (t, y) in enumerate(sentiment_rows(10))]
    ds = load_dataset(write_table(tmp_path / "data.csv", rows, ("id", "notes", "code", "label")))
    assert ds.columns == {"text": "notes", "label": "label"}


def test_named_columns_override_inference(tmp_path, write_table, sentiment_rows):
    rows = [(t, "x", y, "pos") for t, y in sentiment_rows(10)]
    ds = load_dataset(write_table(tmp_path / "data.csv", rows, ("text", "other", "mine", "label")), text_col="text", label_col="mine")
    assert ds.columns == {"text": "text", "label": "mine"}
    assert ds.labels == [y for _, y in sentiment_rows(10)]


def test_same_column_for_text_and_label(tmp_path, write_table, sentiment_rows):
    data = write_table(tmp_path / "data.csv", sentiment_rows(6))
    with pytest.raises(BadInput, match="both 'text'"):
        load_dataset(data, text_col="text", label_col="text")


def test_numeric_labels_stay_strings(tmp_path, write_table):
    rows = [("good movie", "-1"), ("bad movie", "1"), ("great food", "10"), ("awful food", "2")]
    ds = load_dataset(write_table(tmp_path / "data.csv", rows))
    assert ds.labels == ["-1", "1", "10", "2"]
    assert ds.classes == ["-1", "1", "2", "10"]  # numeric order, not string order


def test_jsonl_numbers_and_booleans_become_label_strings(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text(
        '{"text": "good", "label": 1}\n{"text": "bad", "label": -1}\n{"text": "great", "label": 1.0}\n'
        '{"text": "love", "label": 2.5}\n{"text": "hate", "label": true}\n'
    )
    assert load_dataset(data).labels == ["1", "-1", "1", "2.5", "true"]


def test_parquet_integer_labels_become_strings(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"text": ["good", "bad", "great"], "label": pa.array([1, -1, 1], pa.int64())}), path)
    ds = load_dataset(path)
    assert ds.labels == ["1", "-1", "1"]
    assert ds.origin == ["data.parquet row 1", "data.parquet row 2", "data.parquet row 3"]


def test_labels_are_stripped(tmp_path, write_table):
    ds = load_dataset(write_table(tmp_path / "data.csv", [("good movie", " pos "), ("bad movie", "neg\t")]))
    assert ds.labels == ["pos", "neg"]


def test_origins_count_physical_lines(tmp_path):
    data = tmp_path / "data.csv"
    data.write_text('text,label\n"a long\nreview",pos\n\nbad movie,neg\n')
    ds = load_dataset(data)
    assert ds.inputs == ["a long\nreview", "bad movie"]
    assert ds.origin == ["data.csv line 3", "data.csv line 5"]


def test_utf8_bom_and_crlf(tmp_path):
    data = tmp_path / "data.csv"
    data.write_bytes("\ufefftext,label\r\ncafé good,pos\r\nbad,neg\r\n".encode())
    ds = load_dataset(data)
    assert ds.columns["text"] == "text"
    assert ds.inputs == ["café good", "bad"]


def test_jsonl_blank_lines_are_skipped_and_origins_kept(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "good", "label": "pos"}\n\n{"text": "bad", "label": "neg"}\n')
    ds = load_dataset(data)
    assert ds.origin == ["data.jsonl line 1", "data.jsonl line 3"]


def test_jsonl_null_text_is_an_empty_text(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "good", "label": "pos"}\n{"text": null, "label": "neg"}\n')
    with pytest.raises(BadInput, match="data.jsonl line 2: empty text"):
        load_dataset(data)


def test_jsonl_missing_key_is_a_missing_label(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "good", "label": "pos"}\n{"text": "bad"}\n')
    with pytest.raises(BadInput, match="data.jsonl line 2: missing label"):
        load_dataset(data)


def test_counts_every_bad_row(tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("text,label\ngood,pos\n,neg\n  ,pos\n")
    with pytest.raises(BadInput, match=r"data.csv line 3: empty text in column 'text' \(2 rows in all\)"):
        load_dataset(data)


def test_without_labels_for_prediction(tmp_path, write_table):
    data = write_table(tmp_path / "data.csv", [("good movie",), ("bad movie",)], ("text",))
    ds = load_dataset(data, labels_required=False)
    assert ds.labels is None and ds.classes == []
    with pytest.raises(BadInput, match="no labels"):
        ds.require_labels()
    with pytest.raises(BadInput, match="label column missing"):
        load_dataset(write_table(tmp_path / "three.csv", [("a b", "c", "d")], ("text", "note", "extra")))


def test_read_table_returns_columns_and_origins(tmp_path, write_table):
    columns, origin = read_table(write_table(tmp_path / "data.tsv", [("good", "pos"), ("bad", "neg")]))
    assert columns == {"text": ["good", "bad"], "label": ["pos", "neg"]}
    assert origin == ["data.tsv line 2", "data.tsv line 3"]


def test_non_utf8_names_the_line_and_byte(tmp_path):
    data = tmp_path / "data.csv"
    data.write_bytes(b"text,label\ngood,pos\nbad,neg\nsp\xe9cial,pos\n")
    with pytest.raises(BadInput, match=r"data.csv line 4: not valid UTF-8 \(byte 0xe9\)"):
        load_dataset(data)


def test_read_lines():
    import io

    ds = read_lines(io.StringIO("good movie\r\n\n  \nbad food\n"))
    assert ds.inputs == ["good movie", "bad food"]
    assert ds.labels is None and ds.modality == "text"
    with pytest.raises(BadInput, match="no texts"):
        read_lines(io.StringIO(""))


# -- image folders -----------------------------------------------------------------------------


def test_image_folder_with_class_subfolders(image_folder):
    ds = load_dataset(image_folder)
    assert ds.modality == "image"
    assert ds.classes == ["blue", "red"]
    assert len(ds) == 32 and ds.labels.count("red") == 16
    assert ds.origin[0] == "blue/blue00.png"


def test_flat_image_folder_only_for_prediction(flat_images):
    folder, truth = flat_images
    ds = load_dataset(folder, labels_required=False)
    assert ds.labels is None and len(ds) == len(truth)
    with pytest.raises(BadInput, match="no class subfolders"):
        load_dataset(folder)


def test_image_folder_errors(tmp_path, image_folder):
    empty_class = tmp_path / "imgs"
    (empty_class / "cat").mkdir(parents=True)
    with pytest.raises(BadInput, match="class folder 'cat' holds no images"):
        load_dataset(empty_class)
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    with pytest.raises(BadInput, match="no image files"):
        load_dataset(nothing, labels_required=False)
    with pytest.raises(BadInput, match="--text-col/--label-col apply to table files only"):
        load_dataset(image_folder, text_col="text")
