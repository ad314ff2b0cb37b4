"""How every command-line tool reports bad input: one line on stderr, exit status 2, no traceback."""

from __future__ import annotations

import sys
from typing import Callable, TypeVar

from mri_nerfstudio.errors import MRIInputError

T = TypeVar("T")


def exit_on_input_error(function: Callable[..., T], *args, **kwargs) -> T:
    """Call ``function``; on :class:`MRIInputError` print ``error: <message>`` and exit 2."""
    try:
        return function(*args, **kwargs)
    except MRIInputError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
