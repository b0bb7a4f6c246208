"""CT2 Whisper -> HF converter on tiny random Whisper models written as CT2 files by the test."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from headstart.backbones import ct2_whisper
from headstart.backbones.ct2_whisper import convert_ct2_whisper, converted_folder, ct2_to_hf, read_ct2, write_ct2
from headstart.errors import BadInput

LETTERS = list("abcdefghijklmnopqrstuvwxyz") + ["\u0120"]  # byte-level: "Ġ" is the space
SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|de|>", "<|translate|>", "<|transcribe|>",
            "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]
TIMESTAMPS = [f"<|{i * 0.02:.2f}|>" for i in range(6)]
VOCAB = LETTERS + SPECIALS + TIMESTAMPS
IDS = {t: i for i, t in enumerate(VOCAB)}


def tiny_hf(seed: int = 0):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(seed)
    config = WhisperConfig(
        vocab_size=len(VOCAB), num_mel_bins=8, d_model=16, encoder_layers=1, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=4, encoder_ffn_dim=32, decoder_ffn_dim=24,
        max_source_positions=16, max_target_positions=12, pad_token_id=IDS["<|endoftext|>"],
        bos_token_id=IDS["<|endoftext|>"], eos_token_id=IDS["<|endoftext|>"],
        decoder_start_token_id=IDS["<|startoftranscript|>"],
    )
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():  # random (not zero) biases and norms, so a mix-up would show
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name:
                p.normal_(0, 0.5)
    return model


def to_ct2(model, dtype=np.float32) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The inverse mapping: HF names -> CT2 names, with CT2's fused q/k/v and k/v (zero k bias)."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    cfg = model.config
    out: dict[str, np.ndarray] = {}

    def lin(ct2, hf, bias=True):
        out[ct2 + "/weight"] = sd[hf + ".weight"]
        if bias:
            out[ct2 + "/bias"] = sd[hf + ".bias"]

    def norm(ct2, hf):
        out[ct2 + "/gamma"], out[ct2 + "/beta"] = sd[hf + ".weight"], sd[hf + ".bias"]

    def fused(ct2, hf, parts):
        out[ct2 + "/weight"] = np.concatenate([sd[f"{hf}.{p}_proj.weight"] for p in parts])
        out[ct2 + "/bias"] = np.concatenate(
            [np.zeros(cfg.d_model, np.float32) if p == "k" else sd[f"{hf}.{p}_proj.bias"] for p in parts]
        )

    def layer(ct2, hf, cross):
        norm(f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
        fused(f"{ct2}/self_attention/linear_0", f"{hf}.self_attn", "qkv")
        lin(f"{ct2}/self_attention/linear_1", f"{hf}.self_attn.out_proj")
        if cross:
            norm(f"{ct2}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm")
            lin(f"{ct2}/attention/linear_0", f"{hf}.encoder_attn.q_proj")
            fused(f"{ct2}/attention/linear_1", f"{hf}.encoder_attn", "kv")
            lin(f"{ct2}/attention/linear_2", f"{hf}.encoder_attn.out_proj")
        norm(f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm")
        lin(f"{ct2}/ffn/linear_0", f"{hf}.fc1")
        lin(f"{ct2}/ffn/linear_1", f"{hf}.fc2")

    out["decoder/activation"] = np.array(3, np.int8)
    out["decoder/embeddings/weight"] = sd["model.decoder.embed_tokens.weight"]
    for i in range(cfg.decoder_layers):
        layer(f"decoder/layer_{i}", f"model.decoder.layers.{i}", True)
    norm("decoder/layer_norm", "model.decoder.layer_norm")
    out["decoder/num_heads"] = np.array(cfg.decoder_attention_heads, np.int16)
    out["decoder/position_encodings/encodings"] = sd["model.decoder.embed_positions.weight"]
    out["decoder/pre_norm"] = np.array(1, np.int8)
    lin("encoder/conv1", "model.encoder.conv1")
    lin("encoder/conv2", "model.encoder.conv2")
    for i in range(cfg.encoder_layers):
        layer(f"encoder/layer_{i}", f"model.encoder.layers.{i}", False)
    norm("encoder/layer_norm", "model.encoder.layer_norm")
    out["encoder/num_heads"] = np.array(cfg.encoder_attention_heads, np.int16)
    out["encoder/position_encodings/encodings"] = sd["model.encoder.embed_positions.weight"]
    out = {k: (v.astype(dtype) if v.dtype == np.float32 else v) for k, v in out.items()}
    return out, {"decoder/projection/weight": "decoder/embeddings/weight"}


def tokenizer_json() -> dict:
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    added = [{"id": IDS[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for t in SPECIALS]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": byte_level, "post_processor": None, "decoder": dict(byte_level, add_prefix_space=True),
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False,
                  "vocab": {t: IDS[t] for t in LETTERS}, "merges": []},
    }


def ct2_folder(path: Path, model, dtype=np.float32) -> Path:
    path.mkdir(parents=True)
    variables, aliases = to_ct2(model, dtype)
    write_ct2(path / "model.bin", variables, aliases)
    config = {"alignment_heads": [[1, 0], [1, 3]], "lang_ids": [IDS["<|en|>"], IDS["<|de|>"]],
              "suppress_ids": [1, 2], "suppress_ids_begin": [IDS["\u0120"], IDS["<|endoftext|>"]]}
    (path / "config.json").write_text(json.dumps(config))
    (path / "tokenizer.json").write_text(json.dumps(tokenizer_json()))
    (path / "vocabulary.txt").write_text("\n".join(VOCAB))
    return path


@pytest.fixture(scope="module")
def tiny():
    return tiny_hf()


def test_read_write_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    variables = {
        "a/weight": rng.standard_normal((3, 4)).astype(np.float16),
        "b": rng.standard_normal(5).astype(np.float32),
        "c/num_heads": np.array(6, np.int16),
        "d": np.arange(-3, 3, dtype=np.int8).reshape(2, 3),
        "e": np.arange(4, dtype=np.int32),
    }
    aliases = {"x/weight": "a/weight"}
    write_ct2(tmp_path / "model.bin", variables, aliases)
    got, got_aliases = read_ct2(tmp_path / "model.bin")
    assert got_aliases == aliases and list(got) == list(variables)
    for name, value in variables.items():
        assert got[name].dtype == value.dtype and got[name].shape == value.shape
        np.testing.assert_array_equal(got[name], value)


def test_bad_files_name_the_file(tmp_path, tiny):
    src = ct2_folder(tmp_path / "ct2", tiny)
    data = (src / "model.bin").read_bytes()
    cut = tmp_path / "cut.bin"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInput, match=r"cut\.bin.*truncated"):
        read_ct2(cut)
    (tmp_path / "tiny.bin").write_bytes(data[:3])
    with pytest.raises(BadInput, match=r"tiny\.bin.*truncated"):
        read_ct2(tmp_path / "tiny.bin")
    future = tmp_path / "v7.bin"
    future.write_bytes(struct.pack("<I", 7) + data[4:])
    with pytest.raises(BadInput, match=r"v7\.bin.*version 7"):
        read_ct2(future)
    (src / "model.bin").write_bytes(struct.pack("<I", 2) + data[4:])
    with pytest.raises(BadInput, match=r"model\.bin.*version 2"):
        convert_ct2_whisper(src, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))


@pytest.mark.parametrize("dtype,multilingual", [(np.float32, False), (np.float16, True)], ids=["fp32-en", "fp16-multi"])
def test_convert_matches_original(tmp_path, tiny, dtype, multilingual):
    from transformers import AutoTokenizer, GenerationConfig, WhisperForConditionalGeneration

    src = ct2_folder(tmp_path / "ct2", tiny, dtype)
    config, state = ct2_to_hf(src)
    assert (config.d_model, config.encoder_layers, config.decoder_layers) == (16, 1, 2)
    assert (config.encoder_attention_heads, config.decoder_attention_heads) == (2, 4)
    assert (config.num_mel_bins, config.max_source_positions, config.max_target_positions) == (8, 16, 12)
    assert (config.encoder_ffn_dim, config.decoder_ffn_dim, config.vocab_size) == (32, 24, len(VOCAB))
    assert all(v.dtype == torch.float32 for v in state.values())

    out = convert_ct2_whisper(src, tmp_path / "hf", multilingual=multilingual)
    model = WhisperForConditionalGeneration.from_pretrained(out).eval()
    original = {k: v.float() for k, v in tiny.state_dict().items()}
    got = model.state_dict()
    assert set(got) == set(original)
    for name, value in original.items():
        expect = value if dtype == np.float32 else value.half().float()  # fp16 rounding, nothing else
        assert torch.equal(got[name], expect), name

    features = torch.randn(2, 8, 32, generator=torch.Generator().manual_seed(1))
    decoder_ids = torch.tensor([[IDS["<|startoftranscript|>"], 3, 7, 1], [IDS["<|startoftranscript|>"], 9, 0, 2]])
    with torch.no_grad():
        want = tiny(input_features=features, decoder_input_ids=decoder_ids).logits
        have = model(input_features=features, decoder_input_ids=decoder_ids).logits
    torch.testing.assert_close(have, want, rtol=0, atol=1e-5 if dtype == np.float32 else 5e-2)

    gen = GenerationConfig.from_pretrained(out)
    assert gen.decoder_start_token_id == IDS["<|startoftranscript|>"]
    assert gen.no_timestamps_token_id == IDS["<|notimestamps|>"]
    assert gen.eos_token_id == gen.pad_token_id == IDS["<|endoftext|>"]
    assert gen.is_multilingual is multilingual
    assert gen.suppress_tokens == [1, 2] and gen.begin_suppress_tokens == [IDS["\u0120"], IDS["<|endoftext|>"]]
    assert gen.alignment_heads == [[1, 0], [1, 3]]
    if multilingual:
        assert gen.lang_to_id == {"<|en|>": IDS["<|en|>"], "<|de|>": IDS["<|de|>"]}
        assert gen.task_to_id == {"transcribe": IDS["<|transcribe|>"], "translate": IDS["<|translate|>"]}
    else:
        assert not hasattr(gen, "lang_to_id")

    tok = AutoTokenizer.from_pretrained(out)
    assert tok.eos_token == tok.pad_token == "<|endoftext|>"
    assert len(tok) == len(VOCAB)  # timestamps added from vocabulary.txt
    assert tok.convert_tokens_to_ids("<|notimestamps|>") == IDS["<|notimestamps|>"]
    assert tok.all_special_ids[-1] == IDS["<|notimestamps|>"]  # HF's timestamp_begin = this + 1
    ids = tok("ab cd").input_ids
    assert ids[0] == IDS["<|startoftranscript|>"] and ids[-1] == IDS["<|endoftext|>"]
    assert tok.decode(ids, skip_special_tokens=True) == "ab cd"

    # greedy generation runs and stops within the position budget
    generated = model.generate(input_features=features, max_new_tokens=4)
    assert generated.shape[0] == 2 and generated.shape[1] <= config.max_target_positions


def test_processor_loads(tmp_path, tiny):
    from transformers import WhisperProcessor

    out = convert_ct2_whisper(ct2_folder(tmp_path / "ct2", tiny), tmp_path / "hf")
    processor = WhisperProcessor.from_pretrained(out)
    assert processor.feature_extractor.feature_size == 8
    assert processor.tokenizer.convert_tokens_to_ids("<|startoftranscript|>") == IDS["<|startoftranscript|>"]


def test_nonzero_k_bias_is_dropped_exactly(tmp_path, tiny):
    """CT2 could hold a k bias HF cannot; it shifts each query's scores uniformly, so softmax ignores it."""
    src = ct2_folder(tmp_path / "ct2", tiny)
    variables, aliases = read_ct2(src / "model.bin")
    variables = {k: v.copy() for k, v in variables.items()}
    d = 16
    variables["decoder/layer_0/self_attention/linear_0/bias"][d:2 * d] = 3.0
    variables["decoder/layer_1/attention/linear_1/bias"][:d] = -2.0
    write_ct2(src / "model.bin", variables, aliases)
    _, state = ct2_to_hf(src)
    model = type(tiny)(tiny.config).eval()
    model.load_state_dict(state, strict=False)
    model.tie_weights()
    features = torch.randn(1, 8, 32, generator=torch.Generator().manual_seed(2))
    ids = torch.tensor([[IDS["<|startoftranscript|>"], 4, 5]])
    with torch.no_grad():
        torch.testing.assert_close(model(input_features=features, decoder_input_ids=ids).logits,
                                   tiny(input_features=features, decoder_input_ids=ids).logits, rtol=0, atol=1e-5)


def test_cache_converts_once_and_redoes_half_folders(tmp_path, tiny, monkeypatch):
    from headstart._util import cache_dir

    src = ct2_folder(tmp_path / "ct2", tiny)
    calls = []
    real = ct2_whisper._write_folder
    monkeypatch.setattr(ct2_whisper, "_write_folder", lambda *a: (calls.append(a), real(*a)))
    sha = "ab" * 32
    first = converted_folder(src, sha)
    assert first == cache_dir() / "whisper-hf" / sha and (first / ".complete").is_file()
    assert converted_folder(src, sha) == first and len(calls) == 1  # reused

    (first / ".complete").unlink()  # an interrupted conversion: files without the marker
    (first / "model.safetensors").write_bytes(b"half")
    leftover = first.parent / f".{sha}.tmp-999-dead"
    leftover.mkdir()
    assert converted_folder(src, sha) == first and len(calls) == 2
    assert (first / ".complete").is_file() and (first / "model.safetensors").stat().st_size > 100
    assert [p.name for p in first.parent.glob(f".{sha}.tmp-*")] == [leftover.name]  # young: maybe still running

    os.utime(leftover, (1, 1))  # a temp folder from a run killed long ago is cleaned up
    (first / ".complete").unlink()
    converted_folder(src, sha)
    assert len(calls) == 3 and not leftover.exists()
    with pytest.raises(BadInput, match="SHA-256"):
        converted_folder(src, "not-a-hash")
