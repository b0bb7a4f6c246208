"""Bring the store and the run folders back into agreement after a crash.

A run is written as a folder (renamed into place whole) and then recorded as a store row. A
process killed between the two leaves a complete run the store does not know, and a process
killed during the folder write leaves a ``.tmp-RUN-PID`` folder. :func:`repair` adopts the first
(after checking its manifest and every file's sha256, as loading it would) and removes the second
once the process that wrote it is gone; a folder that fails the checks is reported, never adopted
and never deleted.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RunIntegrityError
from .run import MANIFEST, read_run_folder, validate_manifest
from .store import Store

_TMP = re.compile(r"^\.tmp-.+-(\d+)$")


@dataclass
class RepairReport:
    adopted: list[str] = field(default_factory=list)
    """Run ids recorded now from folders the store did not list."""
    refused: list[tuple[str, str]] = field(default_factory=list)
    """(folder, reason) of run-like folders that failed their checks (left untouched)."""
    removed_tmp: list[str] = field(default_factory=list)
    """Leftover temporary folders of dead writers, removed."""

    def to_dict(self) -> dict:
        return {"adopted": self.adopted, "refused": [{"folder": f, "reason": r} for f, r in self.refused],
                "removed_tmp": self.removed_tmp}


def adopt(store: Store, folder: Path) -> dict:
    """Record the verified run ``folder`` in ``store`` (if not there already); returns its manifest."""
    manifest, _ = read_run_folder(folder)
    validate_manifest(manifest, folder)
    if manifest["id"] != folder.name:
        raise RunIntegrityError(f"{folder}: the manifest names run {manifest['id']!r}, not the folder's name; "
                                "rename the folder back to its run id")
    if store.find(manifest["id"]) is None:
        store.add_run(manifest, folder, manifest["checksum"])
    return manifest


def repair(store: Store, roots: list[Path]) -> RepairReport:
    """Adopt complete, verified run folders under ``roots`` that ``store`` has no row for, and
    remove temporary folders left by writers that are no longer running."""
    report = RepairReport()
    known = store.ids()
    for root in roots:
        if not root.is_dir():
            continue
        report.removed_tmp += remove_stale_tmp(root)
        for child in sorted(root.iterdir()):
            if child.name.startswith(".") or child.name in known or not (child / MANIFEST).is_file():
                continue
            try:
                adopt(store, child)
            except RunIntegrityError as e:
                report.refused.append((str(child), str(e)))
                continue
            report.adopted.append(child.name)
    return report


def remove_stale_tmp(root: Path) -> list[str]:
    """Remove ``root/.tmp-*`` folders whose writer process has exited (a kill during the final
    write); returns the folders removed."""
    removed = []
    for child in sorted(root.iterdir()) if root.is_dir() else []:
        m = _TMP.match(child.name)
        if m and child.is_dir() and not _alive(int(m.group(1))):
            shutil.rmtree(child, ignore_errors=True)
            removed.append(str(child))
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


__all__ = ["RepairReport", "adopt", "remove_stale_tmp", "repair"]
