"""Errors that reach the user as one line (the CLI prints ``error: <message>``).

Every check on user input raises one of these with a message that names the
bad value or file, so no mistake surfaces as a traceback deep inside torch.
"""

from __future__ import annotations


class SelfsupError(Exception):
    """Base class: a user-facing problem, shown without a traceback."""


class ConfigError(SelfsupError, ValueError):
    """A configuration key, type or value is wrong."""


class DataError(SelfsupError, OSError):
    """A data file or folder is missing, unreadable, corrupt or fails its checksum."""


class TrainingError(SelfsupError, RuntimeError):
    """Training cannot go on (e.g. the loss became NaN or inf)."""


def read_text_file(path, what: str) -> str:
    """The text of a user's file; a ConfigError naming it when it is binary, not ``what``."""
    try:
        return path.read_text()
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file ({what})") from None
