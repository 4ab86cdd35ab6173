"""The one exception type users see.

Every error that bad input can cause (a missing or corrupt file, an unknown key, an
out-of-range value) is raised as :class:`InvTransferError` with a one-paragraph message naming
the file, key or value and what was expected. The CLI prints the message and exits with
status 2, without a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class InvTransferError(Exception):
    """A user-facing error: the message says what was wrong and what was expected."""


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return ' Did you mean X?' for the closest choice, or '' if none is close."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=3, cutoff=0.5)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
