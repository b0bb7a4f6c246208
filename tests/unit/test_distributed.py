"""Two processes under ``accelerate launch`` train what one process trains with the same recipe.

The recipe's ``batch_size`` is the global batch (:mod:`headstart.train.distributed`): each of the
two ranks takes its slice of every step (7 examples: 4 and 3, so the slices are unequal; 43
training examples, so each epoch has a batch of 1 and rank 1 joins that step with no example) and
the losses are divided by the global step size, so the final trainable weights of the 2-process run
match the 1-process run to float rounding (measured: LoRA ~1e-7, full fine-tuning with
``grad_accum=2`` ~1e-6 after 15 Adam steps at a high learning rate; the tolerance is 1e-5). The
backbone has no dropout (each process draws its own masks, so with dropout the runs differ by
design). The launch is a real one: gloo over localhost, ``python -m headstart adapt`` in each
process, each rank's stdout/stderr kept in its own log (``--tee 3 --log_dir``).
"""

from __future__ import annotations

import csv
import glob
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("accelerate", reason="accelerate is not installed (pip install 'headstart[distributed]')")

TOLERANCE = 1e-5
"""Largest |w_2proc - w_1proc| of any trainable weight, and of any predicted probability."""

RECIPES = {
    # head_init=zero and high rates: the fit must move far from its start (so that "keep the best
    # state" keeps a trained one, not the initial one, and the comparison means something).
    "lora": ["--set", "head_init=zero", "--set", "lr=1e-2", "--set", "head_lr=3e-2"],
    "finetune": ["--set", "head_init=zero", "--set", "lr=1e-3", "--set", "head_lr=3e-2", "--set", "grad_accum=2"],
}
COMMON = ["--precision", "fp32", "--set", "batch_size=7", "--set", "epochs=3", "--set", "eval_every=1",
          "--set", "patience=10", "--set", "dropout=0", "--seed", "3"]


@pytest.fixture(scope="module")
def bert_no_dropout(tmp_path_factory) -> Path:
    from headstart.backbones.testing import tiny_text_model

    folder = tiny_text_model(tmp_path_factory.mktemp("backbones") / "tiny-bert-nodrop")
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _weights(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "weights.safetensors"))


def _probabilities(run_dir: Path) -> list[list[float]]:
    with open(run_dir / "predictions.csv", newline="", encoding="utf-8") as f:
        return [[float(v) for k, v in row.items() if k.startswith("p[")] for row in csv.DictReader(f)]


def _launch(tmp_path: Path, args: list[str]) -> tuple[subprocess.CompletedProcess, Path]:
    home, logs = tmp_path / "home2", tmp_path / "logs"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HEADSTART_DEVICE": "cpu",
           "HEADSTART_HOME": str(home), "HEADSTART_PROGRESS": "1",  # progress on: rank 1 must still print nothing
           "HF_HOME": str(tmp_path / "hf")}  # no accelerate config from the user's cache
    for key in ("HEADSTART_STORE", "HEADSTART_CACHE", "WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           "--tee", "3", "--log_dir", str(logs), "-m", "headstart", *args]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    return proc, logs


def _rank_log(logs: Path, rank: int, stream: str) -> str:
    found = glob.glob(str(logs / "**" / str(rank) / f"{stream}.log"), recursive=True)
    assert len(found) == 1, (rank, stream, found)
    return Path(found[0]).read_text()


@pytest.mark.parametrize("method", ["lora", "finetune"])
def test_two_processes_train_what_one_process_trains(method, cli, tmp_path, bert_no_dropout, monkeypatch, data_helpers):
    from headstart.runs import Store

    sentiment_rows, write_table = data_helpers
    data = write_table(tmp_path / "train.csv", sentiment_rows(61))
    monkeypatch.setenv("HEADSTART_DEVICE", "cpu")
    args = ["adapt", str(data), "--backbone", str(bert_no_dropout), "--method", method, *COMMON, *RECIPES[method], "--json"]

    one = cli(*args, "--out", tmp_path / "runs1", "--store", tmp_path / "store1.sqlite3")
    assert one.rc == 0, one
    run1 = Path(one.json()["path"])

    out2, store2 = tmp_path / "runs2", tmp_path / "store2.sqlite3"
    proc, logs = _launch(tmp_path, [*args, "--out", str(out2), "--store", str(store2)])
    assert proc.returncode == 0, proc.stderr[-3000:]

    # Rank 0 printed the run; rank 1 printed nothing at all (no summary, status line or warning).
    result = json.loads(_rank_log(logs, 0, "stdout"))
    assert "training" in _rank_log(logs, 0, "stderr")  # rank 0's status lines and progress bar
    assert _rank_log(logs, 1, "stdout") == ""
    assert _rank_log(logs, 1, "stderr") == ""

    # Exactly one run folder (no interrupted-run folder left) and one store row.
    assert sorted(p.name for p in out2.iterdir()) == [result["run"]]
    assert [r["id"] for r in Store(store2).runs()] == [result["run"]]
    run2 = out2 / result["run"]

    fit1, fit2 = (json.loads((r / "manifest.json").read_text())["method"]["fit"] for r in (run1, run2))
    assert fit2["processes"] == 2 and "processes" not in fit1
    for key in ("steps", "examples_seen", "tokens_seen", "stopped_by", "best_step"):
        assert fit1[key] == fit2[key], key
    assert fit1["best_step"] > 0  # the kept state is a trained one
    assert fit1["steps"] == 3 * 7  # 43 examples: 6 steps of 7 and one of 1 per epoch
    assert [h["step"] for h in fit1["history"]] == [h["step"] for h in fit2["history"]]
    for h1, h2 in zip(fit1["history"], fit2["history"], strict=True):
        assert h2["val_loss"] == pytest.approx(h1["val_loss"], abs=TOLERANCE)

    w1, w2 = _weights(run1), _weights(run2)
    assert w1.keys() == w2.keys()
    diff = max(float((w1[k] - w2[k]).abs().max()) for k in w1)
    assert diff <= TOLERANCE, f"{method}: max |w_2proc - w_1proc| = {diff:.2e} > {TOLERANCE:.0e}"
    p1, p2 = _probabilities(run1), _probabilities(run2)
    assert len(p1) == len(p2) > 0
    assert max(abs(a - b) for r1, r2 in zip(p1, p2, strict=True) for a, b in zip(r1, r2, strict=True)) <= TOLERANCE
    print(f"{method}: max |w_2proc - w_1proc| = {diff:.2e}")


def test_one_process_imports_no_accelerate():
    """Without a launch the trainer's hooks are pass-throughs and accelerate is never imported."""
    code = ("import sys, torch; torch.set_num_threads(1)\n"
            "from headstart.train import distributed\n"
            "import headstart.train.trainer, headstart.api\n"
            "s = distributed.session(torch.device('cpu'))\n"
            "assert type(s) is distributed.Local and s.world == 1 and s.shard([1, 2, 3]) == [1, 2, 3]\n"
            "assert 'accelerate' not in sys.modules\n")
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_shards_are_contiguous_and_cover_the_step():
    from headstart.train.distributed import shard

    idx = [5, 1, 9, 4, 7, 2, 8]
    assert [shard(idx, r, 2) for r in range(2)] == [[5, 1, 9, 4], [7, 2, 8]]
    assert [shard(idx, r, 3) for r in range(3)] == [[5, 1, 9], [4, 7], [2, 8]]
    assert [shard([3], r, 2) for r in range(2)] == [[3], []]


def test_a_launch_without_accelerate_is_one_line(cli, train_csv, tiny_bert, monkeypatch, assert_bad_input, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "accelerate" else real(name, *a))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    r = cli("adapt", train_csv, "--backbone", tiny_bert, "--method", "lora", "--out", tmp_path / "runs")
    assert_bad_input(r, "distributed launch", "headstart[distributed]", out_dir=tmp_path / "runs")
