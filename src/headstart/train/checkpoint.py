"""Checkpoints that cannot run code when read.

A checkpoint is one safetensors file: every tensor (trainable weights, optimizer moments, RNG
states, the best state so far) is a safetensors tensor, and everything else (counters, history,
scheduler and optimizer scalars, the nesting that ties it together) is JSON in the file's
metadata. Reading it parses a fixed binary header and JSON; nothing is unpickled, so a planted
file in ``<runs>/.partial/RUN/`` can at worst be refused, never executed.

The JSON side encodes what JSON lacks with one-key objects: ``{"__tensor__": key}`` (a tensor
stored under ``key``), ``{"__tuple__": [...]}`` and ``{"__items__": [[k, v], ...]}`` (a dict
whose keys are not all strings, such as an optimizer's per-parameter state). Non-finite floats
are written as JSON's ``Infinity``/``NaN`` extensions, which Python's reader accepts.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..errors import RunIntegrityError, WriteFailed

FORMAT = "headstart.checkpoint/1"
NAME = "checkpoint.safetensors"
LEGACY_NAME = "checkpoint.pt"
"""Pickled checkpoints of headstart <= 0.2.0: refused, never read."""


def save_checkpoint(path: Path, obj: dict) -> None:
    """Write ``obj`` (nested dicts/lists/tuples of tensors, numbers, strings, None) atomically."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(obj, tensors)
    meta = {"format": FORMAT, "tree": json.dumps(tree, separators=(",", ":"))}
    tmp = path.with_name(path.name + ".tmp")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)
    except (OSError, SafetensorError) as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        reason = getattr(e, "strerror", None) or str(e).split("I/O error: ")[-1]
        raise WriteFailed(f"cannot write the checkpoint {path} ({reason}); free space or choose another --out") from None


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`; a file that is not one is refused."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise RunIntegrityError(f"{path}: not a headstart checkpoint (format {meta.get('format')!r}); "
                                        "remove the folder and start a new run")
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
        tree = json.loads(meta["tree"])
        return _decode(tree, tensors)
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as e:
        raise RunIntegrityError(f"{path}: unreadable checkpoint ({type(e).__name__}: {str(e)[:120]}); "
                                "remove the folder and start a new run") from None


def _encode(x: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(x, torch.Tensor):
        key = f"t{len(tensors)}"
        # Own, contiguous storage: safetensors refuses tensors that share memory (tied weights).
        tensors[key] = x.detach().to("cpu").clone().contiguous()
        return {"__tensor__": key}
    if isinstance(x, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in x):
            return {k: _encode(v, tensors) for k, v in x.items()}
        return {"__items__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in x.items()]}
    if isinstance(x, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in x]}
    if isinstance(x, list):
        return [_encode(v, tensors) for v in x]
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    raise TypeError(f"checkpoint: cannot store a {type(x).__name__} (only tensors, numbers, strings and containers)")


def _decode(x: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(x, dict):
        if set(x) == {"__tensor__"}:
            return tensors[x["__tensor__"]]
        if set(x) == {"__tuple__"}:
            return tuple(_decode(v, tensors) for v in x["__tuple__"])
        if set(x) == {"__items__"}:
            return {_decode(k, tensors): _decode(v, tensors) for k, v in x["__items__"]}
        return {k: _decode(v, tensors) for k, v in x.items()}
    if isinstance(x, list):
        return [_decode(v, tensors) for v in x]
    return x


__all__ = ["LEGACY_NAME", "NAME", "load_checkpoint", "save_checkpoint"]
