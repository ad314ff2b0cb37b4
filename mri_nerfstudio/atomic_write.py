"""Files written under a temporary name, then renamed: readers never see a half-written file."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any, Callable


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """``write(temporary path)``, then rename it onto ``path``; the temporary file is removed if ``write`` fails.

    The temporary file is hidden, in the same folder and with the same suffixes as ``path`` (writers that pick
    the format from the name still do), and its name is unique to the call, so concurrent writers of one path
    (parallel shards, distributed ranks) never write into the same file: the last rename wins whole.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp{''.join(path.suffixes)}")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, payload: Any, *, allow_nan: bool = True) -> None:
    """``payload`` as JSON text indented by 2, ending with a newline, at ``path`` (atomically; its folder is
    created when missing). ``payload`` must already be JSON types (see :func:`mri_nerfstudio.json_values.to_plain`);
    ``allow_nan=False``: a non-finite float is a ``ValueError`` instead of a bare ``NaN`` / ``Infinity``."""
    path = Path(path)
    text = json.dumps(payload, indent=2, allow_nan=allow_nan) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
