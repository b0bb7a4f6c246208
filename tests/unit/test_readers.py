"""Readers: tables in four formats, column inference, label normalisation, origins, image folders."""

from __future__ import annotations

from pathlib import Path

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


# -- doubtful input is refused, one line each (issue 18) ---------------------------------------

UCI = Path("/work/shared/data/uci_sentiment_sentences")


def _bad(path, **kw) -> str:
    with pytest.raises(BadInput) as e:
        load_dataset(path, **kw)
    message = str(e.value)
    assert "\n" not in message
    return message


def test_nan_labels_in_csv_are_missing_labels(tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("text,label\ngood movie,pos\nbad movie,NaN\nfine food,neg\nawful food,nan\n")
    message = _bad(data)
    assert message.startswith("data.csv line 3: missing label")
    assert "(2 rows in all)" in message and "remove them" in message


def test_nan_and_null_labels_in_jsonl_and_parquet_are_missing_labels(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text('{"text": "good", "label": "pos"}\n{"text": "bad", "label": NaN}\n{"text": "ok", "label": null}\n')
    assert _bad(jsonl).startswith("data.jsonl line 2: missing label")
    assert "(2 rows in all)" in _bad(jsonl)
    floats = tmp_path / "floats.parquet"
    pq.write_table(pa.table({"text": ["good", "bad", "ok"], "label": [1.0, float("nan"), 0.0]}), floats)
    assert _bad(floats).startswith("floats.parquet row 2: missing label")
    nulls = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"text": ["good", "bad", "ok"], "label": ["pos", None, "neg"]}), nulls)
    assert _bad(nulls).startswith("nulls.parquet row 2: missing label")
    nan_text = tmp_path / "text.parquet"
    pq.write_table(pa.table({"text": [1.5, float("nan")], "label": ["pos", "neg"]}), nan_text)
    assert _bad(nan_text, text_col="text").startswith("text.parquet row 2: empty text")


def test_none_and_null_stay_labels_in_csv(tmp_path, write_table):
    # "none" is a real class in many intent/toxicity sets; only empty and NaN cells are missing
    ds = load_dataset(write_table(tmp_path / "data.csv", [("hi there", "None"), ("you idiot", "insult"), ("ok", "null")]))
    assert ds.labels == ["None", "insult", "null"]


def test_nan_labels_in_prediction_input_drop_the_label_column(tmp_path, write_table):
    ds = load_dataset(write_table(tmp_path / "data.csv", [("good", "pos"), ("bad", "nan")]), labels_required=False)
    assert ds.labels is None and ds.inputs == ["good", "bad"]


def test_zero_width_texts_are_empty_texts(tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("text,label\ngood movie,pos\n\u200b\u200c,neg\n \ufeff\u2060\u200d ,pos\nbad,neg\n", encoding="utf-8")
    message = _bad(data)
    assert message.startswith("data.csv line 3: empty text in column 'text' (2 rows in all)")
    labelled = tmp_path / "labels.csv"
    labelled.write_text("text,label\ngood movie,pos\u200b\nbad movie,\u200b\n", encoding="utf-8")
    assert _bad(labelled).startswith("labels.csv line 3: missing label")
    labelled.write_text("text,label\ngood movie,pos\u200b\nbad movie,\ufeffneg\n", encoding="utf-8")
    assert load_dataset(labelled).labels == ["pos", "neg"]


def test_read_lines_skips_invisible_lines_and_counts_physical_lines():
    import io

    ds = read_lines(io.StringIO("good movie\n\u200b\u2060\n  \nbad food\n"))
    assert ds.inputs == ["good movie", "bad food"]
    assert ds.origin == ["<stdin> line 1", "<stdin> line 4"]


def test_same_number_spelled_two_ways_is_refused(tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("text,label\ngood movie,1\nbad movie,0\ngreat food,1.0\nawful food,0\n")
    message = _bad(data)
    assert message.startswith("data.csv line 4: label '1.0' in column 'label' is the same number as '1' (data.csv line 2)")
    data.write_text("text,label\ngood movie,01\nbad movie,0\ngreat food,1\n")
    assert "'1'" in _bad(data) and "'01'" in _bad(data)
    data.write_text("text,label\ngood movie,1\nbad movie,-1\ngreat food,1\nawful food,10\n")
    assert load_dataset(data).classes == ["-1", "1", "10"]  # distinct numbers stay distinct classes


def _headerless(path, n=12):
    rows = [("a long sentence about how good this phone really is" if i % 2 else "the worst purchase I have made this year",
             "1" if i % 2 else "-1") for i in range(n)]
    path.write_text("".join(f"{t} {i}\t{y}\n" for i, (t, y) in enumerate(rows)), encoding="utf-8")
    return path


def test_headerless_tsv_is_refused_not_trained_on_one_row_less(tmp_path):
    data = _headerless(tmp_path / "data.tsv")
    message = _bad(data)
    assert message.startswith(f"{data} line 1: the first row looks like data, not a header")
    assert "--no-header" in message and "--text-col" in message


def test_no_header_reads_every_row_with_positional_columns(tmp_path):
    data = _headerless(tmp_path / "data.tsv")
    ds = load_dataset(data, header=False)
    assert len(ds) == 12 and ds.columns == {"text": "0", "label": "1"}
    assert ds.origin[0] == "data.tsv line 1" and ds.classes == ["-1", "1"]
    named = load_dataset(data, header=False, text_col="0", label_col="1")
    assert named.fingerprint == ds.fingerprint
    kept = load_dataset(data, header=True)  # told there is a header: the first row is the header
    assert len(kept) == 11


def test_header_detection_keeps_real_headers(tmp_path, write_table, sentiment_rows):
    # a spreadsheet header: sentence-like, but the column below it is numbers and its head is not
    rows = [(t, str(i % 5 + 1)) for i, (t, _) in enumerate(sentiment_rows(10))]
    forms = write_table(tmp_path / "forms.tsv", rows, ("What did you think of the product overall?", "Rating"))
    assert len(load_dataset(forms)) == 10
    # an unknown sentence-like header over text columns is doubtful: naming a column settles it
    doubtful = write_table(tmp_path / "doubtful.tsv", sentiment_rows(10), ("What did you think of it overall?", "Which one"))
    assert "first row looks like data" in _bad(doubtful)
    ds = load_dataset(doubtful, text_col="What did you think of it overall?", label_col="Which one")
    assert len(ds) == 10


def test_a_label_named_y_in_the_first_row_of_headerless_data_is_data(tmp_path):
    data = tmp_path / "data.tsv"
    data.write_text("the food was fine\ty\nthe food was cold\tn\nthe room was nice\ty\n")
    assert "'y' in column 2 is also a value further down" in _bad(data)


def test_txt_files_are_tab_separated_lines_without_quoting(tmp_path):
    data = tmp_path / "reviews_labelled.txt"
    data.write_text('" The plot is great.  \t1\nI hated "that" scene.\t0\nNice.\t1\n"Bad, "really".\t0\n', encoding="utf-8")
    ds = load_dataset(data, header=False)
    assert ds.inputs == ['" The plot is great.  ', 'I hated "that" scene.', "Nice.", '"Bad, "really".']
    assert ds.labels == ["1", "0", "1", "0"]
    assert load_dataset(data, fmt="tsv", header=False).inputs == ds.inputs  # --format tsv on .txt: still line by line
    assert "first row looks like data" in _bad(data)


def test_stray_quote_in_tsv_is_refused(tmp_path):
    data = tmp_path / "data.tsv"
    data.write_text('text\tlabel\n" The plot is great.\t1\nI hated it.\t0\nNice.\t1\n')
    message = _bad(data)
    assert message.startswith(f"{data} line 2: a '\"' opens a quoted field that swallows tabs and line breaks")
    assert "rename it to .txt" in message


def test_no_header_is_refused_for_jsonl_and_folders(tmp_path, image_folder):
    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "good", "label": "pos"}\n')
    assert "--no-header applies to CSV/TSV/.txt files" in _bad(data, header=False)
    assert "--no-header applies to CSV/TSV/.txt files" in _bad(image_folder, header=False)


@pytest.mark.skipif(not UCI.is_dir(), reason="needs /work/shared/data/uci_sentiment_sentences (the UCI sample)")
def test_uci_labelled_sentences_read_whole_with_no_header():
    amazon = UCI / "amazon_labelled.txt"
    assert "--no-header" in _bad(amazon, fmt="tsv")
    for name in ("amazon", "imdb", "yelp"):
        ds = load_dataset(UCI / f"{name}_labelled.txt", header=False)
        lines = (UCI / f"{name}_labelled.txt").read_text(encoding="utf-8").rstrip("\n").split("\n")  # U+2028 is text
        assert len(ds) == len(lines) == 1000
        assert ds.inputs[0] == lines[0].split("\t")[0]
        assert ds.classes == ["-1", "1"]


# -- text folders ------------------------------------------------------------------------------


def _text_folder(root, texts):
    for rel, content in texts.items():
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return root


def test_text_folder_with_class_subfolders(tmp_path):
    folder = _text_folder(tmp_path / "data", {"pos/a.txt": "  a good film\n", "pos/b.txt": "loved it", "neg/c.txt": "\ufeffawful",
                                              "neg/notes.md": "ignored"})
    ds = load_dataset(folder)
    assert ds.modality == "text"
    assert ds.inputs == ["awful", "a good film", "loved it"]
    assert ds.labels == ["neg", "pos", "pos"]
    assert ds.origin == ["neg/c.txt", "pos/a.txt", "pos/b.txt"]
    flat = _text_folder(tmp_path / "flat", {"x.txt": "good", "y.txt": "bad"})
    assert load_dataset(flat, labels_required=False).inputs == ["good", "bad"]


def test_text_folder_errors(tmp_path):
    empty = _text_folder(tmp_path / "empty", {"pos/a.txt": "good", "neg/b.txt": " \u200b\n"})
    assert _bad(empty) == f"{empty / 'neg' / 'b.txt'}: empty text file; write the text in it or remove it"
    latin = _text_folder(tmp_path / "latin", {"pos/a.txt": "good", "neg/b.txt": b"caf\xe9"})
    assert _bad(latin).startswith(f"{latin / 'neg' / 'b.txt'} line 1: not valid UTF-8 (byte 0xe9)")
    mixed = _text_folder(tmp_path / "mixed", {"pos/a.txt": "good", "neg/b.png": b"\x89PNG"})
    assert _bad(mixed).startswith(f"{mixed}: mixes images (1, e.g. neg/b.png) and .txt texts (1, e.g. pos/a.txt)")
    lonely = _text_folder(tmp_path / "lonely", {"pos/a.txt": "good", "neg/b.md": "bad"})
    assert "class folder 'neg' holds no .txt texts" in _bad(lonely)  # the kind its sibling folders hold


# -- the command line: one `error:` line, exit 2 -----------------------------------------------


def _rows_csv(extra: str) -> str:
    """A CSV that adapts fine (12 rows, two classes) with ``extra`` rows appended."""
    good = "".join(f"good movie {i},pos\nbad movie {i},neg\n" for i in range(6))
    return "text,label\n" + good + extra


@pytest.mark.parametrize(("case", "needle"), [
    ("nan_label", "data.csv line 14: missing label"),
    ("headerless_tsv", "--no-header"),
    ("number_spellings", "label '1.0'"),
    ("zero_width_text", "data.csv line 14: empty text"),
])
def test_cli_refuses_doubtful_data_in_one_line(tmp_path, tiny_bert, capsys, case, needle):
    from headstart.cli import main

    path = tmp_path / ("data.tsv" if case == "headerless_tsv" else "data.csv")
    if case == "headerless_tsv":
        _headerless(path, n=20)
    else:
        extra = {"nan_label": "worse film,NaN\nfine film,NaN\n",
                 "number_spellings": "great food,1\nawful food,0\nfine food,1.0\nworse food,0\nok food,1.0\n",
                 "zero_width_text": "\u200b,pos\n\u2060 \ufeff,neg\n"}[case]
        text = _rows_csv(extra)
        path.write_text(text.replace("pos", "1").replace("neg", "0") if case == "number_spellings" else text, encoding="utf-8")
    capsys.readouterr()
    rc = main(["adapt", str(path), "--backbone", str(tiny_bert), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert needle in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_no_header_option_on_every_reading_command():
    from headstart.cli import build_parser

    parser = build_parser()
    for argv in (["adapt", "x.tsv"], ["plan", "x.tsv"], ["eval", "RUN", "x.tsv"], ["predict", "RUN", "x.tsv"]):
        assert parser.parse_args(argv).header is None
        assert parser.parse_args([*argv, "--no-header"]).header is False


def test_no_header_through_adapt_predict_and_eval(tmp_path, tiny_bert, cli):
    import json

    data = _headerless(tmp_path / "train.tsv", n=40)
    out = tmp_path / "out"
    r = cli("adapt", data, "--no-header", "--backbone", tiny_bert, "--out", out, "--json")
    assert r.rc == 0, r
    manifest = r.json()["manifest"]
    assert manifest["recipe"]["header"] is False
    assert manifest["data"]["split"]["train"] + manifest["data"]["split"]["val"] + manifest["data"]["split"]["test"] == 40
    run = r.json()["run"]
    new = _headerless(tmp_path / "new.tsv", n=4)
    assert cli("predict", run, new).rc == 2
    r = cli("predict", run, new, "--no-header", "--json")
    assert r.rc == 0, r
    assert len(json.loads(r.out)) == 4
    r = cli("eval", run, new, "--no-header", "--json")
    assert r.rc == 0, r


def test_one_column_of_texts_without_a_known_header_is_doubtful(tmp_path):
    data = tmp_path / "new.txt"
    data.write_text("good movie\nbad movie\n")
    assert "one column, and 'good movie' is not a column name" in _bad(data, labels_required=False)
    assert load_dataset(data, labels_required=False, header=False).inputs == ["good movie", "bad movie"]
    data.write_text("comment\ngood movie\nbad movie\n")
    assert load_dataset(data, labels_required=False, text_col="comment").inputs == ["good movie", "bad movie"]
    data.write_text("text\ngood movie\nbad movie\n")
    assert load_dataset(data, labels_required=False).inputs == ["good movie", "bad movie"]
