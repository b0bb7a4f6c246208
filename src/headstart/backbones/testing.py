"""Tiny random backbones built from a config, for fast offline tests (no downloads).

``tiny_text_model(folder)`` writes a 2-layer BERT with a word-level tokenizer; ``tiny_image_model``
writes a tiny ViT with a preprocessor config. Both are ordinary Hugging Face folders, so they go
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
