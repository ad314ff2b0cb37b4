"""Files written under a temporary name, then renamed: readers never see a half-written file."""

from __future__ import annotations

from pathlib import Path
from typing import Callable


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """``write(temporary path)`` (same folder and suffix as ``path``), then rename it onto ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{''.join(path.suffixes)}")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
