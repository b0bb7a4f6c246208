"""Errors the user can act on.

Every error raised for bad input is a :class:`BadInput`: its message is one line that names the
file, row, column or option at fault and says what to do. The CLI prints it without a traceback
and exits with :attr:`HeadstartError.exit_code`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class HeadstartError(Exception):
    """Base class of the errors headstart raises on purpose."""

    exit_code = 2


class BadInput(HeadstartError):
    """The user's data, option or file cannot be used as given (exit code 2)."""

    exit_code = 2


class BackboneUnavailable(BadInput):
    """A backbone was named correctly but cannot be loaded here (not installed, offline...)."""


class RunIntegrityError(BadInput):
    """A run folder is incomplete or was edited after it was written."""


class WriteFailed(BadInput):
    """The disk refused a write (full, read-only) after the work was done: what can be resumed is kept."""


class CheckFailed(HeadstartError):
    """A quality check asked for by the user failed (exit code 1)."""

    exit_code = 1


def did_you_mean(name: str, options: Iterable[str]) -> str:
    """Return ' Did you mean X?' for the closest option, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(options), n=3, cutoff=0.5)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"
