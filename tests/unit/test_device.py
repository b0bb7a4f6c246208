"""Device placement is decided in one place (headstart.device.select_device), once per backbone
when it is opened: the HEADSTART_DEVICE override, one-line refusals of a device this machine does
not have, and every backbone family reporting the device chosen for it.

The GPU and MPS cases fake torch's availability checks: no model is loaded, so nothing runs there.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import headstart.backbones as backbones
from headstart.backbones import FAMILIES, open_backbone
from headstart.catalog import CATALOG, resolve
from headstart.device import ENV, select_device
from headstart.errors import BadInput


@pytest.fixture
def machine(monkeypatch):
    """Pretend this machine has ``gpus`` CUDA devices and MPS or not."""
    monkeypatch.delenv(ENV, raising=False)

    def fake(*, gpus: int = 0, mps: bool = False) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    fake()
    return fake


def test_auto_prefers_cuda_then_mps_then_cpu(machine):
    assert select_device() == torch.device("cpu")
    machine(mps=True)
    assert select_device() == torch.device("mps")
    assert select_device(supported=("cuda", "cpu")) == torch.device("cpu")  # a family without MPS support
    machine(gpus=1, mps=True)
    assert select_device() == torch.device("cuda")
    assert select_device(supported=("cpu",)) == torch.device("cpu")


@pytest.mark.parametrize("value, expected", [("cpu", "cpu"), ("CUDA", "cuda"), ("cuda:1", "cuda:1"), (" mps ", "mps"),
                                             ("auto", "cuda")])
def test_the_environment_overrides_the_rule(machine, monkeypatch, value, expected):
    machine(gpus=2, mps=True)
    monkeypatch.setenv(ENV, value)
    assert select_device() == torch.device(expected)


def test_an_explicit_preference_wins_over_the_environment(machine, monkeypatch):
    machine(gpus=1)
    monkeypatch.setenv(ENV, "cuda")
    assert select_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("gpus, mps, value, needle", [
    (0, False, "cuda", "HEADSTART_DEVICE=cuda: no CUDA device is available here"),
    (0, True, "cuda:0", "HEADSTART_DEVICE=cuda:0: no CUDA device is available here"),
    (2, False, "cuda:2", "HEADSTART_DEVICE=cuda:2: this machine has 2 CUDA device(s) (cuda:0..cuda:1)"),
    (1, False, "mps", "HEADSTART_DEVICE=mps: MPS is not available here"),
    (1, True, "gpu", "HEADSTART_DEVICE='gpu' is not a device: use auto, cpu, cuda, cuda:N or mps"),
    (1, True, "cuda:x", "HEADSTART_DEVICE='cuda:x' is not a device"),
])
def test_an_unavailable_device_is_refused_in_one_line(machine, monkeypatch, gpus, mps, value, needle):
    machine(gpus=gpus, mps=mps)
    monkeypatch.setenv(ENV, value)
    with pytest.raises(BadInput) as err:
        select_device()
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_an_unavailable_device_is_refused_for_cpu_only_families_too(machine, monkeypatch):
    """A typo or a missing GPU fails the same way whichever backbone is opened."""
    monkeypatch.setenv(ENV, "cuda")
    with pytest.raises(BadInput, match="no CUDA device"):
        select_device(supported=("cpu",))


# -- every family reports the device chosen for it ---------------------------------------------

def _spec_of(family: str, tiny_bert, tiny_vit):
    """A spec per family: the tiny random folders for Hugging Face families, catalog entries for
    the packaged ones (opened without loading: their files are never read here)."""
    local = {"hf-text": tiny_bert, "hf-image": tiny_vit}
    if family in local:
        return resolve(str(local[family]))
    if family == "clip":  # no catalog entry: an image spec of that family (opening reads no file)
        return replace(resolve(str(tiny_vit)), family="clip")
    return next(s for s in CATALOG.values() if s.family == family)


@pytest.fixture
def opened(monkeypatch, tiny_bert, tiny_vit):
    monkeypatch.setattr(backbones, "locate", lambda spec: tiny_bert)
    monkeypatch.setattr(backbones, "identity", lambda path, rehash=False: "0" * 64)
    return lambda family, **kw: open_backbone(_spec_of(family, tiny_bert, tiny_vit), **kw)[0]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_reports_the_chosen_device(machine, monkeypatch, opened, family):
    torch_family = "cuda" in FAMILIES[family].devices
    machine(gpus=2, mps=True)
    assert opened(family).device == torch.device("cuda" if torch_family else "cpu")
    monkeypatch.setenv(ENV, "cuda:1")
    assert opened(family).device == torch.device("cuda:1" if torch_family else "cpu")
    monkeypatch.setenv(ENV, "cpu")
    assert opened(family).device == torch.device("cpu")
    assert opened(family, device="mps").device == torch.device("mps" if torch_family else "cpu")
    machine(mps=True)
    monkeypatch.delenv(ENV)
    assert opened(family).device == torch.device("mps" if "mps" in FAMILIES[family].devices else "cpu")
    monkeypatch.setenv(ENV, "cuda")
    with pytest.raises(BadInput, match="no CUDA device"):
        opened(family)


def test_frozen_feature_families_run_on_the_cpu_only():
    assert {f for f, cls in FAMILIES.items() if cls.devices == ("cpu",)} == {"onnx-text", "use-numpy"}


def test_embedding_uses_the_backbone_device(tiny_bert, machine):
    """The module goes where the backbone says (the CPU here), not where torch would pick."""
    bb, _ = open_backbone(str(tiny_bert))
    assert bb.device == torch.device("cpu")
    bb.embed(["good movie", "bad card"])
    assert {p.device for p in bb.module.parameters()} == {torch.device("cpu")}
