"""The errors bon's library raises for the caller to report.

The CLI maps them to one line and an exit code: usage and input problems exit 2, a model
or server that failed exits 1. Library users catch `BonError` for all of them.
"""

from __future__ import annotations


class BonError(Exception):
    """Anything bon reports as one line."""


class UsageError(BonError):
    """Bad settings or arguments: one line, exit 2."""


class OutputError(BonError):
    """A file bon writes could not be written: a full disk, a file-size limit, a read-only or
    vanished directory. One line naming the file (exit 1); what was written before stays whole."""

    resume_command: str | None = None  # set by the command line: how to continue the run

    def __init__(self, error: OSError, path: object):
        reason = (error.strerror or str(error)).lower()
        super().__init__(f"{reason} writing {path}")
        self.errno, self.path = error.errno, path
