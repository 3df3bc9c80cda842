"""Errors a person can act on: each message is one line naming the file, key or value and what to do.

The CLI prints `str(error)` of any `LatentspaceError` and exits non-zero, without a traceback.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataError",
    "LatentspaceError",
    "RunError",
    "StorageError",
    "TrainingDiverged",
]


class LatentspaceError(ValueError):
    """Base class of every error latentspace reports to a user."""


class ConfigError(LatentspaceError):
    """A configuration key or value that cannot be used."""


class DataError(LatentspaceError):
    """A dataset that is missing, unreadable or of the wrong shape."""


class RunError(LatentspaceError):
    """A run directory that is missing, truncated or does not match its config."""


class StorageError(LatentspaceError):
    """A file that cannot be written: a read-only folder, a full disk, a missing permission."""


class TrainingDiverged(LatentspaceError):
    """The loss became NaN or infinite; the run keeps its last good state."""
