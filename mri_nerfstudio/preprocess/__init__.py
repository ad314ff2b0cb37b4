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
from typing import Any, ClassVar

import numpy as np

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.json_values import to_plain
from mri_nerfstudio.volume import Volume


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
