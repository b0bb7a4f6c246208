"""``python -m headstart``: the command line, also the form ``accelerate launch -m headstart ...`` runs.

Under a distributed launch the processes other than the main one print nothing but errors: their
standard output (the run summary the main process prints) is discarded, and progress, status
lines and warnings are silenced (:func:`headstart.train.distributed.quiet_other_ranks`, called by ``cli.main``).
"""

import sys

from .cli import main  # main() silences the other ranks first (the `headstart` script does the same)

if __name__ == "__main__":
    sys.exit(main())
