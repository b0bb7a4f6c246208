"""headstart: start from a pretrained model, adapt it, and notice when a new base changes things.

>>> import headstart as hs
>>> run = hs.adapt("train.csv", backbone="minilm-l6", method="linear-probe")
>>> run.predict(["where is my card?"]).labels
"""

__version__ = "0.1.0"

from .api import Run, adapt, load  # noqa: E402

__all__ = ["Run", "__version__", "adapt", "load"]
