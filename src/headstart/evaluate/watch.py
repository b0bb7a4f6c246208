"""Watch: for every deployed run, notice when its base changed and run drift on the new weights.

Meant for cron or CI (`headstart watch`, exit 1 when a drift check finds a regression). A base's
identity is the sha256 of its weight files as found now (a packaged backbone after an upgrade, a
local folder that was overwritten, or a hub model: with a network ``snapshot_download`` fetches
the latest revision, so a new upload shows up as new weights). A change that was already checked
(same run, same new sha256) is not re-adapted again; its recorded verdict is reported.
"""

from __future__ import annotations

import json
from pathlib import Path

from .._util import status
from ..backbones import open_backbone
from ..catalog import BackboneSpec
from ..errors import HeadstartError
from ..runs.store import Store


def watch(*, store: str | Path | None = None, suite: str | Path | None = None, seeds: int = 0, alpha: float | None = None,
          out: str | Path | None = None, dry_run: bool = False, strict_slices: bool = False) -> list[dict]:
    """One row per deployed run: 'unchanged', 'changed' (with the drift verdict), 'checked before'
    or 'error' (with the message)."""
    from .drift import DEFAULT_ALPHA, drift

    store_obj = Store(store)
    rows = []
    for r in store_obj.deployed():
        row = {"run": r["id"], "backbone": r["backbone"], "recorded_sha256": r["backbone_sha256"]}
        try:
            manifest = json.loads((Path(r["path"]) / "manifest.json").read_text(encoding="utf-8"))
            spec = BackboneSpec.from_dict(manifest["backbone"]["spec"])
            _, now = open_backbone(spec, rehash=True)  # a deployed run's check reads every byte
        except (HeadstartError, OSError, ValueError) as e:
            rows.append({**row, "status": "error", "message": str(e)})
            continue
        row["current_sha256"] = now
        if now == r["backbone_sha256"]:
            rows.append({**row, "status": "unchanged"})
            continue
        earlier = _checked_before(store_obj, r["id"], now)
        if earlier is not None:
            rows.append({**row, "status": "checked before", "verdict": earlier["verdict"], "report": earlier["report"],
                         "new_run": earlier["new_run"]})
            continue
        if dry_run:
            rows.append({**row, "status": "changed", "verdict": None})
            continue
        status(f"run {r['id']}: base {r['backbone']} changed ({r['backbone_sha256'][:12]} -> {now[:12]}); running drift")
        try:
            result = drift(r["id"], spec.name, suite=suite, seeds=seeds, alpha=alpha or DEFAULT_ALPHA, out=out, store=store,
                           strict_slices=strict_slices)
        except HeadstartError as e:
            rows.append({**row, "status": "error", "message": str(e)})
            continue
        rows.append({**row, "status": "changed", "verdict": result.verdict, "report": str(result.report["html"].parent),
                     "new_run": result.result["new_run"]})
    return rows


def _checked_before(store_obj: Store, run_id: str, sha: str) -> dict | None:
    for d in reversed(store_obj.drifts(run_id)):
        if d["old_run"] != run_id:
            continue
        new = store_obj.find(d["new_run"])
        if new is not None and new["backbone_sha256"] == sha:
            return d
    return None
