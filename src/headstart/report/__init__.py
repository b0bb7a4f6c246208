"""Reports: Markdown and self-contained HTML."""

from __future__ import annotations

from .drift import write_drift_report

__all__ = ["write_drift_report"]
