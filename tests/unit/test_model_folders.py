"""A local model folder's family comes from its config.json (catalog.FOLDER_RULES), the file
heuristic only when no row knows it; architectures headstart does not support are refused in one
line naming them and what is supported. Folders are tiny random models saved in the test."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from headstart.backbones import FAMILIES
from headstart.catalog import FOLDER_RULES, SUPPORTED_FOLDERS, check_model_folder, resolve
from headstart.errors import BadInput

TINY = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}


def _save(folder: Path, model_cls, config) -> Path:
    import torch

    torch.manual_seed(0)
    model_cls(config).save_pretrained(folder)
    return folder


def _bert(folder: Path, model_cls=None) -> Path:
    from transformers import BertConfig, BertModel

    return _save(folder, model_cls or BertModel, BertConfig(vocab_size=64, max_position_embeddings=32, **TINY))


def _vit(folder: Path) -> Path:
    from transformers import ViTConfig, ViTModel

    _save(folder, ViTModel, ViTConfig(image_size=16, patch_size=8, **TINY))
    return _image_processor(folder, 16)


def _convnext(folder: Path) -> Path:
    from transformers import ConvNextConfig, ConvNextModel

    _save(folder, ConvNextModel, ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2))
    return _image_processor(folder, 32)


def _llama(folder: Path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    return _save(folder, LlamaForCausalLM, LlamaConfig(vocab_size=64, num_key_value_heads=2, max_position_embeddings=32, **TINY))


def _whisper(folder: Path) -> Path:
    from transformers import WhisperConfig, WhisperModel

    config = WhisperConfig(vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                           decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=8,
                           max_source_positions=16, max_target_positions=16, pad_token_id=0,
                           bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    return _save(folder, WhisperModel, config)


def _clip(folder: Path) -> Path:
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(text_config={"vocab_size": 64, "max_position_embeddings": 16, **TINY},
                        vision_config={"image_size": 16, "patch_size": 8, **TINY}, projection_dim=8)
    return _save(folder, CLIPModel, config)


def _image_processor(folder: Path, side: int) -> Path:
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"image_processor_type": "ViTImageProcessor", "size": {"height": side, "width": side},
         "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}))
    return folder


def _config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


@pytest.mark.parametrize("build, arch, family", [(_bert, "BertModel", "hf-text"), (_vit, "ViTModel", "hf-image"),
                                                 (_convnext, "ConvNextModel", "hf-image"),
                                                 (_whisper, "WhisperModel", "whisper"),
                                                 (_llama, "LlamaForCausalLM", "causal-lm")])
def test_family_detected_from_config(tmp_path, build, arch, family):
    folder = build(tmp_path / "m")
    assert _config(folder)["architectures"] == [arch]
    assert check_model_folder(folder) == family
    spec = resolve(str(folder))
    assert spec.family == family
    assert spec.modality == {"hf-image": "image", "whisper": "audio"}.get(family, "text")


def test_whisper_for_conditional_generation_is_a_speech_model_not_a_refused_seq2seq(tmp_path):
    from transformers import WhisperForConditionalGeneration

    folder = _whisper(tmp_path / "w")
    config = _config(folder)
    config["architectures"] = [WhisperForConditionalGeneration.__name__]
    (folder / "config.json").write_text(json.dumps(config))
    assert check_model_folder(folder) == "whisper"
    assert resolve(str(folder)).preprocessing.n_mels == 8  # from config.json's num_mel_bins


def _clip_vision_tower(folder: Path) -> Path:
    """A CLIP folder whose config names only the vision tower (CLIPVisionModel): refused, unlike CLIPModel."""
    folder = _clip(folder)
    config = _config(folder)
    config["architectures"] = ["CLIPVisionModel"]
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("build, arch, what", [
    (_clip_vision_tower, "CLIPVisionModel", "one tower, a head or a variant of an image-text dual encoder"),
])
def test_unsupported_architecture_refused_in_one_line(tmp_path, build, arch, what):
    folder = build(tmp_path / "m")
    assert _config(folder)["architectures"] == [arch]
    with pytest.raises(BadInput) as err:
        resolve(str(folder))
    message = str(err.value)
    assert f"{arch} ({what}) is not supported yet" in message and SUPPORTED_FOLDERS in message
    assert "\n" not in message and "BERT" in message and "ViT" in message


def test_a_supported_body_with_a_generation_head_is_refused(tmp_path):
    from transformers import BertLMHeadModel

    folder = _bert(tmp_path / "m", BertLMHeadModel)
    with pytest.raises(BadInput, match=r"BertLMHeadModel \(a causal language model"):
        check_model_folder(folder)


def test_model_type_alone_decides_when_architectures_is_missing(tmp_path):
    folder = _clip(tmp_path / "c")
    config = _config(folder)
    del config["architectures"]
    (folder / "config.json").write_text(json.dumps(config))
    assert check_model_folder(folder) == "clip"
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "hubert"}))
    with pytest.raises(BadInput, match=r"model_type 'hubert' \(a speech encoder\)"):
        check_model_folder(folder)
    whisper = _whisper(tmp_path / "w")
    config = _config(whisper)
    del config["architectures"]
    (whisper / "config.json").write_text(json.dumps(config))
    assert check_model_folder(whisper) == "whisper"


def test_config_wins_over_the_file_heuristic(tmp_path, tiny_bert):
    """A ViT with a stray tokenizer file is still an image encoder; a BERT with an image processor
    and no tokenizer is still a text encoder (the heuristic alone would say the opposite)."""
    vit = _vit(tmp_path / "vit")
    (vit / "vocab.txt").write_text("[PAD]\n")
    assert resolve(str(vit)).family == "hf-image"
    bert = _image_processor(_bert(tmp_path / "bert"), 16)
    assert resolve(str(bert)).family == "hf-text"


def test_unknown_model_type_falls_back_to_the_files(tmp_path, tiny_bert, tiny_vit):
    for source, family in ((tiny_bert, "hf-text"), (tiny_vit, "hf-image")):
        folder = tmp_path / source.name
        shutil.copytree(source, folder)
        config = _config(folder)
        config.update(model_type="some-new-encoder", architectures=["SomeNewEncoderModel"])
        (folder / "config.json").write_text(json.dumps(config))
        assert check_model_folder(folder) == family


def test_an_image_encoder_without_its_preprocessor_is_refused_in_one_line(tmp_path):
    folder = _vit(tmp_path / "vit")
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(BadInput, match="image encoder without preprocessor_config.json"):
        resolve(str(folder))


def test_every_rule_names_a_loader_or_a_reason_and_matches_its_transformers_class():
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    for rule in FOLDER_RULES:
        assert (rule.family in FAMILIES) if rule.family else rule.why, rule
        re.compile(rule.classes)
        if rule.model_type:  # the base class transformers saves for that model type is matched by the row
            assert re.fullmatch(rule.classes, MODEL_MAPPING_NAMES[rule.model_type]), rule
    types = [r.model_type for r in FOLDER_RULES if r.model_type]
    assert len(types) == len(set(types))
