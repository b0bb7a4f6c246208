"""The run folder: what an adaptation produced, complete and checkable.

::

    <run id>/
      manifest.json      backbone name + sha256, method + resolved config, data fingerprints,
                         seed, library versions, metrics, timings, sha256 of every other file
      weights.safetensors  exactly the tensors the method trained or added (a probe's head; LoRA
                         pairs + head; every body weight for finetune/scratch)
      metrics.json       test (and validation) metrics
      predictions.csv    test predictions with probabilities

A folder is written under a temporary name and renamed into place, so it appears whole or not
at all. The manifest carries a checksum of itself and of every file, so a run that is missing
files or was edited is refused on load.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .._util import canonical_json, sha256_bytes, sha256_file
from ..errors import RunIntegrityError, WriteFailed

FORMAT = "headstart.run/1"
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
LEGACY_WEIGHTS = "head.safetensors"  # runs written by headstart 0.1.0 before trained methods existed


@dataclass
class Predictions:
    classes: list[str]
    probabilities: np.ndarray
    """(N, n_classes), columns in ``classes`` order."""

    @property
    def indices(self) -> np.ndarray:
        return self.probabilities.argmax(1)

    @property
    def labels(self) -> list[str]:
        return [self.classes[i] for i in self.indices]

    def records(self, inputs: list | None = None) -> list[dict]:
        out = []
        for i, row in enumerate(self.probabilities):
            rec: dict = {} if inputs is None else {"input": inputs[i]}
            rec["label"] = self.classes[int(row.argmax())]
            rec["probabilities"] = {c: round(float(p), 6) for c, p in zip(self.classes, row, strict=True)}
            out.append(rec)
        return out


def manifest_checksum(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    return sha256_bytes(canonical_json(body).encode())


def write_run_folder(out_dir: Path, run_id: str, manifest: dict, tensors: dict, metrics: dict, predictions: list[dict]) -> Path:
    """Write every file into a temporary folder, checksum them, then rename it into place."""
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / run_id
    if final.exists():
        raise RunIntegrityError(f"{final} already exists; choose another --out or remove it")
    tmp = out_dir / f".tmp-{run_id}-{os.getpid()}"
    try:
        tmp.mkdir()
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / WEIGHTS))
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n")
        _write_predictions(tmp / "predictions.csv", predictions)
        manifest = dict(manifest)
        manifest["files"] = {name: sha256_file(tmp / name) for name in (WEIGHTS, "metrics.json", "predictions.csv")}
        manifest["checksum"] = manifest_checksum(manifest)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        os.rename(tmp, final)
    except (OSError, SafetensorError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        reason = getattr(e, "strerror", None) or str(e).split("I/O error: ")[-1]
        raise WriteFailed(f"cannot write run {run_id} in {out_dir} ({reason}); free space or choose another --out and run again "
                          f"(a trained run continues from its last checkpoint with `headstart adapt --resume {run_id}`)") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _write_predictions(path: Path, records: list[dict]) -> None:
    """One row per test example as the task wrote it (flat dicts with the same keys; the task
    decides the columns: classification ``input,label,predicted,p[<class>]...``, retrieval one
    row per query with its per-query metrics)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        if not records:
            return
        columns = list(records[0])
        writer = csv.writer(f)
        writer.writerow(columns)
        for r in records:
            writer.writerow([r[c] for c in columns])


def read_run_folder(path: Path) -> tuple[dict, dict]:
    """Manifest and tensors of a run, after checking that nothing is missing or edited."""
    if not path.is_dir():
        raise RunIntegrityError(f"{path}: not a run folder (no such folder); give a run folder or a run id from `headstart runs`")
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise RunIntegrityError(f"{path}: run folder is missing {MANIFEST}; re-run `headstart adapt` to recreate it")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise RunIntegrityError(f"{mpath}: not valid JSON (was it edited?); re-run `headstart adapt`") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise RunIntegrityError(f"{mpath}: not a headstart run manifest (format {FORMAT!r} expected)")
    if manifest.get("checksum") != manifest_checksum(manifest):
        raise RunIntegrityError(f"{mpath}: edited after the run was written (checksum mismatch); restore it or re-run `headstart adapt`")
    # The checksum only shows that the manifest agrees with itself (anyone can recompute it), so
    # what it points at is checked on its own terms: plain file names inside this folder, no
    # links out of it, and the weights always among the files whose digest must match.
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise RunIntegrityError(f"{mpath}: 'files' must map file names to sha256 digests; the manifest is damaged, re-run `headstart adapt`")
    name = WEIGHTS if WEIGHTS in files else LEGACY_WEIGHTS
    if name not in files:
        raise RunIntegrityError(f"{mpath}: the manifest lists no checksum for {WEIGHTS}, so the weights cannot be verified; "
                                "re-run `headstart adapt`")
    for fname, digest in files.items():
        if not _plain_name(fname):
            raise RunIntegrityError(f"{mpath}: file entry {fname!r} is not a plain file name inside the run folder; refusing the run")
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise RunIntegrityError(f"{mpath}: file entry {fname!r} has no valid sha256 ({digest[:20]!r}); the manifest is damaged")
        f = path / fname
        if f.is_symlink():
            raise RunIntegrityError(f"{f}: a symbolic link; a run folder holds its own files, refusing the run")
        if not f.is_file():
            raise RunIntegrityError(f"{path}: run folder is missing {fname}; restore it or re-run `headstart adapt`")
        if sha256_file(f) != digest:
            raise RunIntegrityError(f"{f}: edited after the run was written (sha256 mismatch); restore it or re-run `headstart adapt`")
    try:
        return manifest, load_file(str(path / name))
    except Exception as e:  # noqa: BLE001 - a verified file safetensors cannot parse: one line, not a traceback
        raise RunIntegrityError(f"{path / name}: not a readable safetensors file ({type(e).__name__}); re-run `headstart adapt`") from None


def _plain_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and "\0" not in name \
        and not name.startswith(".") and name != MANIFEST


def validate_manifest(manifest: dict, path: Path) -> None:
    """Check the keys and types a classification run's manifest must have before anything reads
    them: one line naming the first key that is wrong, never a KeyError later."""

    def fail(key: str, want: str) -> None:
        raise RunIntegrityError(f"{path / MANIFEST}: {key} must be {want}; the manifest is damaged, re-run `headstart adapt`")

    def get(obj: dict, dotted: str, kind, want: str):
        cur = obj
        for part in dotted.split("."):
            if not isinstance(cur, dict) or part not in cur:
                fail(dotted, want)
            cur = cur[part]
        if not isinstance(cur, kind) or isinstance(cur, bool) and kind is not bool:
            fail(dotted, want)
        return cur

    run_id = get(manifest, "id", str, "a run id")
    if not _plain_name(run_id):
        fail("id", "a plain run id (no path separators)")
    for key in ("created_at", "modality", "backbone.name", "backbone.sha256", "method.name", "precision.used",
                "data.train.fingerprint", "data.test.fingerprint"):
        get(manifest, key, str, "a string")
    for key in ("backbone.spec", "method.config", "method.fit", "data.split", "metrics.test.summary"):
        get(manifest, key, dict, "an object")
    get(manifest, "seed", int, "an integer")
    if manifest.get("task", "classification") == "classification":
        classes = get(manifest, "classes", list, "a list of class names")
        if len(classes) < 2 or not all(isinstance(c, str) for c in classes) or len(set(classes)) != len(classes):
            fail("classes", "a list of at least two distinct class names")
