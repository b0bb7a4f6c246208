"""The command line: every bad input is one 'error: ' line, exit 2, and leaves nothing behind;
the happy paths produce parseable output."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from headstart.runs import Store

RUN_FILES = {"manifest.json", "weights.safetensors", "metrics.json", "predictions.csv"}


def csv_bytes(rows, header=("text", "label"), delimiter=",") -> bytes:
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, delimiter=delimiter, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def _rows(n=40):
    """Distinct labelled texts (pos/neg alternating) built from words the tiny tokenizer knows."""
    nouns = ("movie", "food", "film", "price", "card", "delivery", "account", "parcel", "password", "money")
    pos, neg = ("good", "great", "love"), ("bad", "awful", "hate")
    return [
        (f"the {nouns[i % 10]} was {pos[i % 3] if i % 2 == 0 else neg[i % 3]} {'very ' * (i // 10)}".strip(), "pos" if i % 2 == 0 else "neg")
        for i in range(n)
    ]


def _replace_line(data: bytes, line_no: int, new: bytes) -> bytes:
    lines = data.split(b"\n")
    lines[line_no - 1] = new
    return b"\n".join(lines)


def _empty_parquet(path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": pa.array([], pa.string()), "label": pa.array([], pa.string())}), path)


# name, file name, content (bytes or a writer taking the path), extra CLI args, what the error line must name
BAD_DATA = [
    ("empty-file-0-bytes", "train.csv", b"", [], ["train.csv", "empty"]),
    ("empty-file-header-only", "train.csv", b"text,label\n", [], ["train.csv", "no data rows"]),
    ("empty-file-blank-lines", "train.csv", b"\n\n\n", [], ["train.csv", "empty"]),
    ("empty-jsonl-0-bytes", "train.jsonl", b"", [], ["train.jsonl", "empty"]),
    ("empty-jsonl-blank-lines", "train.jsonl", b"\n  \n", [], ["train.jsonl", "no JSON lines"]),
    ("empty-parquet", "train.parquet", _empty_parquet, [], ["train.parquet", "no rows"]),
    ("unknown-format-xlsx", "train.xlsx", b"PK\x03\x04 not a table", [], ["train.xlsx", "'.xlsx'", "--format"]),
    ("unknown-format-docx", "train.docx", b"good movie\nbad movie\n", [], ["train.docx", "'.docx'", ".csv"]),
    ("unreadable-parquet", "train.parquet", b"text,label\ngood,pos\n", [], ["train.parquet", "Parquet"]),
    ("no-text-column", "train.csv", b"a,b\n1,2\n3,4\n5,6\n", [], ["train.csv", "no text column", "'a'", "--text-col"]),
    (
        "no-text-column-with-label",
        "train.csv",
        csv_bytes([(str(i), "pos" if i % 2 else "neg") for i in range(20)], header=("id", "label")),
        [],
        ["train.csv", "no text column", "--text-col"],
    ),
    (
        "label-column-missing",
        "train.csv",
        csv_bytes([(t, "some comment", "a note") for t, _ in _rows(20)], header=("text", "comment", "note")),
        [],
        ["train.csv", "label column missing", "'comment'", "--label-col"],
    ),
    ("label-col-not-a-column", "train.csv", csv_bytes(_rows()), ["--label-col", "category"], ["train.csv", "--label-col 'category'", "'label'"]),
    ("text-col-not-a-column", "train.csv", csv_bytes(_rows()), ["--text-col", "sentence"], ["train.csv", "--text-col 'sentence'", "'text'"]),
    ("single-class", "train.csv", csv_bytes([(t, "pos") for t, _ in _rows()]), [], ["train.csv", "only one class", "'pos'"]),
    ("class-with-one-example", "train.csv", csv_bytes(_rows() + [("the film was very good", "meh")]), [], ["train.csv", "'meh' (1)", "fewer than 2"]),
    ("empty-text", "train.csv", _replace_line(csv_bytes(_rows()), 5, b",neg"), [], ["train.csv line 5", "empty text", "'text'"]),
    ("blank-text", "train.csv", _replace_line(csv_bytes(_rows()), 6, b'"   ",pos'), [], ["train.csv line 6", "empty text"]),
    ("missing-label", "train.csv", _replace_line(csv_bytes(_rows()), 7, b"the movie was good,"), [], ["train.csv line 7", "missing label", "'label'"]),
    ("non-utf8", "train.csv", _replace_line(csv_bytes(_rows()), 4, b"the movie was \xff good,pos"), [], ["train.csv line 4", "UTF-8", "0xff"]),
    ("non-utf8-jsonl", "train.jsonl", b'{"text": "good", "label": "pos"}\n{"text": "bad \xfe", "label": "neg"}\n', [], ["train.jsonl line 2", "UTF-8"]),
    ("ragged-row", "train.csv", _replace_line(csv_bytes(_rows()), 3, b"the movie was good,pos,extra"), [], ["train.csv line 3", "3 fields", "header has 2"]),
    ("ragged-row-short", "train.csv", _replace_line(csv_bytes(_rows()), 9, b"the movie was good"), [], ["train.csv line 9", "1 fields"]),
    (
        "ragged-row-tsv",
        "train.tsv",
        _replace_line(csv_bytes(_rows(), delimiter="\t"), 8, b"good movie\tpos\tmore"),
        [],
        ["train.tsv line 8", "3 fields"],
    ),
    (
        "ragged-row-after-multiline-field",
        "train.csv",
        _replace_line(csv_bytes(_rows()), 3, b'"the movie\nwas good",pos\nthe film,neg,extra'),
        [],
        ["train.csv line 5", "3 fields"],
    ),
    (
        "invalid-jsonl-line",
        "train.jsonl",
        b'{"text": "good movie", "label": "pos"}\n{"text": "bad movie", "label": "neg"}\n{"text": "oops", \n',
        [],
        ["train.jsonl line 3", "not valid JSON"],
    ),
    ("jsonl-line-not-an-object", "train.jsonl", b'{"text": "good movie", "label": "pos"}\n[1, 2]\n', [], ["train.jsonl line 2", "not an object"]),
    ("duplicate-column", "train.csv", b"text,text,label\na,b,pos\n", [], ["train.csv line 1", "'text' appears twice"]),
    ("unnamed-column", "train.csv", b"text,,label\na,b,pos\n", [], ["train.csv line 1", "column 2 has no name"]),
]


@pytest.fixture
def adapt_bad(tmp_path, cli, tiny_bert, assert_bad_input):
    """Run `headstart adapt` on a bad input and check the one-line error and that nothing was written."""

    def check(data, *extra, needles=(), backbone=None):
        out, store = tmp_path / "out", tmp_path / "store.sqlite3"
        result = cli("adapt", data, "--backbone", backbone or tiny_bert, "--out", out, "--store", store, *extra)
        return assert_bad_input(result, *needles, out_dir=out, store=store)

    return check


# -- bad data ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "filename", "content", "extra", "needles"), BAD_DATA, ids=[c[0] for c in BAD_DATA])
def test_adapt_bad_data_is_one_line_exit_2_and_writes_nothing(tmp_path, adapt_bad, name, filename, content, extra, needles):
    path = tmp_path / filename
    if callable(content):
        content(path)
    else:
        path.write_bytes(content)
    adapt_bad(path, *extra, needles=needles)


def test_adapt_missing_file(tmp_path, adapt_bad):
    adapt_bad(tmp_path / "nothere.csv", needles=["nothere.csv", "no such file"])


def test_adapt_missing_test_file(train_csv, tmp_path, adapt_bad):
    adapt_bad(train_csv, "--test", tmp_path / "test-nothere.csv", needles=["test-nothere.csv", "no such file"])


def test_adapt_test_labels_never_seen_in_training(tmp_path, train_csv, write_table, sentiment_rows, adapt_bad):
    rows = sentiment_rows(10) + [("the price was very good", "neutral"), ("my card", "neutral")]
    test = write_table(tmp_path / "test.csv", rows)
    adapt_bad(train_csv, "--test", test, needles=["test.csv", "'neutral' (2 rows)", "never seen", "line 12"])


def test_adapt_test_file_with_other_modality(tmp_path, train_csv, image_folder, adapt_bad):
    adapt_bad(train_csv, "--test", image_folder, needles=[str(image_folder), "holds image"])


# -- bad options -------------------------------------------------------------------------------


def test_unknown_backbone_suggests_close_name(train_csv, adapt_bad):
    line = adapt_bad(train_csv, backbone="minilm-l7", needles=["'minilm-l7'", "unknown backbone", "'minilm-l6'", "headstart models"])
    assert "efficientnet" not in line


def test_unknown_backbone_far_from_everything(train_csv, adapt_bad):
    adapt_bad(train_csv, backbone="resnet9000", needles=["'resnet9000'", "headstart models"])


def test_unknown_method_suggests_linear_probe(train_csv, adapt_bad):
    adapt_bad(train_csv, "--method", "linear-prob", needles=["unknown method 'linear-prob'", "'linear-probe'"])


def test_unknown_method_option_suggests_close_name(train_csv, adapt_bad):
    adapt_bad(train_csv, "--set", "max_iters=10", needles=["'max_iters'", "'max_iter'", "Cs"])


def test_set_without_equals(train_csv, adapt_bad):
    adapt_bad(train_csv, "--set", "C", needles=["--set 'C'", "KEY=VALUE"])


@pytest.mark.parametrize(
    ("option", "needle"),
    [("C=0", "C"), ("C=-1", "C"), ("Cs=[]", "Cs"), ("max_iter=0", "max_iter")],
)
def test_out_of_range_method_option(train_csv, adapt_bad, option, needle):
    adapt_bad(train_csv, "--set", option, needles=[needle, "linear-probe"])


@pytest.mark.parametrize(
    ("option", "needle"),
    [("C=abc", "C"), ("Cs=5", "Cs"), ("max_iter=ten", "max_iter")],
)
def test_wrongly_typed_method_option(train_csv, adapt_bad, option, needle):
    """A value of the wrong type must be a one-line BadInput too, not a TypeError traceback."""
    adapt_bad(train_csv, "--set", option, needles=[needle])


def test_backbone_folder_without_config_json(tmp_path, train_csv, adapt_bad):
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"\0" * 16)
    adapt_bad(train_csv, backbone=folder, needles=[str(folder.resolve()), "config.json"])


def test_backbone_path_is_a_file(tmp_path, train_csv, adapt_bad):
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"\0" * 16)
    adapt_bad(train_csv, backbone=weights, needles=["weights.bin", "is a file"])


def test_text_data_with_image_backbone(train_csv, tiny_vit, adapt_bad):
    adapt_bad(train_csv, backbone=tiny_vit, needles=["takes image", "holds text", "train.csv"])


def test_image_data_with_text_backbone(image_folder, tiny_bert, adapt_bad):
    adapt_bad(image_folder, backbone=tiny_bert, needles=["takes text", "holds image"])


def test_negative_seed(train_csv, adapt_bad):
    adapt_bad(train_csv, "--seed", "-1", needles=["--seed"])


def test_bad_split_fractions(train_csv, adapt_bad):
    adapt_bad(train_csv, "--val-fraction", "0.9", "--test-fraction", "0.2", needles=["fractions"])


def test_too_few_examples_for_a_validation_split(tmp_path, write_table, adapt_bad):
    data = write_table(tmp_path / "tiny.csv", [("good movie", "pos"), ("great food", "pos"), ("bad movie", "neg"), ("awful food", "neg")])
    adapt_bad(data, needles=["tiny.csv", "validation"])


def test_out_is_an_existing_file(tmp_path, train_csv, cli, tiny_bert, assert_bad_input):
    out = tmp_path / "out-file"
    out.write_text("not a folder")
    store = tmp_path / "store.sqlite3"
    assert_bad_input(cli("adapt", train_csv, "--backbone", tiny_bert, "--out", out, "--store", store), "out-file", store=store)
    assert out.read_text() == "not a folder"


def test_store_that_cannot_be_opened_leaves_no_run_folder(tmp_path, train_csv, cli, tiny_bert, assert_bad_input):
    out = tmp_path / "out"
    store_dir = tmp_path / "a-folder"
    store_dir.mkdir()
    assert_bad_input(cli("adapt", train_csv, "--backbone", tiny_bert, "--out", out, "--store", store_dir), "a-folder", out_dir=out)


def test_argparse_usage_error_exits_2(train_csv, cli):
    result = cli("adapt", train_csv, "--format", "xlsx")
    assert result.rc == 2
    assert "xlsx" in result.err


# -- run folders that are missing files or were edited -----------------------------------------


def _delete(name):
    def damage(run: Path):
        (run / name).unlink()

    return damage


def _edit_manifest(run: Path):
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["metrics"]["test"]["summary"]["accuracy"] = 0.99
    (run / "manifest.json").write_text(json.dumps(manifest, indent=2))


def _manifest_not_json(run: Path):
    (run / "manifest.json").write_text("{ this is not json")


def _corrupt_weights(run: Path):
    data = bytearray((run / "weights.safetensors").read_bytes())
    data[-1] ^= 0x01
    (run / "weights.safetensors").write_bytes(bytes(data))


def _edit_predictions(run: Path):
    with open(run / "predictions.csv", "a") as f:
        f.write("an extra row,pos,pos,1.0,0.0\n")


DAMAGE = [
    ("missing-head", _delete("weights.safetensors"), ["weights.safetensors", "missing"]),
    ("missing-metrics", _delete("metrics.json"), ["metrics.json", "missing"]),
    ("missing-predictions", _delete("predictions.csv"), ["predictions.csv", "missing"]),
    ("missing-manifest", _delete("manifest.json"), ["manifest.json", "missing"]),
    ("edited-manifest", _edit_manifest, ["manifest.json", "edited", "checksum"]),
    ("manifest-not-json", _manifest_not_json, ["manifest.json", "not valid JSON"]),
    ("edited-weights", _corrupt_weights, ["weights.safetensors", "edited"]),
    ("edited-predictions", _edit_predictions, ["predictions.csv", "edited"]),
]


@pytest.mark.parametrize(("name", "damage", "needles"), DAMAGE, ids=[d[0] for d in DAMAGE])
@pytest.mark.parametrize("command", ["predict", "eval"])
def test_damaged_run_folder_is_refused(tmp_path, trained_run, cli, assert_bad_input, name, damage, needles, command):
    run = trained_run.copy_to(tmp_path / "runs")
    damage(run)
    store = tmp_path / "store.sqlite3"
    if command == "predict":
        result = cli("predict", run, "-", "--store", store, stdin="good movie\n")
    else:
        result = cli("eval", run, trained_run.data, "--store", store)
    assert_bad_input(result, *needles, store=store)
    assert result.out == ""
    if store.exists():
        assert Store(store).evals(trained_run.id) == []


def test_damaged_run_found_by_id_is_refused(tmp_path, trained_run, cli, tiny_bert, train_csv, assert_bad_input):
    store = tmp_path / "store.sqlite3"
    made = cli("adapt", train_csv, "--backbone", tiny_bert, "--out", tmp_path / "out", "--store", store, "--json")
    assert made.rc == 0, made
    run_id, path = made.json()["run"], Path(made.json()["path"])
    (path / "weights.safetensors").unlink()
    assert_bad_input(cli("predict", run_id[:20], "-", "--store", store, stdin="good movie\n"), "weights.safetensors", "missing")


def test_run_that_does_not_exist(tmp_path, cli, assert_bad_input):
    store = tmp_path / "store.sqlite3"
    assert_bad_input(cli("predict", "20990101-nothing", "-", "--store", store, stdin="good\n"), "'20990101-nothing'", "headstart runs")


# -- predict / eval inputs ---------------------------------------------------------------------


def test_predict_input_with_no_text_column(tmp_path, trained_run, cli, assert_bad_input):
    data = tmp_path / "numbers.csv"
    data.write_text("a,b\n1,2\n3,4\n")
    assert_bad_input(cli("predict", trained_run.path, data), "numbers.csv", "no text column", "'a'")


def test_predict_no_text_column_advice_names_a_real_option(tmp_path, trained_run, cli, assert_bad_input):
    """The error tells the user to pass --text-col, and predict really accepts it."""
    data = tmp_path / "numbers.csv"
    data.write_text("a,b\n1,good movie\n3,bad film\n")
    line = assert_bad_input(cli("predict", trained_run.path, tmp_path / "nope.csv"), "nope.csv")
    assert "no such file" in line
    data2 = tmp_path / "numbers_only.csv"
    data2.write_text("a,b\n1,2\n3,4\n")
    line = assert_bad_input(cli("predict", trained_run.path, data2), "numbers_only.csv")
    assert "--text-col" in line
    assert cli("predict", trained_run.path, data, "--text-col", "b").rc == 0


def test_predict_input_file_missing(tmp_path, trained_run, cli, assert_bad_input):
    assert_bad_input(cli("predict", trained_run.path, tmp_path / "nothere.csv"), "nothere.csv", "no such file")


def test_eval_data_file_missing(tmp_path, trained_run, cli, assert_bad_input):
    assert_bad_input(cli("eval", trained_run.path, tmp_path / "nothere.csv"), "nothere.csv", "no such file")


@pytest.mark.parametrize(
    ("filename", "content", "needles"),
    [
        ("in.xlsx", b"PK", ["in.xlsx", "'.xlsx'"]),
        ("in.csv", b"", ["in.csv", "empty"]),
        ("in.csv", b"text\ngood movie\n\xff\n", ["in.csv line 3", "UTF-8"]),
        ("in.csv", b"text\ngood movie\n,\n", ["in.csv line 3", "fields"]),
        ("in.jsonl", b'{"text": "good"}\nnope\n', ["in.jsonl line 2", "not valid JSON"]),
    ],
    ids=["unknown-format", "empty", "non-utf8", "ragged", "invalid-jsonl"],
)
def test_predict_bad_input_file(tmp_path, trained_run, cli, assert_bad_input, filename, content, needles):
    path = tmp_path / filename
    path.write_bytes(content)
    assert_bad_input(cli("predict", trained_run.path, path), *needles)


def test_predict_empty_stdin(trained_run, cli, assert_bad_input):
    assert_bad_input(cli("predict", trained_run.path, "-", stdin="\n  \n"), "<stdin>", "no texts")


def test_predict_image_folder_with_text_run(trained_run, cli, image_folder, assert_bad_input):
    assert_bad_input(cli("predict", trained_run.path, image_folder), "holds image", "takes text")


def test_predict_file_with_unlabelled_rows_in_a_label_column(tmp_path, trained_run, cli):
    """Prediction inputs need no labels: a file whose label column is blank (to be filled in) still predicts."""
    data = tmp_path / "to-label.csv"
    data.write_text("text,label\nthe movie was good,\nthe food was awful,\n")
    result = cli("predict", trained_run.path, data)
    assert result.rc == 0, result
    assert len(list(csv.DictReader(io.StringIO(result.out)))) == 2


def test_eval_labels_never_seen_in_training(tmp_path, trained_run, cli, write_table, assert_bad_input):
    data = write_table(tmp_path / "eval.csv", [("good movie", "pos"), ("bad movie", "neutral")])
    store = tmp_path / "store.sqlite3"
    assert_bad_input(cli("eval", trained_run.path, data, "--store", store), "eval.csv", "'neutral'", "never seen", "line 3")


def test_eval_data_without_labels(tmp_path, trained_run, cli, assert_bad_input):
    data = tmp_path / "eval.csv"
    data.write_text("text,comment,note\ngood movie,x,y\nbad movie,x,y\n")
    assert_bad_input(cli("eval", trained_run.path, data), "eval.csv", "label")


# -- happy paths -------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_adapt_each_table_format(tmp_path, cli, tiny_bert, write_table, sentiment_rows, suffix):
    data = write_table(tmp_path / f"train{suffix}", sentiment_rows(40))
    out, store = tmp_path / "out", tmp_path / "store.sqlite3"
    result = cli("adapt", data, "--backbone", tiny_bert, "--out", out, "--store", store)
    assert result.rc == 0, result
    runs = list(out.iterdir())
    assert len(runs) == 1
    assert {p.name for p in runs[0].iterdir()} == RUN_FILES
    assert f"saved to {runs[0]}" in result.out
    rows = Store(store).runs()
    assert [r["id"] for r in rows] == [runs[0].name]
    assert rows[0]["path"] == str(runs[0].resolve())
    assert "Traceback" not in result.err


def test_adapt_same_data_in_every_format_has_one_fingerprint(tmp_path, cli, tiny_bert, write_table, sentiment_rows):
    fingerprints = set()
    for suffix in (".csv", ".tsv", ".jsonl", ".parquet"):
        data = write_table(tmp_path / f"train{suffix}", sentiment_rows(40))
        result = cli("adapt", data, "--backbone", tiny_bert, "--out", tmp_path / "out", "--store", tmp_path / "s.sqlite3", "--json")
        assert result.rc == 0, result
        fingerprints.add(result.json()["manifest"]["data"]["train"]["fingerprint"])
    assert len(fingerprints) == 1


def test_adapt_with_explicit_format(tmp_path, cli, tiny_bert, write_table, sentiment_rows):
    data = write_table(tmp_path / "train.csv", sentiment_rows(40))
    renamed = data.rename(tmp_path / "train.data")
    result = cli("adapt", renamed, "--format", "csv", "--backbone", tiny_bert, "--out", tmp_path / "out", "--store", tmp_path / "s.sqlite3")
    assert result.rc == 0, result


@pytest.mark.parametrize(
    "columns",
    [("sentence", "label"), ("label", "content"), ("review", "sentiment"), ("utterance", "intent")],
)
def test_adapt_infers_columns(tmp_path, cli, tiny_bert, write_table, sentiment_rows, columns):
    text_col = next(c for c in columns if c not in ("label", "sentiment", "intent"))
    label_col = next(c for c in columns if c != text_col)
    rows = [(t, y) if columns[0] == text_col else (y, t) for t, y in sentiment_rows(40)]
    data = write_table(tmp_path / "train.csv", rows, columns)
    result = cli("adapt", data, "--backbone", tiny_bert, "--out", tmp_path / "out", "--store", tmp_path / "s.sqlite3", "--json")
    assert result.rc == 0, result
    manifest = result.json()["manifest"]
    assert manifest["data"]["train"]["columns"] == {"text": text_col, "label": label_col}
    assert manifest["classes"] == ["neg", "pos"]


def test_adapt_with_named_columns(tmp_path, cli, tiny_bert, write_table, sentiment_rows):
    rows = [(str(i), t, y, "x") for i, (t, y) in enumerate(sentiment_rows(40))]
    data = write_table(tmp_path / "train.csv", rows, ("id", "msg", "verdict", "note"))
    result = cli(
        "adapt", data, "--text-col", "msg", "--label-col", "verdict",
        "--backbone", tiny_bert, "--out", tmp_path / "out", "--store", tmp_path / "s.sqlite3", "--json",
    )
    assert result.rc == 0, result
    assert result.json()["manifest"]["data"]["train"]["columns"] == {"text": "msg", "label": "verdict"}


def test_adapt_json_output(tmp_path, cli, tiny_bert, train_csv):
    result = cli("adapt", train_csv, "--backbone", tiny_bert, "--out", tmp_path / "out", "--store", tmp_path / "s.sqlite3", "--json")
    assert result.rc == 0, result
    body = result.json()
    assert set(body) >= {"run", "path", "metrics", "manifest"}
    assert body["manifest"]["id"] == body["run"]
    assert 0.0 <= body["metrics"]["accuracy"] <= 1.0


def test_adapt_with_separate_test_file(tmp_path, cli, tiny_bert, write_table, sentiment_rows):
    train = write_table(tmp_path / "train.csv", sentiment_rows(40, seed=0))
    test = write_table(tmp_path / "test.csv", sentiment_rows(10, seed=1))
    result = cli("adapt", train, "--test", test, "--backbone", tiny_bert, "--out", tmp_path / "out", "--store", tmp_path / "s.sqlite3", "--json")
    assert result.rc == 0, result
    data = result.json()["manifest"]["data"]
    assert data["test"]["source"] == str(test)
    assert data["test"]["examples"] == 10
    assert data["split"]["train"] + data["split"]["val"] == 40


def test_adapt_test_file_with_other_inferable_column_names(tmp_path, cli, tiny_bert, write_table, sentiment_rows):
    """Columns are inferred in the --test file too; it need not repeat the training file's names."""
    train = write_table(tmp_path / "train.csv", sentiment_rows(40, seed=0), ("sentence", "label"))
    test = write_table(tmp_path / "test.csv", sentiment_rows(10, seed=1), ("text", "label"))
    result = cli("adapt", train, "--test", test, "--backbone", tiny_bert, "--out", tmp_path / "out", "--store", tmp_path / "s.sqlite3")
    assert result.rc == 0, result


def _adapt(cli, tmp_path, tiny_bert, data, *extra):
    result = cli("adapt", data, "--backbone", tiny_bert, "--out", tmp_path / "out", "--store", tmp_path / "store.sqlite3", "--json", *extra)
    assert result.rc == 0, result
    return result.json()


def test_runs_lists_and_shows(tmp_path, cli, tiny_bert, train_csv):
    store = tmp_path / "store.sqlite3"
    empty = cli("runs", "--store", store)
    assert empty.rc == 0 and "no runs yet" in empty.out
    assert cli("runs", "--store", store, "--json").json() == []

    made = _adapt(cli, tmp_path, tiny_bert, train_csv)
    run_id = made["run"]

    listing = cli("runs", "--store", store)
    assert listing.rc == 0 and run_id in listing.out
    rows = cli("runs", "--store", store, "--json").json()
    assert [r["id"] for r in rows] == [run_id]
    assert rows[0]["method"] == "linear-probe"
    assert rows[0]["metrics"]["accuracy"] == made["metrics"]["accuracy"]

    shown = cli("runs", run_id[:22], "--store", store, "--json")
    assert shown.rc == 0, shown
    body = shown.json()
    assert body["manifest"]["id"] == run_id
    assert body["evals"] == []
    text = cli("runs", run_id[:22], "--store", store)
    assert text.rc == 0 and run_id in text.out and "linear-probe" in text.out

    by_path = cli("runs", made["path"], "--store", store, "--json")
    assert by_path.json()["manifest"]["id"] == run_id


def test_predict_from_stdin_prints_csv(trained_run, cli):
    texts = ["the movie was good", "the food was awful", "", "i love this film"]
    result = cli("predict", trained_run.path, "-", stdin="\n".join(texts) + "\n")
    assert result.rc == 0, result
    rows = list(csv.DictReader(io.StringIO(result.out)))
    assert [r["input"] for r in rows] == [t for t in texts if t]
    assert list(rows[0]) == ["input", "label", "p[neg]", "p[pos]"]
    for r in rows:
        assert r["label"] in ("neg", "pos")
        assert float(r["p[neg]"]) + float(r["p[pos]"]) == pytest.approx(1.0, abs=1e-5)
        assert r["label"] == max(("neg", "pos"), key=lambda c: float(r[f"p[{c}]"]))


def test_predict_json(trained_run, cli):
    result = cli("predict", trained_run.path, "-", "--json", stdin="the movie was good\nthe food was bad\n")
    assert result.rc == 0, result
    records = result.json()
    assert [r["input"] for r in records] == ["the movie was good", "the food was bad"]
    for r in records:
        assert set(r["probabilities"]) == {"neg", "pos"}
        assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert r["label"] in r["probabilities"]


def test_predict_file_to_output(tmp_path, trained_run, cli, write_table):
    data = write_table(tmp_path / "new.jsonl", [("the movie was good", "x"), ("my card was bad", "y")], ("text", "id"))
    out = tmp_path / "preds.csv"
    result = cli("predict", trained_run.path, data, "--output", out)
    assert result.rc == 0, result
    assert "wrote 2 predictions" in result.err
    rows = list(csv.DictReader(out.open()))
    assert [r["input"] for r in rows] == ["the movie was good", "my card was bad"]


def test_predict_by_run_id_prefix(tmp_path, cli, tiny_bert, train_csv):
    store = tmp_path / "store.sqlite3"
    made = _adapt(cli, tmp_path, tiny_bert, train_csv)
    result = cli("predict", made["run"][:24], "-", "--store", store, stdin="good movie\n")
    assert result.rc == 0, result
    assert len(list(csv.DictReader(io.StringIO(result.out)))) == 1


def test_eval_records_in_store(tmp_path, cli, tiny_bert, train_csv):
    store = tmp_path / "store.sqlite3"
    made = _adapt(cli, tmp_path, tiny_bert, train_csv)
    result = cli("eval", made["path"], train_csv, "--store", store, "--json", "--min-accuracy", "0")
    assert result.rc == 0, result
    body = result.json()
    assert body["passed"] is True
    assert body["metrics"]["n"] == 40
    assert set(body["metrics"]["per_class"]) == {"neg", "pos"}
    evals = Store(store).evals(made["run"])
    assert len(evals) == 1
    assert evals[0]["metrics"]["accuracy"] == body["metrics"]["accuracy"]
    assert evals[0]["data_source"] == str(train_csv)
    shown = cli("runs", made["run"], "--store", store)
    assert "eval " in shown.out


def test_eval_min_accuracy_gate_fails_with_exit_1(tmp_path, trained_run, cli):
    result = cli("eval", trained_run.path, trained_run.data, "--min-accuracy", "0.999", "--store", tmp_path / "s.sqlite3")
    assert result.rc == 1, result
    assert "FAILED" in result.out
    assert len(result.err_lines) == 1
    assert result.err_lines[0].startswith("error: accuracy")
    assert "0.999" in result.err_lines[0]


def test_eval_text_output(tmp_path, trained_run, cli):
    result = cli("eval", trained_run.path, trained_run.data, "--store", tmp_path / "s.sqlite3")
    assert result.rc == 0, result
    assert "accuracy" in result.out and "macro-F1" in result.out


def test_eval_prints_bootstrap_intervals(tmp_path, trained_run, cli):
    import re

    import numpy as np

    import headstart as hs
    from headstart.evaluate.bootstrap import MacroF1, accuracy, bootstrap_ci

    args = ("eval", trained_run.path, trained_run.data, "--store", tmp_path / "s.sqlite3", "--resamples", "300")
    body = cli(*args, "--json").json()["metrics"]
    run = hs.load(trained_run.path, store=trained_run.store)
    preds = run.predict([text for text, _ in trained_run.rows]).indices
    y = np.array([run.classes.index(label) for _, label in trained_run.rows])
    for key, metric in (("accuracy", accuracy), ("macro_f1", MacroF1(len(run.classes)))):
        est, low, high = bootstrap_ci(y, preds, metric, n_resamples=300, seed=0)
        assert body[key] == pytest.approx(est)
        assert body[f"{key}_ci"] == pytest.approx([low, high])
        assert 0 <= low <= est <= high <= 1
    assert body["ci_level"] == 0.95 and body["ci_resamples"] == 300
    text = cli(*args).out
    for key, label in (("accuracy", "accuracy"), ("macro_f1", "macro-F1")):
        low, high = body[f"{key}_ci"]
        assert re.search(rf"{label} {body[key]:.4f} \[{low:.4f}, {high:.4f}\]", text), text
    assert "95% bootstrap intervals, 300 resamples" in text


def test_models_lists_catalog(cli):
    result = cli("models", "--json")
    assert result.rc == 0, result
    names = {m["name"]: m for m in result.json()}
    assert {"minilm-l6", "efficientnet-lite0"} <= set(names)
    assert names["minilm-l6"]["modality"] == "text"
    assert names["efficientnet-lite0"]["modality"] == "image"
    text = cli("models")
    assert "minilm-l6" in text.out and "efficientnet-lite0" in text.out


@pytest.mark.parametrize("command", [[], ["adapt"], ["predict"], ["eval"], ["runs"], ["models"]])
def test_help(cli, command):
    result = cli(*command, "--help")
    assert result.rc == 0
    assert "usage: headstart" in result.out


def test_version(cli):
    from headstart import __version__

    result = cli("--version")
    assert result.rc == 0
    assert __version__ in result.out


def test_errors_stay_one_line_with_progress_output_on(tmp_path, monkeypatch, cli, tiny_bert, train_csv, write_table, trained_run, assert_bad_input):
    """Users see progress by default; an error must still be the only line on stderr."""
    monkeypatch.setenv("HEADSTART_PROGRESS", "1")
    out, store = tmp_path / "out", tmp_path / "store.sqlite3"
    test = write_table(tmp_path / "test.csv", [("good movie", "pos"), ("so so", "meh")])
    assert_bad_input(cli("adapt", train_csv, "--test", test, "--backbone", tiny_bert, "--out", out, "--store", store), "'meh'", out_dir=out, store=store)
    assert_bad_input(cli("adapt", train_csv, "--backbone", "minilm-l7", "--out", out, "--store", store), "'minilm-l6'", out_dir=out, store=store)
    run = trained_run.copy_to(tmp_path / "runs")
    (run / "metrics.json").unlink()
    assert_bad_input(cli("predict", run, "-", stdin="good\n"), "metrics.json")
