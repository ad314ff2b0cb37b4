"""How every command-line tool reports bad input and warnings: one line each on stderr, no traceback."""

from __future__ import annotations

import sys
import warnings
from typing import Callable, TypeVar

from mri_nerfstudio.errors import MRIInputError

T = TypeVar("T")


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr if file is None else file, flush=True)


def exit_on_input_error(function: Callable[..., T], *args, **kwargs) -> T:
    """Call ``function``; warnings print as ``warning: <message>``; on :class:`MRIInputError` print
    ``error: <message>`` and exit 2."""
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warning_line
            return function(*args, **kwargs)
    except MRIInputError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
