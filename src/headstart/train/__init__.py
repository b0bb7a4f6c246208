"""Training: precision selection (the gradient trainer loop arrives with the method menu)."""

from .precision import PRECISIONS, bf16_available, resolve_precision

__all__ = ["PRECISIONS", "bf16_available", "resolve_precision"]
