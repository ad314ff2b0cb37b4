"""Preprocessing steps: pure ``Volume -> (Volume, provenance record)`` transforms.

Every step is a frozen dataclass of its explicit parameters (TorchIO / MONAI style) deriving from
:class:`PreprocessStep`; calling it on a :class:`~mri_nerfstudio.volume.Volume` returns a new volume
(the input is never modified) and a JSON-ready record of what it did::

    {"step": name, "params": {...}, "estimates": {...}, "before": stats, "after": stats}

The steps live in :mod:`.register`, :mod:`.rescale` and :mod:`.equalize`; :mod:`.pipeline` chains
them and writes the records as ``provenance.json``.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.volume import Volume


def to_plain(value: Any) -> Any:
    """``value`` as plain JSON types: numpy scalars/arrays and tuples become Python numbers/lists.

    Non-finite floats become ``None`` so the result is strict JSON.
    """
    if isinstance(value, dict):
        return {str(key): to_plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(item) for item in value]
    if isinstance(value, np.ndarray):
        return to_plain(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"cannot store {type(value).__name__} in a provenance record")


def volume_stats(volume: Volume) -> dict[str, Any]:
    """JSON-ready summary of a volume: grid, and per-modality intensities inside the brain mask.

    Returns:
        ``{"shape": [X, Y, Z], "spacing_mm": [sx, sy, sz], "mask_voxels": n,
        "intensity": {modality: {"min", "max", "mean", "std"}}}``; intensity values are ``None``
        when the mask is empty.
    """
    mask = volume.brain_mask()
    intensity = {}
    for modality, array in volume.images.items():
        inside = array[mask].astype(np.float64)
        if inside.size == 0:
            intensity[modality] = dict.fromkeys(("min", "max", "mean", "std"))
            continue
        intensity[modality] = {
            "min": inside.min(),
            "max": inside.max(),
            "mean": inside.mean(),
            "std": inside.std(),
        }
    return to_plain(
        {
            "shape": volume.shape,
            "spacing_mm": volume.spacing,
            "mask_voxels": int(np.count_nonzero(mask)),
            "intensity": intensity,
        }
    )


def require_reference(volume: Volume) -> np.ndarray:
    """The reference modality's array; raises :class:`MRIInputError` when it is missing."""
    if volume.reference not in volume.images:
        raise MRIInputError(
            f"subject {volume.name!r}: reference modality {volume.reference!r} missing, "
            f"expected one of {volume.modalities}"
        )
    return volume.images[volume.reference]


@dataclasses.dataclass(frozen=True)
class PreprocessStep:
    """Base of every step. Subclasses set ``name`` and implement :meth:`apply`."""

    name: ClassVar[str] = "step"

    def params(self) -> dict[str, Any]:
        """The step's parameters as plain JSON types (stable: enters the cache hash)."""
        return to_plain(dataclasses.asdict(self))

    def apply(self, volume: Volume) -> tuple[Volume, dict[str, Any]]:
        """Transform ``volume`` without modifying it; return the result and the step's estimates."""
        raise NotImplementedError

    def describe(self, estimates: dict[str, Any]) -> str | None:
        """One line for the progress output saying what the step decided (None: nothing worth saying)."""
        return None

    def __call__(self, volume: Volume) -> tuple[Volume, dict[str, Any]]:
        before = volume_stats(volume)
        result, estimates = self.apply(volume)
        return result, {
            "step": self.name,
            "params": self.params(),
            "estimates": to_plain(estimates),
            "before": before,
            "after": volume_stats(result),
        }
