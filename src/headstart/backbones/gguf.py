"""GGUF causal-LM files -> plain Hugging Face causal-LM folders (float32 safetensors), once, cached.

Offline, some of the causal LMs headstart can reach are GGUF files (llama.cpp's format: metadata
key/values + tensors, most of them quantised in blocks: Q4_1, Q4_K_M...). transformers can read one
(``from_pretrained(folder, gguf_file=name)``) but only as a quantised model that ``save_pretrained``
refuses ("quantized with gguf and is not serializable"), and reading it again costs a full
dequantisation every time. This module does that once and writes an ordinary HF folder::

    <cache_dir>/causal-lm/<sha256 of the .gguf file>/
        config.json  model.safetensors  generation_config.json
        tokenizer.json  tokenizer_config.json  (chat_template.jinja when the GGUF has one)
        .complete    {"converter_version": N, "source": ..., "source_sha256": ...}

The GGUF file's SHA-256 stays the base's identity; the folder is only a cache of it.

**How** (transformers 5.x, ``modeling_gguf_pytorch_utils.load_gguf_checkpoint`` for most
architectures, ``integrations/gguf`` for the few of ``GGUF_ARCHS``)::

    AutoModelForCausalLM.from_pretrained(dir, gguf_file=name, dtype=float32,
                                         quantization_config=GgufConfig(dequantize=True))

reads the config from the metadata (``llama.block_count`` -> ``num_hidden_layers``...), maps the
tensor names back (``blk.N.attn_q`` -> ``model.layers.N.self_attn.q_proj``...), dequantises every
block to float32 and undoes llama.cpp's rotary row permutation of ``attn_q``/``attn_k``
(``LlamaTensorProcessor._reverse_permute_weights``). A file without ``output.weight`` has tied
embeddings. The model it returns carries ``config.quantization_config`` (gguf) and a quantizer; so
the config is copied without it, a plain model is built from that config on the meta device, the
state dict is assigned into it (strict: every parameter must come from the file), the tied weights
are re-tied and the plain model is saved. The tokenizer is rebuilt by
``AutoTokenizer.from_pretrained(dir, gguf_file=name)`` from ``tokenizer.ggml.*`` (byte-level BPE
for ``gpt2``, sentencepiece for ``llama``...) with ``tokenizer.chat_template`` as its chat template.

**Caching** follows :mod:`headstart.backbones.ct2_whisper`: the folder is written into a private
temp folder beside the target and renamed into place, with a ``.complete`` marker holding
:data:`CONVERTER_VERSION`; a folder without a current marker (an interrupted build, an older
converter) is rebuilt.

**Errors** (one line each): the ``gguf`` package missing -> :class:`BackboneUnavailable`;
an architecture transformers cannot load (``general.architecture`` is read first, without
transformers) -> :class:`BadInput` listing the ones it can; a truncated or corrupt file ->
:class:`BadInput` naming the file.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path

from ..errors import BackboneUnavailable, BadInput

CONVERTER_VERSION = 1
"""Bumped when the output of :func:`dequantised_folder` changes; older cached folders are rebuilt."""


_FIX = "re-download the GGUF file (or re-export it with llama.cpp's convert_hf_to_gguf.py)"

# GGUF architecture names that transformers spells differently in its legacy mapping
# (``load_gguf_checkpoint`` renames them the same way before its own check).
_ARCH_ALIASES = {"qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe", "gpt-oss": "gpt_oss",
                 "minimax-m2": "minimax_m2", "t5encoder": "t5"}


def is_gguf(path: Path) -> bool:
    """Whether ``path`` is a GGUF file (an existing file named ``*.gguf``)."""
    path = Path(path)
    return path.suffix.lower() == ".gguf" and path.is_file()


# -- reading the metadata -----------------------------------------------------------------------


def _gguf():
    try:
        import gguf
    except ImportError:
        raise BackboneUnavailable(
            "reading GGUF models needs the gguf package, which is not installed: "
            "pip install gguf (or pip install 'headstart[generation]')"
        ) from None
    return gguf


def _reader(path: Path):
    """A ``gguf.GGUFReader`` over ``path`` whose every tensor lies inside the file."""
    gguf = _gguf()
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise BadInput(f"{path}: cannot read the GGUF file ({e.strerror}); check the path") from None
    try:
        reader = gguf.GGUFReader(path)
    except Exception as e:  # the reader raises ValueError, struct.error, IndexError... on bad bytes
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise BadInput(f"{path}: truncated or corrupt GGUF file ({reason}); {_FIX}") from None
    for tensor in reader.tensors:
        end = int(tensor.data_offset) + int(tensor.n_bytes)
        if end > size or tensor.data.nbytes != int(tensor.n_bytes):
            raise BadInput(
                f"{path}: truncated GGUF file (tensor {tensor.name!r} needs bytes up to {end}, the file has "
                f"{size}); {_FIX}"
            )
    return reader


def _field(reader, key: str):
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def gguf_metadata(path: Path) -> dict:
    """The small metadata of a GGUF file: ``architecture``, ``name``, ``file_type`` (llama.cpp's
    enum), ``chat_template`` (or None), ``tensor_types`` (ggml type name -> count) and
    ``n_parameters``. Raises :class:`BadInput` for a truncated or corrupt file."""
    reader = _reader(path)
    architecture = _field(reader, "general.architecture")
    if not isinstance(architecture, str) or not architecture:
        raise BadInput(f"{path}: corrupt GGUF file (no general.architecture in its metadata); {_FIX}")
    types: dict[str, int] = {}
    for tensor in reader.tensors:
        types[tensor.tensor_type.name] = types.get(tensor.tensor_type.name, 0) + 1
    return {
        "architecture": architecture,
        "name": _field(reader, "general.name"),
        "file_type": _field(reader, "general.file_type"),
        "chat_template": _field(reader, "tokenizer.chat_template"),
        "tensor_types": types,
        "n_parameters": int(sum(int(t.n_elements) for t in reader.tensors)),
    }


def gguf_architecture(path: Path) -> str:
    """``general.architecture`` of a GGUF file (``llama``, ``gemma3``, ``qwen2``...)."""
    return gguf_metadata(path)["architecture"]


def supported_architectures() -> tuple[str, ...]:
    """The GGUF architectures this transformers can load, sorted."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    names = set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"}  # metadata groups, not models
    try:
        from transformers.integrations.gguf import GGUF_ARCHS
    except ImportError:  # pragma: no cover - transformers before the packed-GGUF loader
        pass
    else:
        names |= set(GGUF_ARCHS)
    return tuple(sorted(names))


def _check_architecture(path: Path, architecture: str) -> None:
    supported = supported_architectures()
    if architecture in supported or _ARCH_ALIASES.get(architecture) in supported:
        return
    import transformers

    raise BadInput(
        f"{path}: GGUF architecture {architecture!r} cannot be loaded by transformers "
        f"{transformers.__version__} (it loads {', '.join(supported)}); use a GGUF of one of those, "
        "or the model's Hugging Face folder"
    )


# -- GGUF -> HF ---------------------------------------------------------------------------------


def _write_folder(gguf_file: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        from transformers import GgufConfig
    except ImportError:  # pragma: no cover - older transformers always dequantise
        quantization = {}
    else:
        quantization = {"quantization_config": GgufConfig(dequantize=True)}

    folder, name = str(gguf_file.parent), gguf_file.name
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32, **quantization)
    state = loaded.state_dict()
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = name
    generation_config = loaded.generation_config
    del loaded

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(state, strict=True, assign=True)
    model.tie_weights()
    del state
    on_meta = [n for n, p in model.named_parameters() if p.is_meta]
    if on_meta:  # pragma: no cover - strict loading assigns every parameter
        raise BadInput(f"{gguf_file}: the GGUF file lacks the weights {on_meta[:3]}; {_FIX}")
    model.generation_config = generation_config
    model.save_pretrained(out)

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    tokenizer.save_pretrained(out)


def _is_complete(folder: Path) -> bool:
    from .converted import is_complete

    return is_complete(folder, CONVERTER_VERSION)


@contextmanager
def _quiet_conversion():
    """transformers' GGUF reader draws its own tqdm bar whatever its logging says; with headstart's
    progress off (``HEADSTART_PROGRESS=0``, ``--quiet``) it is silenced too."""
    from .._util import progress_enabled

    if progress_enabled():
        yield
        return
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    from .base import quiet_transformers

    quiet_transformers()
    original = gguf_utils.tqdm
    gguf_utils.tqdm = lambda *a, **k: original(*a, **{**k, "disable": True})
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def dequantised_folder(gguf_file: Path, sha256: str) -> Path:
    """The plain HF causal-LM folder of the GGUF file ``gguf_file`` whose SHA-256 is ``sha256``:
    ``<cache_dir>/causal-lm/<sha256>``, built on first use (float32 weights) and reused after.

    A folder without a current ``.complete`` marker (interrupted, or from an older converter) is
    rebuilt; temp folders older than an hour left by killed runs are removed. Raises
    :class:`BackboneUnavailable` without the ``gguf`` package and :class:`BadInput` for a
    truncated/corrupt file or an architecture transformers cannot load."""
    from .._util import cache_dir
    from .converted import converted_once

    gguf_file = Path(gguf_file)
    if not re.fullmatch(r"[0-9a-f]{64}", sha256 or ""):
        raise BadInput(f"sha256 {sha256!r} is not a SHA-256 hex digest; pass sha256_file(<the .gguf file>)")
    out = cache_dir() / "causal-lm" / sha256
    if _is_complete(out):
        return out
    if not is_gguf(gguf_file):
        raise BadInput(f"{gguf_file}: not a GGUF file (expected an existing file named *.gguf)")
    _check_architecture(gguf_file, gguf_architecture(gguf_file))

    def fill(tmp: Path) -> None:
        with _quiet_conversion():
            _write_folder(gguf_file, tmp)

    marker = {"converter_version": CONVERTER_VERSION, "source": str(gguf_file.resolve()), "source_sha256": sha256}
    return converted_once(out, fill, marker, f"dequantising {gguf_file.name} from GGUF (once) into {out}")
