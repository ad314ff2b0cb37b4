"""The one exception type for bad user input.

Every loader, preprocessing step and CLI raises :class:`MRIInputError` for input it cannot use; the
CLIs print its message on one line and exit with status 2, never a traceback.
"""

from __future__ import annotations

from pathlib import Path


class MRIInputError(ValueError):
    """Input the tool cannot use: the message names the file, the field and what was expected."""

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else Path(path)
        super().__init__(f"{self.path}: {message}" if self.path is not None else message)
