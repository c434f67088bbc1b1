"""The errors bon's library raises for the caller to report.

The CLI maps them to one line and an exit code: usage and input problems exit 2, a model
or server that failed exits 1. Library users catch `BonError` for all of them.
"""

from __future__ import annotations


class BonError(Exception):
    """Anything bon reports as one line."""


class UsageError(BonError):
    """Bad settings or arguments: one line, exit 2."""
