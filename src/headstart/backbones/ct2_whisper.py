"""CTranslate2 Whisper model folders -> Hugging Face ``WhisperForConditionalGeneration`` folders.

Offline, the Whisper weights headstart can reach are CTranslate2 (CT2) model folders shipped in pip
packages (``model.bin``, CT2's ``config.json``, ``tokenizer.json``, ``vocabulary.txt``). This module
reads them without importing ``ctranslate2`` (not a dependency) and writes an ordinary HF folder.

**The binary format** (``ctranslate2/specs/model_spec.py`` ``ModelSpec._serialize`` and
``src/models/model.cc``, binary version 6; little-endian, no padding)::

    u32 binary_version | str spec_name ("WhisperSpec") | u32 spec_revision | u32 n_variables
    n_variables x ( str name | u8 rank | rank x u32 dim | u8 dtype_id | u32 n_bytes | n_bytes data )
    u32 n_aliases | n_aliases x ( str alias | str target )

where ``str`` is ``u16 length-including-NUL, utf-8 bytes, NUL`` and ``dtype_id`` indexes
(float32, int8, int16, int32, float16, bfloat16). The per-variable dtype id and byte count exist from
binary version 4 on, so versions 4-6 are read; others raise :class:`~headstart.errors.BadInput`.
Scalars (rank 0) carry settings: ``encoder/num_heads``, ``decoder/num_heads`` (int16),
``decoder/pre_norm``, ``decoder/activation``... The alias table maps
``decoder/projection/weight`` -> ``decoder/embeddings/weight`` (a tied output head).

**The name mapping** (``ctranslate2/converters/transformers.py`` ``WhisperLoader``/``BartLoader``,
checked against the packaged tiny.en and base files)::

    encoder/conv{1,2}/{weight,bias}                 model.encoder.conv{1,2}
    {en,de}coder/position_encodings/encodings       model.{en,de}coder.embed_positions.weight
    {en,de}coder/layer_norm/{gamma,beta}            model.{en,de}coder.layer_norm.{weight,bias}
    */layer_i/self_attention/layer_norm             layers.i.self_attn_layer_norm
    */layer_i/self_attention/linear_0  (3d x d)     layers.i.self_attn.{q,k,v}_proj (fused, split in 3)
    */layer_i/self_attention/linear_1               layers.i.self_attn.out_proj
    decoder/layer_i/attention/layer_norm            layers.i.encoder_attn_layer_norm
    decoder/layer_i/attention/linear_0              layers.i.encoder_attn.q_proj
    decoder/layer_i/attention/linear_1 (2d x d)     layers.i.encoder_attn.{k,v}_proj (fused)
    decoder/layer_i/attention/linear_2              layers.i.encoder_attn.out_proj
    */layer_i/ffn/layer_norm                        layers.i.final_layer_norm
    */layer_i/ffn/linear_{0,1}                      layers.i.fc{1,2}
    decoder/embeddings/weight                       model.decoder.embed_tokens.weight (= proj_out)

CT2 stores a zero bias for the fused ``k`` part (HF ``k_proj`` has no bias). Dropping it is exact
even if it were not zero: ``q . (k + b)`` shifts every score of one query by the same amount, which
softmax ignores. LayerNorm ``gamma``/``beta`` are ``weight``/``bias``. Quantized weights
(``int8``/``int16`` with a ``<name>_scale`` variable) are dequantized as ``w / scale``; bfloat16 is
widened to float32 exactly. The HF state dict is float32.

The model config comes from the shapes (d_model, vocab, ffn dims, layer counts, max positions,
``num_mel_bins`` from ``conv1``) and the ``num_heads`` scalars; the special token ids from the
tokenizer's added tokens (en-only: sot 50257, notimestamps 50362; multilingual: +1); suppress
tokens, begin-suppress tokens, language ids and alignment heads from CT2's ``config.json``.
A model is multilingual when its vocabulary has >= 51865 entries (transformers' own rule).

**Measured parity** (CPU, this converter): HF greedy transcripts of the converted models equal
CT2's (float32, greedy, same features and prompt) on 20/20 FSDD clips (tiny.en) and 6/6 (base);
``tests/integration/test_real_whisper.py`` re-checks 8 and 4. The float32 encoder output is within
2.2e-6 (tiny.en) / 3.8e-5 (base) of its largest value of the same weights run in float64
(2.8e-5 / 9.2e-4 absolute; CT2's own float32 encoder is 1.8e-5 off on tiny.en).

:func:`write_ct2` is the inverse of :func:`read_ct2`; the tests use it to write tiny CT2 files.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import BadInput

if TYPE_CHECKING:  # pragma: no cover
    import torch
    import transformers

SUPPORTED_VERSIONS = (4, 5, 6)
"""Binary versions with a dtype id and byte count per variable (the layout read here)."""

CONVERTER_VERSION = 1
"""Bumped when the output of :func:`convert_ct2_whisper` changes; older cached folders are redone."""

_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
"""CT2's DataType enum order (``include/ctranslate2/types.h``)."""

_MULTILINGUAL_VOCAB = 51865

_FIX = "re-download the model package (or re-convert it with ct2-transformers-converter)"


# -- the binary file -----------------------------------------------------------------------------


class _Reader:
    def __init__(self, path: Path, data: bytearray):
        self.path, self.data, self.pos = path, data, 0

    def take(self, n: int, what: str) -> memoryview:
        end = self.pos + n
        if end > len(self.data):
            raise BadInput(
                f"{self.path}: truncated CTranslate2 model file ({what} needs bytes {self.pos}-{end}, "
                f"the file has {len(self.data)}); {_FIX}"
            )
        view = memoryview(self.data)[self.pos:end]
        self.pos = end
        return view

    def unpack(self, fmt: str, what: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))[0]

    def string(self, what: str) -> str:
        n = self.unpack("H", what)
        raw = bytes(self.take(n, what))
        if n == 0 or raw[-1] != 0:
            raise BadInput(f"{self.path}: corrupt CTranslate2 model file ({what} is not a NUL-ended string); {_FIX}")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise BadInput(f"{self.path}: corrupt CTranslate2 model file ({what} is not utf-8); {_FIX}") from None


def _read_header(path: Path) -> tuple[int, str, int]:
    with open(path, "rb") as f:
        head = f.read(4 + 2 + 256)
    r = _Reader(path, bytearray(head))
    version = r.unpack("I", "the binary version")
    if version not in SUPPORTED_VERSIONS:
        raise BadInput(
            f"{path}: CTranslate2 binary version {version} is not supported (this reader knows "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))}); re-convert the model with CTranslate2 3.x-4.x"
        )
    return version, r.string("the spec name"), r.unpack("I", "the spec revision")


def read_ct2(model_bin: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The variables of a CT2 ``model.bin`` (numpy, their stored dtype: fp16 stays fp16; bfloat16
    comes back as float32, exactly) and its alias table (alias -> variable name).

    The arrays are writable views into one buffer holding the whole file. Raises :class:`BadInput`
    naming the file for a truncated or corrupt file or an unsupported binary version.
    """
    path = Path(model_bin)
    try:
        size = path.stat().st_size
        data = bytearray(size)
        with open(path, "rb") as f:
            got = f.readinto(data)
    except OSError as e:
        raise BadInput(f"{path}: cannot read the CTranslate2 model file ({e.strerror}); check the path") from None
    del data[got:]
    r = _Reader(path, data)
    version = r.unpack("I", "the binary version")
    if version not in SUPPORTED_VERSIONS:
        raise BadInput(
            f"{path}: CTranslate2 binary version {version} is not supported (this reader knows "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))}); re-convert the model with CTranslate2 3.x-4.x"
        )
    r.string("the spec name")
    r.unpack("I", "the spec revision")
    variables: dict[str, np.ndarray] = {}
    for i in range(r.unpack("I", "the variable count")):
        name = r.string(f"the name of variable {i}")
        rank = r.unpack("B", f"the rank of {name!r}")
        dims = [r.unpack("I", f"the shape of {name!r}") for _ in range(rank)]
        type_id = r.unpack("B", f"the dtype of {name!r}")
        if type_id >= len(_DTYPES):
            raise BadInput(f"{path}: corrupt CTranslate2 model file (variable {name!r} has dtype id {type_id}); {_FIX}")
        n_bytes = r.unpack("I", f"the size of {name!r}")
        dtype = _DTYPES[type_id]
        itemsize = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
        count = int(np.prod(dims, dtype=np.int64))
        if n_bytes != count * itemsize:
            raise BadInput(
                f"{path}: corrupt CTranslate2 model file (variable {name!r} of shape {dims} {dtype} "
                f"holds {n_bytes} bytes, not {count * itemsize}); {_FIX}"
            )
        raw = r.take(n_bytes, f"the data of {name!r}")
        if dtype == "bfloat16":
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            array = bits.view(np.float32)
        else:
            array = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
        variables[name] = array.reshape(dims)
    aliases: dict[str, str] = {}
    if version >= 3:
        for i in range(r.unpack("I", "the alias count")):
            alias = r.string(f"alias {i}")
            aliases[alias] = r.string(f"the target of alias {alias!r}")
    return variables, aliases


def write_ct2(
    model_bin: Path,
    variables: dict[str, np.ndarray],
    aliases: dict[str, str],
    *,
    version: int = 6,
    spec: str = "WhisperSpec",
    revision: int = 3,
) -> None:
    """Write a CT2 ``model.bin`` (the inverse of :func:`read_ct2`; used by the tests to make tiny
    CT2 files, and with ``version`` to make files of other versions). Variables keep their numpy
    dtype (float32, int8, int16, int32 or float16)."""

    def string(s: str) -> bytes:
        raw = s.encode("utf-8")
        return struct.pack("<H", len(raw) + 1) + raw + b"\0"

    with open(model_bin, "wb") as f:
        f.write(struct.pack("<I", version) + string(spec) + struct.pack("<I", revision))
        f.write(struct.pack("<I", len(variables)))
        for name, value in variables.items():
            value = np.asarray(value)
            dtype = value.dtype.name
            if dtype not in _DTYPES:
                raise ValueError(f"variable {name!r}: dtype {dtype} cannot be stored in a CT2 file")
            f.write(string(name) + struct.pack("<B", value.ndim))
            f.write(b"".join(struct.pack("<I", d) for d in value.shape))
            data = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<")).tobytes()
            f.write(struct.pack("<BI", _DTYPES.index(dtype), len(data)) + data)
        f.write(struct.pack("<I", len(aliases)))
        for alias, target in aliases.items():
            f.write(string(alias) + string(target))


# -- CT2 -> HF ------------------------------------------------------------------------------------


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"{path}: missing from the CTranslate2 Whisper folder; {_FIX}") from None
    except (OSError, ValueError) as e:
        raise BadInput(f"{path}: not readable JSON ({e}); {_FIX}") from None


def _special_ids(tokenizer: dict, path: Path) -> dict[str, int]:
    ids = {t["content"]: int(t["id"]) for t in tokenizer.get("added_tokens", [])}
    for token in ("<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>"):
        if token not in ids:
            raise BadInput(f"{path}: the tokenizer has no {token} token, so it is not a Whisper tokenizer; {_FIX}")
    return ids


def _load(model_dir: Path):
    model_dir = Path(model_dir)
    model_bin = model_dir / "model.bin"
    if not model_bin.is_file():
        raise BadInput(f"{model_bin}: missing; point at a CTranslate2 Whisper folder (model.bin, config.json, tokenizer.json)")
    _, spec, _ = _read_header(model_bin)
    if spec != "WhisperSpec":
        raise BadInput(f"{model_bin}: a CTranslate2 {spec or 'unnamed'} model, not Whisper; point at a Whisper model")
    variables, aliases = read_ct2(model_bin)
    return model_bin, variables, aliases, _json(model_dir / "config.json"), _json(model_dir / "tokenizer.json")


def _float(variables: dict[str, np.ndarray], name: str) -> np.ndarray:
    w = variables[name]
    scale = variables.get(name + "_scale")
    if scale is not None:  # CT2 quantization: stored = round(w * scale)
        scale = scale.astype(np.float32)
        w = w.astype(np.float32) / (scale.reshape(-1, *([1] * (w.ndim - 1))) if scale.ndim else scale)
    return np.ascontiguousarray(w, dtype=np.float32)


def _layers(variables: dict[str, np.ndarray], side: str) -> int:
    found = {int(m.group(1)) for n in variables if (m := re.match(rf"{side}/layer_(\d+)/", n))}
    if found != set(range(len(found))):
        raise ValueError(f"{side} layers {sorted(found)} are not numbered 0..n-1")
    return len(found)


def _hf_state(variables: dict[str, np.ndarray], aliases: dict[str, str], n_enc: int, n_dec: int):
    import torch

    def get(name: str) -> np.ndarray:
        return _float(variables, aliases.get(name, name))

    out: dict[str, np.ndarray] = {}

    def linear(ct2: str, hf: str, bias: bool = True) -> None:
        out[hf + ".weight"] = get(ct2 + "/weight")
        if bias:
            out[hf + ".bias"] = get(ct2 + "/bias")

    def norm(ct2: str, hf: str) -> None:
        out[hf + ".weight"] = get(ct2 + "/gamma")
        out[hf + ".bias"] = get(ct2 + "/beta")

    def fused(ct2: str, hf: str, parts: tuple[str, ...]) -> None:
        w, b = get(ct2 + "/weight"), get(ct2 + "/bias")
        for part, wi, bi in zip(parts, np.split(w, len(parts)), np.split(b, len(parts))):
            out[f"{hf}.{part}_proj.weight"] = np.ascontiguousarray(wi)
            if part != "k":  # HF k_proj has no bias (a k bias never changes attention weights)
                out[f"{hf}.{part}_proj.bias"] = np.ascontiguousarray(bi)

    def layer(ct2: str, hf: str, cross: bool) -> None:
        norm(f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
        fused(f"{ct2}/self_attention/linear_0", f"{hf}.self_attn", ("q", "k", "v"))
        linear(f"{ct2}/self_attention/linear_1", f"{hf}.self_attn.out_proj")
        if cross:
            norm(f"{ct2}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm")
            linear(f"{ct2}/attention/linear_0", f"{hf}.encoder_attn.q_proj")
            fused(f"{ct2}/attention/linear_1", f"{hf}.encoder_attn", ("k", "v"))
            linear(f"{ct2}/attention/linear_2", f"{hf}.encoder_attn.out_proj")
        norm(f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm")
        linear(f"{ct2}/ffn/linear_0", f"{hf}.fc1")
        linear(f"{ct2}/ffn/linear_1", f"{hf}.fc2")

    linear("encoder/conv1", "model.encoder.conv1")
    linear("encoder/conv2", "model.encoder.conv2")
    out["model.encoder.embed_positions.weight"] = get("encoder/position_encodings/encodings")
    for i in range(n_enc):
        layer(f"encoder/layer_{i}", f"model.encoder.layers.{i}", cross=False)
    norm("encoder/layer_norm", "model.encoder.layer_norm")
    out["model.decoder.embed_tokens.weight"] = get("decoder/embeddings/weight")
    out["model.decoder.embed_positions.weight"] = get("decoder/position_encodings/encodings")
    for i in range(n_dec):
        layer(f"decoder/layer_{i}", f"model.decoder.layers.{i}", cross=True)
    norm("decoder/layer_norm", "model.decoder.layer_norm")
    tied = aliases.get("decoder/projection/weight") == "decoder/embeddings/weight" or (
        "decoder/projection/weight" not in variables
    )
    if not tied:
        out["proj_out.weight"] = get("decoder/projection/weight")
    bias = variables.get("decoder/projection/bias")
    if bias is not None and np.any(bias):
        raise ValueError("the output projection has a non-zero bias, which HF Whisper cannot hold")
    return {k: torch.from_numpy(v) for k, v in out.items()}, tied


def _ct2_to_hf(model_dir: Path, multilingual: bool | None = None):
    from transformers import WhisperConfig

    model_bin, variables, aliases, ct2_config, tokenizer = _load(model_dir)
    try:
        n_enc, n_dec = _layers(variables, "encoder"), _layers(variables, "decoder")
        state, tied = _hf_state(variables, aliases, n_enc, n_dec)
        heads = {side: int(variables[f"{side}/num_heads"]) for side in ("encoder", "decoder")}
    except KeyError as e:
        raise BadInput(f"{model_bin}: variable {e.args[0]} is missing, so this is not a CT2 Whisper model; {_FIX}") from None
    except ValueError as e:
        raise BadInput(f"{model_bin}: {e}; {_FIX}") from None
    ids = _special_ids(tokenizer, model_dir / "tokenizer.json")
    vocab, d_model = state["model.decoder.embed_tokens.weight"].shape
    eot = ids["<|endoftext|>"]
    config = WhisperConfig(
        vocab_size=int(vocab),
        num_mel_bins=int(state["model.encoder.conv1.weight"].shape[1]),
        d_model=int(d_model),
        encoder_layers=n_enc,
        decoder_layers=n_dec,
        encoder_attention_heads=heads["encoder"],
        decoder_attention_heads=heads["decoder"],
        encoder_ffn_dim=int(state["model.encoder.layers.0.fc1.weight"].shape[0]) if n_enc else 4 * int(d_model),
        decoder_ffn_dim=int(state["model.decoder.layers.0.fc1.weight"].shape[0]) if n_dec else 4 * int(d_model),
        max_source_positions=int(state["model.encoder.embed_positions.weight"].shape[0]),
        max_target_positions=int(state["model.decoder.embed_positions.weight"].shape[0]),
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=tied,
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=ids["<|startoftranscript|>"],
        # transformers' defaults ([220, 50256]) are the en-only ids; keep the model's own
        suppress_tokens=[int(i) for i in ct2_config.get("suppress_ids") or []],
        begin_suppress_tokens=[int(i) for i in ct2_config.get("suppress_ids_begin") or []],
    )
    config.architectures = ["WhisperForConditionalGeneration"]
    if multilingual is None:
        multilingual = vocab >= _MULTILINGUAL_VOCAB
    return config, state, ct2_config, tokenizer, ids, bool(multilingual)


def ct2_to_hf(model_dir: Path) -> tuple[transformers.WhisperConfig, dict[str, torch.Tensor]]:
    """The HF ``WhisperConfig`` (from the variable shapes, the ``num_heads`` scalars and the
    tokenizer's special ids) and the float32 state dict in HF names of a CT2 Whisper folder.
    ``proj_out.weight`` is left out when the head is tied to the embeddings (as HF saves it)."""
    config, state, *_ = _ct2_to_hf(model_dir)
    return config, state


def _generation_config(config, ct2_config: dict, ids: dict[str, int], multilingual: bool):
    from transformers import GenerationConfig

    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    fields: dict = {
        "decoder_start_token_id": sot,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "no_timestamps_token_id": ids["<|notimestamps|>"],
        "is_multilingual": multilingual,
        "max_length": config.max_target_positions,
        "max_initial_timestamp_index": 50,
        "return_timestamps": False,
        "suppress_tokens": [int(i) for i in ct2_config.get("suppress_ids") or []],
        "begin_suppress_tokens": [int(i) for i in ct2_config.get("suppress_ids_begin") or []],
    }
    if "<|startofprev|>" in ids:
        fields["prev_sot_token_id"] = ids["<|startofprev|>"]
    heads = ct2_config.get("alignment_heads")
    if not heads:  # CT2's own default: every head of the last half of the decoder layers
        n, h = config.decoder_layers, config.decoder_attention_heads
        heads = [[layer, head] for layer in range(n // 2, n) for head in range(h)]
    fields["alignment_heads"] = [[int(a), int(b)] for a, b in heads]
    if multilingual:
        lang_ids = set(ct2_config.get("lang_ids") or [])
        langs = {
            t: i for t, i in ids.items()
            if re.fullmatch(r"<\|[a-z]{2,3}(_[a-z]+)?\|>", t) and sot < i < config.vocab_size
            and (not lang_ids or i in lang_ids)
        }
        fields["lang_to_id"] = dict(sorted(langs.items(), key=lambda kv: kv[1]))
        fields["task_to_id"] = {t: ids[f"<|{t}|>"] for t in ("transcribe", "translate") if f"<|{t}|>" in ids}
        if "transcribe" in fields["task_to_id"]:
            # Without a task HF would prompt <sot><lang><notimestamps>; Whisper's own default
            # (and CT2's) is <sot><lang><transcribe><notimestamps>. The language is still detected.
            fields["task"] = "transcribe"
    return GenerationConfig(**fields)


def _write_tokenizer(out: Path, model_dir: Path, tokenizer: dict, ids: dict[str, int], vocab_size: int) -> None:
    tokenizer = json.loads(json.dumps(tokenizer))
    # CT2's tokenizer.json stops at <|notimestamps|>; HF's Whisper tokenizers also know the
    # timestamp tokens <|0.00|>..<|30.00|> (added, not special: timestamp_begin is computed as
    # the last special id + 1). Take them from vocabulary.txt when it lists them.
    vocabulary = model_dir / "vocabulary.txt"
    have = {t["id"] for t in tokenizer.get("added_tokens", [])} | set(tokenizer["model"]["vocab"].values())
    if vocabulary.is_file():
        lines = vocabulary.read_text(encoding="utf-8").split("\n")
        for i, token in enumerate(lines[:vocab_size]):
            if i not in have and re.fullmatch(r"<\|\d+\.\d\d\|>", token):
                tokenizer["added_tokens"].append({
                    "id": i, "content": token, "single_word": False, "lstrip": False, "rstrip": False,
                    "normalized": False, "special": False,
                })
    (out / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")
    specials = [t for t, _ in sorted(ids.items(), key=lambda kv: kv[1]) if t != "<|endoftext|>"]
    eot = "<|endoftext|>"
    config = {
        "tokenizer_class": "WhisperTokenizer",
        "bos_token": eot,
        "eos_token": eot,
        "unk_token": eot,
        "pad_token": eot,  # Whisper has no pad token; HF's own Whisper folders pad with <|endoftext|>
        "add_prefix_space": False,
        "errors": "replace",
        "model_max_length": 1024,
        "predict_timestamps": False,
        "extra_special_tokens": specials,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")


def _write_folder(model_dir: Path, out: Path, multilingual: bool | None) -> None:
    from safetensors.torch import save_file
    from transformers import WhisperFeatureExtractor

    config, state, ct2_config, tokenizer, ids, multilingual = _ct2_to_hf(model_dir, multilingual)
    config.save_pretrained(out)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    _generation_config(config, ct2_config, ids, multilingual).save_pretrained(out)
    _write_tokenizer(out, Path(model_dir), tokenizer, ids, config.vocab_size)
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(out)


def convert_ct2_whisper(model_dir: Path, out_dir: Path, *, multilingual: bool | None = None) -> Path:
    """Write the HF folder of a CT2 Whisper folder to ``out_dir`` and return it: ``config.json``,
    ``model.safetensors`` (float32), ``generation_config.json``, ``tokenizer.json`` +
    ``tokenizer_config.json``, ``preprocessor_config.json`` and a ``.complete`` marker.

    The folder is written next to ``out_dir`` and moved into place with ``os.replace``, so
    ``out_dir`` is never half written; an existing ``out_dir`` is replaced. ``multilingual``
    overrides transformers' rule (vocabulary >= 51865 entries)."""
    from .converted import write_converted

    marker = {"converter_version": CONVERTER_VERSION, "source": str(Path(model_dir).resolve())}
    return write_converted(Path(out_dir), lambda tmp: _write_folder(Path(model_dir), tmp, multilingual), marker,
                           keep_complete=False)


def _is_complete(folder: Path) -> bool:
    from .converted import is_complete

    return is_complete(folder, CONVERTER_VERSION)


def converted_folder(model_dir: Path, source_sha256: str) -> Path:
    """The HF folder converted from the CT2 folder ``model_dir`` whose ``model.bin`` has the
    SHA-256 ``source_sha256``: ``<cache_dir>/whisper-hf/<source_sha256>``, converted on first use
    and reused after. A folder without a current ``.complete`` marker (interrupted, or an older
    converter) is converted again; temp folders older than an hour left by killed runs are removed."""
    from .._util import cache_dir
    from .converted import converted_once

    if not re.fullmatch(r"[0-9a-f]{64}", source_sha256 or ""):
        raise BadInput(f"source_sha256 {source_sha256!r} is not a SHA-256 hex digest; pass sha256_file(model.bin)")
    out = cache_dir() / "whisper-hf" / source_sha256
    marker = {"converter_version": CONVERTER_VERSION, "source": str(Path(model_dir).resolve()), "source_sha256": source_sha256}
    return converted_once(out, lambda tmp: _write_folder(Path(model_dir), tmp, None), marker,
                          f"converting the CTranslate2 Whisper model {model_dir} to a Hugging Face folder (once)")
