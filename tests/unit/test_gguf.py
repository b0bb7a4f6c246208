"""GGUF -> HF causal-LM folders, on a tiny random Llama written as a GGUF file by the test the way
llama.cpp's ``convert_hf_to_gguf.py`` writes one (tensor names, q/k row permutation, byte-level BPE
tokenizer metadata, chat template)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from headstart._util import cache_dir, sha256_file
from headstart.backbones import gguf as hs_gguf
from headstart.backbones.gguf import dequantised_folder, gguf_architecture, gguf_metadata, is_gguf
from headstart.errors import BackboneUnavailable, BadInput

gguf = pytest.importorskip("gguf")

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France, and Berlin is the capital of Germany.",
    "A tiny model answers tiny questions with tiny words.",
    "What is the capital of France? It is Paris.",
]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_tokenizer():
    from tokenizers import ByteLevelBPETokenizer

    tok = ByteLevelBPETokenizer(add_prefix_space=False)
    tok.train_from_iterator(SENTENCES * 4, vocab_size=320, min_frequency=1, special_tokens=SPECIALS,
                            show_progress=False)
    return tok


def tiny_llama(vocab_size: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 100000.0}, tie_word_embeddings=True,
        bos_token_id=0, eos_token_id=2, pad_token_id=0,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # random (not one) norms, so a mix-up would show
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(1.0, 0.3)
    return model


def _permute(w: np.ndarray, n_head: int, n_head_kv: int) -> np.ndarray:
    """llama.cpp's ``LlamaModel.permute`` (convert_hf_to_gguf.py): rotary halves -> interleaved rows."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(path: Path, model, tok, *, arch: str = "llama", qtype=None, chat_template: str | None = CHAT_TEMPLATE):
    """Write ``model`` + ``tok`` as llama.cpp would (F32 tensors, or 2-D weights in ``qtype``)."""
    cfg = model.config
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("tiny llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type(gguf.LlamaFileType.ALL_F32 if qtype is None else gguf.LlamaFileType.MOSTLY_Q8_0)

    vocab = tok.get_vocab()
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    assert [vocab[t] for t in tokens] == list(range(len(tokens)))
    merges = json.loads(tok._tokenizer.to_str())["model"]["merges"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if t in SPECIALS else gguf.TokenType.NORMAL for t in tokens])
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    w.add_bos_token_id(vocab["<|endoftext|>"])
    w.add_eos_token_id(vocab["<|im_end|>"])
    w.add_add_bos_token(False)
    if chat_template is not None:
        w.add_chat_template(chat_template)

    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    parts = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for i in range(cfg.num_hidden_layers):
        for hf, gg in parts.items():
            names[f"model.layers.{i}.{hf}.weight"] = f"blk.{i}.{gg}.weight"
    for hf_name, array in sd.items():
        if hf_name == "lm_head.weight":
            continue  # tied: llama.cpp writes no output.weight
        name = names[hf_name]
        if ".attn_q." in name:
            array = _permute(array, cfg.num_attention_heads, cfg.num_attention_heads)
        elif ".attn_k." in name:
            array = _permute(array, cfg.num_attention_heads, cfg.num_key_value_heads)
        if qtype is not None and array.ndim == 2:
            q = gguf.quants.quantize(array, qtype)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=qtype)
        else:
            w.add_tensor(name, np.ascontiguousarray(array))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """(model, tokenizer, F32 .gguf path): written once for the module."""
    tok = tiny_tokenizer()
    model = tiny_llama(tok.get_vocab_size())
    path = write_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.F32.gguf", model, tok)
    return model, tok, path


def _logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


def _load(folder: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def test_is_gguf_and_metadata(source, tmp_path):
    _, _, path = source
    assert is_gguf(path)
    assert not is_gguf(tmp_path / "missing.gguf")
    (tmp_path / "model.bin").write_bytes(b"x")
    assert not is_gguf(tmp_path / "model.bin")
    assert gguf_architecture(path) == "llama"
    meta = gguf_metadata(path)
    assert meta["name"] == "tiny llama" and meta["chat_template"] == CHAT_TEMPLATE
    assert meta["tensor_types"] == {"F32": 2 * 9 + 2}
    assert "llama" in hs_gguf.supported_architectures() and "general" not in hs_gguf.supported_architectures()


def test_f32_round_trip_is_exact_and_cached(source):
    model, tok, path = source
    sha = sha256_file(path)
    out = dequantised_folder(path, sha)
    assert out == cache_dir() / "causal-lm" / sha
    for name in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
                 "tokenizer_config.json", ".complete"):
        assert (out / name).is_file(), name
    assert json.loads((out / ".complete").read_text())["converter_version"] == hs_gguf.CONVERTER_VERSION
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"

    loaded, loaded_tok = _load(out)
    sentence = SENTENCES[1]
    ids = tok.encode(sentence).ids
    assert loaded_tok(sentence).input_ids == ids
    assert loaded_tok.decode(ids) == sentence
    torch.testing.assert_close(_logits(loaded, ids), _logits(model, ids), atol=1e-5, rtol=0)
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
    assert loaded.config.tie_word_embeddings
    assert loaded_tok.chat_template == CHAT_TEMPLATE
    text = loaded_tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                          tokenize=False)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert loaded_tok.convert_tokens_to_ids("<|im_end|>") == tok.token_to_id("<|im_end|>")

    marker, weights = (out / ".complete").stat().st_mtime_ns, (out / "model.safetensors").stat().st_mtime_ns
    assert dequantised_folder(path, sha) == out  # second call: reused, not rebuilt
    assert (out / ".complete").stat().st_mtime_ns == marker
    assert (out / "model.safetensors").stat().st_mtime_ns == weights
    assert not list(out.parent.glob(".*.tmp-*"))


def test_incomplete_or_outdated_folder_is_rebuilt(source):
    model, tok, path = source
    sha = sha256_file(path)
    out = cache_dir() / "causal-lm" / sha
    out.mkdir(parents=True)
    (out / "model.safetensors").write_bytes(b"half written")  # an interrupted build: no .complete
    assert dequantised_folder(path, sha) == out
    ids = tok.encode(SENTENCES[0]).ids
    torch.testing.assert_close(_logits(_load(out)[0], ids), _logits(model, ids), atol=1e-5, rtol=0)

    marker = json.loads((out / ".complete").read_text())
    (out / ".complete").write_text(json.dumps(dict(marker, converter_version=0)))  # another converter
    (out / "stale.txt").write_text("from the old converter")
    dequantised_folder(path, sha)
    assert not (out / "stale.txt").exists()
    assert json.loads((out / ".complete").read_text())["converter_version"] == hs_gguf.CONVERTER_VERSION


def test_q8_0_round_trip_within_quantisation_error(source, tmp_path):
    model, tok, _ = source
    path = write_gguf(tmp_path / "tiny-llama.Q8_0.gguf", model, tok, qtype=gguf.GGMLQuantizationType.Q8_0)
    assert gguf_metadata(path)["tensor_types"]["Q8_0"] == 2 * 7 + 1
    out = dequantised_folder(path, sha256_file(path))
    loaded, _ = _load(out)
    ids = tok.encode(SENTENCES[2]).ids
    ref, got = _logits(model, ids), _logits(loaded, ids)
    err = (got - ref).abs().max().item()
    assert 0 < err < 0.02 * ref.abs().max().item()  # Q8_0: 8 bits per weight, one scale per 32
    assert (got.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.9
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()


def test_no_chat_template_is_fine(source, tmp_path):
    model, tok, _ = source
    path = write_gguf(tmp_path / "no-template.gguf", model, tok, chat_template=None)
    _, loaded_tok = _load(dequantised_folder(path, sha256_file(path)))
    assert loaded_tok.chat_template is None


@pytest.mark.parametrize("keep", [0.5, 0.999, 40])
def test_truncated_file_is_bad_input_naming_it(source, tmp_path, keep):
    _, _, path = source
    data = path.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: int(len(data) * keep) if keep < 1 else keep])
    with pytest.raises(BadInput, match=r"cut\.gguf.*(truncated|corrupt)") as info:
        dequantised_folder(cut, sha256_file(cut))
    assert "\n" not in str(info.value)
    assert not (cache_dir() / "causal-lm").exists() or not list((cache_dir() / "causal-lm").iterdir())


def test_not_a_gguf_is_bad_input(tmp_path):
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"this is not a GGUF file at all, only text" * 4)
    with pytest.raises(BadInput, match=r"bogus\.gguf.*corrupt"):
        dequantised_folder(bogus, sha256_file(bogus))
    with pytest.raises(BadInput, match="not a SHA-256"):
        dequantised_folder(bogus, "abc")


def test_unsupported_architecture_is_bad_input(source, tmp_path):
    model, tok, _ = source
    path = write_gguf(tmp_path / "odd.gguf", model, tok, arch="notallama")
    with pytest.raises(BadInput, match=r"odd\.gguf.*'notallama'.*llama") as info:
        dequantised_folder(path, sha256_file(path))
    assert "\n" not in str(info.value) and "gemma3" in str(info.value)


def test_missing_gguf_package_is_backbone_unavailable(source, monkeypatch):
    _, _, path = source
    monkeypatch.setitem(sys.modules, "gguf", None)  # import gguf -> ImportError
    with pytest.raises(BackboneUnavailable, match=r"pip install gguf"):
        dequantised_folder(path, sha256_file(path))
