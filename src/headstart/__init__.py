"""headstart: start from a pretrained model, adapt it, and notice when a new base changes things.

>>> import headstart as hs
>>> run = hs.adapt("train.csv", backbone="minilm-l6", method="lora")
>>> run.predict(["where is my card?"]).labels
>>> table = hs.compare("train.csv", methods=["linear-probe", "lora", "finetune"])
>>> hs.export(run, "my-model/", merge=True)
"""

__version__ = "0.2.0"

from .api import Run, adapt, load  # noqa: E402
from .compare import compare  # noqa: E402
from .export import export_run as export  # noqa: E402

__all__ = ["Run", "__version__", "adapt", "compare", "export", "load"]
