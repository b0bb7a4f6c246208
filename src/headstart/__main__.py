"""``python -m headstart``: the command line, also the form ``accelerate launch -m headstart ...`` runs.

Under a distributed launch the processes other than the main one print nothing but errors: their
standard output (the run summary the main process prints) is discarded, and progress, status
lines and warnings are silenced (:func:`headstart.train.distributed.quiet_other_ranks`).
"""

import sys

from .train.distributed import quiet_other_ranks

if __name__ == "__main__":
    quiet_other_ranks(stdout=True)
    from .cli import main

    sys.exit(main())
