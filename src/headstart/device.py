"""Where models and batches run: the one place that decides a device.

:func:`select_device` is called once per backbone, when it is opened
(:func:`headstart.backbones.open_backbone`), and the backbone carries the answer as
``backbone.device``; methods, the trainer, the plan's throughput probe and embedding all read
that attribute instead of asking torch themselves. Training on several processes
(:mod:`headstart.train.distributed`, ``accelerate launch``) does not change who decides: the
accelerator is created with ``device_placement=False`` and wraps the model where this module put
it. The one difference under a launch (``WORLD_SIZE`` > 1): ``cuda`` without an index is the
process's own GPU, ``cuda:LOCAL_RANK``, so that N processes on one machine use N GPUs.

The rule, for ``HEADSTART_DEVICE`` unset or ``auto``:

1. CUDA (``cuda``, i.e. the current GPU) when ``torch.cuda.is_available()``;
2. else Apple's MPS when it is available *and* the backbone family runs on it;
3. else the CPU.

``HEADSTART_DEVICE=cpu|cuda|cuda:N|mps`` overrides the rule. A device this machine does not have
(``cuda`` without a GPU, ``cuda:3`` on a two-GPU machine, ``mps`` off Apple silicon) or a value
that is not a device is refused with one line (:class:`~headstart.errors.BadInput`), never
replaced by another one silently. Families that run outside torch (an ONNX file on
onnxruntime's CPU provider, a numpy encoder) declare ``devices = ("cpu",)`` and run on the CPU
whatever is asked: the request is still checked, so a typo fails the same way for every backbone.
"""

from __future__ import annotations

import os
import re

import torch

from .errors import BadInput

ENV = "HEADSTART_DEVICE"
DEVICE_TYPES = ("cuda", "mps", "cpu")
"""Every device type headstart places models on, in the order ``auto`` tries them."""

_VALID = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def _check_available(request: str, source: str) -> torch.device:
    """The device ``request`` names, or one line saying why this machine cannot give it."""
    device = torch.device(request)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise BadInput(f"{source}={request}: no CUDA device is available here (torch.cuda.is_available() is False); "
                           f"use {ENV}=cpu or auto")
        if device.index is not None and device.index >= count:
            raise BadInput(f"{source}={request}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1}); "
                           f"use one of them, or {ENV}=cuda or auto")
    elif device.type == "mps" and not _mps_available():
        raise BadInput(f"{source}={request}: MPS is not available here (torch.backends.mps.is_available() is False); "
                       f"use {ENV}=cpu or auto")
    return device


def requested_device(preference: str | None = None) -> str:
    """The device asked for: ``preference`` when given and not 'auto', else ``HEADSTART_DEVICE``,
    else 'auto'. Refuses a value that is not a device name."""
    source, value = "device", (preference or "auto").strip().lower()
    if value == "auto":
        env = os.environ.get(ENV, "").strip().lower()
        if env:
            source, value = ENV, env
    if not _VALID.fullmatch(value):
        raise BadInput(f"{source}={value!r} is not a device: use auto, cpu, cuda, cuda:N or mps")
    return value


def _rank_gpu(device: torch.device) -> torch.device:
    """Under a distributed launch, ``cuda`` (no index) becomes this process's GPU, ``cuda:LOCAL_RANK``."""
    if device.type != "cuda" or device.index is not None or int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return device
    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    count = torch.cuda.device_count()
    if local >= count:
        raise BadInput(f"this process has LOCAL_RANK={local} but the machine has {count} CUDA device(s): "
                       f"launch at most {count} processes per machine, or use {ENV}=cpu")
    return torch.device("cuda", local)


def select_device(preference: str | None = "auto", *, supported: tuple[str, ...] = DEVICE_TYPES) -> torch.device:
    """The device a backbone's module and batches go to.

    ``preference``: 'auto' (the rule in the module docstring, or ``HEADSTART_DEVICE`` when it is
    set), or a device name, which wins over the environment. ``supported``: the device types the
    backbone family runs on (``Backbone.devices``); a family that runs only on the CPU gets the CPU.
    """
    request = requested_device(preference)
    if request != "auto":
        device = _check_available(request, ENV if preference in (None, "auto") else "device")
        return _rank_gpu(device) if device.type in supported else torch.device("cpu")
    if "cuda" in supported and torch.cuda.is_available():
        return _rank_gpu(torch.device("cuda"))
    if "mps" in supported and _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


__all__ = ["DEVICE_TYPES", "ENV", "requested_device", "select_device"]
