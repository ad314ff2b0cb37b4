"""Intensity steps: percentile normalisation to [0, 1] and histogram equalisation, inside the brain.

Both compute their statistics on brain-mask voxels only (the background would otherwise dominate
every histogram) and set the background to exactly 0. Both make the brain mask explicit in their
output, so a later step sees the same brain even where normalisation maps brain voxels to 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.preprocess import PreprocessStep
from mri_nerfstudio.volume import Volume


def _nonempty_mask(volume: Volume) -> np.ndarray:
    mask = volume.brain_mask()
    if not mask.any():
        raise MRIInputError(f"subject {volume.name!r}: brain mask is empty, expected at least one brain voxel")
    return mask


def equalize_levels(levels: np.ndarray, count: int) -> np.ndarray:
    """Histogram-equalisation transfer function T of quantised intensities.

    T(r_k) = round((L - 1) * C(r_k)), with C(r_k) the fraction of ``levels`` that are <= r_k and
    halves rounded up.

    Args:
        levels: [N] int, intensities quantised to 0 ... ``count`` - 1 (the brain voxels).
        count: number of levels L.

    Returns:
        [L] int64: T for every level.
    """
    cumulative = np.cumsum(np.bincount(levels, minlength=count)) / levels.size
    return np.floor((count - 1) * cumulative + 0.5).astype(np.int64)


@dataclass(frozen=True)
class NormalizePercentiles(PreprocessStep):
    """Clip each modality to its [low, high] percentiles inside the brain and scale to [0, 1]."""

    name = "normalize_percentiles"

    low: float = 0.5
    high: float = 99.5
    """Percentiles (0 ... 100) of the brain-mask intensities mapped to 0 and 1."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.low < self.high <= 100.0:
            raise MRIInputError(
                f"percentiles must satisfy 0 <= low < high <= 100, got low={self.low}, high={self.high}"
            )

    def apply(self, volume: Volume) -> tuple[Volume, dict[str, Any]]:
        mask = _nonempty_mask(volume)
        images, estimates = {}, {}
        for modality, array in volume.images.items():
            inside = array[mask]
            if not np.isfinite(inside).all():
                raise MRIInputError(
                    f"modality {modality!r} has NaN or infinite values inside the brain mask, expected finite values",
                    path=volume.sources.get(modality),
                )
            low, high = np.percentile(inside, [self.low, self.high])
            if not high > low:
                raise MRIInputError(
                    f"modality {modality!r} is constant ({low}) inside the brain mask, expected contrast",
                    path=volume.sources.get(modality),
                )
            scaled = np.clip((array.astype(np.float64) - low) / (high - low), 0.0, 1.0)
            images[modality] = np.where(mask, scaled, 0.0).astype(np.float32)
            estimates[modality] = {"low_value": low, "high_value": high}
        return volume.replace(images=images, mask=mask), estimates


@dataclass(frozen=True)
class EqualizeHistogram(PreprocessStep):
    """Histogram equalisation of each modality inside the brain mask (input in [0, 1]).

    r = round(x * (L - 1)), output T(r) / (L - 1) as float32 in [0, 1] (see :func:`equalize_levels`);
    background voxels stay exactly 0. The transfer function of each modality is recorded.
    """

    name = "equalize_histogram"

    levels: int = 256

    def __post_init__(self) -> None:
        if self.levels < 2:
            raise MRIInputError(f"levels must be >= 2, got {self.levels}")

    def apply(self, volume: Volume) -> tuple[Volume, dict[str, Any]]:
        mask = _nonempty_mask(volume)
        top = self.levels - 1
        images, estimates = {}, {}
        for modality, array in volume.images.items():
            inside = array[mask]
            if inside.min() < 0.0 or inside.max() > 1.0:
                raise MRIInputError(
                    f"modality {modality!r} has brain intensities in [{inside.min()}, {inside.max()}], "
                    "expected [0, 1] (normalise first)",
                    path=volume.sources.get(modality),
                )
            levels = np.floor(inside.astype(np.float64) * top + 0.5).astype(np.int64)
            transfer = equalize_levels(levels, self.levels)
            equalized = np.zeros(array.shape, dtype=np.float32)
            equalized[mask] = transfer[levels] / top
            images[modality] = equalized
            estimates[modality] = {"transfer": transfer}
        return volume.replace(images=images, mask=mask), estimates
