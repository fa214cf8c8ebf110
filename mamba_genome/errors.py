"""User-facing errors.

Anything a user can cause (a bad file, an unknown contig, a wrong flag) raises
:class:`UserError` with a one-line message that says what is wrong, where, and
what to do. The CLI prints it as ``error: <message>`` and exits with status 1,
with no traceback unless ``--debug`` is given. Programming errors stay ordinary
exceptions.
"""
from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input or environment, reported in one line."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class InputFileError(UserError):
    """A file is missing, unreadable, empty, truncated or malformed."""


class RegionError(UserError):
    """An unknown contig or an out-of-range / empty region."""


class CheckpointError(UserError):
    """A model or run directory is missing files or is not what was expected."""


class RunInterrupted(UserError):
    """A training run stopped by SIGINT/SIGTERM, after saving a resumable checkpoint.

    The CLI prints the message as it is (it is a note, not an error) and exits
    with ``128 + signal number``: 130 for SIGINT, 143 for SIGTERM.
    """

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = int(signum)
        self.exit_code = 128 + int(signum)
