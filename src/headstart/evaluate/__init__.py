"""Metrics (and, later, suites, gates, statistics and drift)."""

from .metrics import HIGHER_IS_BETTER, PRIMARY_METRIC, classification_metrics

__all__ = ["HIGHER_IS_BETTER", "PRIMARY_METRIC", "classification_metrics"]
