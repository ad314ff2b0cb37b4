"""Grid changes: in-plane bicubic up-sampling and through-plane resampling of thick-slice stacks.

The slice (thick) axis is read from the voxel spacing (:func:`thick_axis`), so sagittal, coronal and
axial stacks are handled alike on the canonical RAS grid. Every step keeps the pixel-centred
convention: a grid of n voxels of size s covers n * s mm, and voxel centres move so that the
physical extent (integer factors) or the centre (any spacing) is kept. Interpolation uses Keys'
cubic convolution kernel (a = -0.5, exact for quadratics) with edges replicated, as in the bicubic
up-sampling of the reference method.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.preprocess import PreprocessStep
from mri_nerfstudio.volume import Volume

KEYS_A = -0.5
"""Free parameter of Keys' kernel; -0.5 makes cubic convolution third-order accurate."""

SPACING_RTOL = 1e-3
"""Voxel sizes within this relative tolerance of each other count as equal."""

AXIS_ORIENTATIONS: tuple[dict[str, str], ...] = (
    {"direction": "R-L", "slices": "sagittal"},
    {"direction": "A-P", "slices": "coronal"},
    {"direction": "S-I", "slices": "axial"},
)
"""Array axis i of the canonical RAS grid: the direction it runs along, and the slices stacked along it."""


def thick_axis(spacing_mm: Sequence[float]) -> tuple[int, float]:
    """The slice axis of a grid (its largest voxel size) and the grid's anisotropy.

    Args:
        spacing_mm: voxel size along the three array axes [X, Y, Z], mm.

    Returns:
        ``(axis, ratio)``: the axis with the largest spacing (among equal ones the last, so an
        isotropic grid keeps the axial convention, axis 2) and largest / smallest spacing (>= 1).
    """
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or not np.all(spacing > 0):
        raise MRIInputError(f"spacing_mm: expected three finite voxel sizes > 0 mm, got {spacing_mm!r}")
    largest = spacing.max()
    axis = int(np.flatnonzero(spacing >= largest * (1.0 - SPACING_RTOL))[-1])
    return axis, float(largest / spacing.min())


def describe_axis(axis: int) -> dict[str, Any]:
    """``{"index", "direction", "slices"}`` of a slice axis of the canonical RAS grid, for provenance."""
    return {"index": axis, **AXIS_ORIENTATIONS[axis]}


def in_plane_axes(axis: int) -> tuple[int, int]:
    """The two array axes of the slices stacked along ``axis``."""
    first, second = (i for i in range(3) if i != axis)
    return first, second


def keys_kernel(distance: np.ndarray, a: float = KEYS_A) -> np.ndarray:
    """Keys' cubic convolution kernel W(d), zero for |d| >= 2 (d in voxels)."""
    d = np.abs(np.asarray(distance, dtype=np.float64))
    inner = (a + 2.0) * d**3 - (a + 3.0) * d**2 + 1.0
    outer = a * d**3 - 5.0 * a * d**2 + 8.0 * a * d - 4.0 * a
    return np.where(d <= 1.0, inner, np.where(d < 2.0, outer, 0.0))


def cubic_weights(fraction: np.ndarray) -> np.ndarray:
    """[..., 4] weights of the samples at floor(u) - 1 ... floor(u) + 2 for ``fraction = u - floor(u)``."""
    t = np.asarray(fraction, dtype=np.float64)[..., None]
    return keys_kernel(np.concatenate([1.0 + t, t, 1.0 - t, 2.0 - t], axis=-1))


def upsample_bicubic(array: np.ndarray, factor: int, axes: tuple[int, ...] = (0, 1)) -> np.ndarray:
    """Bicubic (cubic convolution) up-sampling by an integer factor along ``axes``, separably.

    Output voxel i' along an up-sampled axis lies at input coordinate (i' + 0.5) / factor - 0.5
    (same physical extent); it is the weighted sum of the 4 nearest input voxels along that axis,
    so of a 4 x 4 neighbourhood in-plane. The fractional offsets repeat with period ``factor``, so
    the weights are computed once per phase.

    Args:
        array: [X, Y, Z] (any number of dimensions) values.
        factor: integer up-sampling factor >= 1.
        axes: axes to up-sample.

    Returns:
        float32 array, each axis in ``axes`` ``factor`` times longer.
    """
    if int(factor) != factor or factor < 1:
        raise MRIInputError(f"up-sampling factor must be an integer >= 1, got {factor}")
    result = np.asarray(array, dtype=np.float32)
    for axis in axes:
        result = _upsample_axis(result, int(factor), axis)
    return result


def _upsample_axis(array: np.ndarray, factor: int, axis: int) -> np.ndarray:
    """:func:`upsample_bicubic` along one axis."""
    offsets = (np.arange(factor) + 0.5) / factor - 0.5  # phase p -> offset from its input voxel
    starts = np.floor(offsets).astype(int)
    weights = cubic_weights(offsets - starts)  # [factor, 4]
    moved = np.moveaxis(array, axis, 0)
    count = moved.shape[0]
    padded = np.pad(moved, [(2, 2)] + [(0, 0)] * (moved.ndim - 1), mode="edge")
    result = np.empty((count, factor) + moved.shape[1:], dtype=np.float32)
    for phase in range(factor):
        first = 1 + starts[phase]  # padded index of the first tap for output voxel (0, phase)
        result[:, phase] = sum(
            weights[phase, tap] * padded[first + tap : first + tap + count].astype(np.float64) for tap in range(4)
        )
    return np.moveaxis(result.reshape((count * factor,) + moved.shape[1:]), 0, axis)


def interpolate_axis(
    array: np.ndarray, positions: np.ndarray, axis: int, order: Literal["cubic", "linear", "nearest"]
) -> np.ndarray:
    """Values of ``array`` at fractional voxel ``positions`` [M] along ``axis`` (edges replicated).

    ``cubic`` is Keys' cubic convolution, ``nearest`` keeps the dtype (for label maps and masks);
    the others return float32.
    """
    moved = np.moveaxis(array, axis, 0)
    count = moved.shape[0]
    positions = np.asarray(positions, dtype=np.float64)
    if order == "nearest":
        index = np.clip(np.floor(positions + 0.5).astype(int), 0, count - 1)
        return np.moveaxis(moved[index], 0, axis)
    start = np.floor(positions).astype(int)
    fraction = positions - start
    if order == "cubic":
        weights, first = cubic_weights(fraction), start - 1
    elif order == "linear":
        weights, first = np.stack([1.0 - fraction, fraction], axis=-1), start
    else:
        raise MRIInputError(f"interpolation order must be 'cubic', 'linear' or 'nearest', got {order!r}")
    broadcast = (-1,) + (1,) * (moved.ndim - 1)
    result = np.zeros((len(positions),) + moved.shape[1:], dtype=np.float64)
    for tap in range(weights.shape[1]):
        result += weights[:, tap].reshape(broadcast) * moved[np.clip(first + tap, 0, count - 1)]
    return np.moveaxis(result.astype(np.float32), 0, axis)


def upsampled_affine(affine: np.ndarray, factor: int, axes: tuple[int, ...]) -> np.ndarray:
    """[4, 4] voxel -> RAS mm affine of the grid :func:`upsample_bicubic` returns.

    Spacing / factor along ``axes``; the first voxel centre moves by half the spacing difference, so
    the physical extent is the same.
    """
    index_map = np.eye(4)  # new voxel index -> old voxel index
    for axis in axes:
        index_map[axis, axis] = 1.0 / factor
        index_map[axis, 3] = 0.5 / factor - 0.5
    return np.asarray(affine, dtype=np.float64) @ index_map


@dataclass(frozen=True)
class UpsampleInPlane(PreprocessStep):
    """Bicubic in-plane up-sampling of every modality; label map and brain mask by replication."""

    name = "upsample_in_plane"

    factor: int = 2
    axes: tuple[int, ...] | None = None
    """Axes of the [X, Y, Z] arrays to up-sample; ``None``: the two in-plane axes of the volume's
    slice axis (:func:`thick_axis`), e.g. X and Y for axial slices."""

    def __post_init__(self) -> None:
        if int(self.factor) != self.factor or self.factor < 1:
            raise MRIInputError(f"factor must be an integer >= 1, got {self.factor}")
        if self.axes is not None and not set(self.axes) <= {0, 1, 2}:
            raise MRIInputError(f"axes must be None or among 0, 1, 2, got {self.axes}")

    def apply(self, volume: Volume) -> tuple[Volume, dict[str, Any]]:
        axes = in_plane_axes(thick_axis(volume.spacing)[0]) if self.axes is None else tuple(self.axes)
        images = {m: upsample_bicubic(array, self.factor, axes) for m, array in volume.images.items()}
        affine = upsampled_affine(volume.affine, self.factor, axes)
        result = volume.replace(
            images=images,
            affine=affine,
            seg=None if volume.seg is None else self._replicate(volume.seg, axes),
            mask=None if volume.mask is None else self._replicate(volume.mask, axes),
        )
        slice_axes = set(range(3)) - set(axes)
        return result, {
            "axes": axes,
            "thick_axis": describe_axis(slice_axes.pop()) if len(slice_axes) == 1 else None,
            "affine_before": volume.affine,
            "affine_after": affine,
        }

    def _replicate(self, labels: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
        """Nearest-neighbour up-sampling: output voxel i' takes input voxel i' // factor."""
        for axis in axes:
            labels = np.repeat(labels, self.factor, axis=axis)
        return labels


@dataclass(frozen=True)
class ResampleThroughPlane(PreprocessStep):
    """Interpolate thick slices to ``target_spacing_mm`` along one axis, keeping the grid's centre.

    The new slice count is round(n * spacing / target); images use ``order``, the label map and the
    brain mask nearest neighbour.
    """

    name = "resample_through_plane"

    target_spacing_mm: float = 1.0
    axis: int | None = None
    """Slice axis of the [X, Y, Z] arrays (2: axial slices); ``None``: the volume's largest spacing
    (:func:`thick_axis`)."""
    order: Literal["cubic", "linear"] = "cubic"

    def __post_init__(self) -> None:
        if not self.target_spacing_mm > 0:
            raise MRIInputError(f"target_spacing_mm must be > 0 mm, got {self.target_spacing_mm}")
        if self.axis is not None and self.axis not in (0, 1, 2):
            raise MRIInputError(f"axis must be None, 0, 1 or 2, got {self.axis}")
        if self.order not in ("cubic", "linear"):
            raise MRIInputError(f"order must be 'cubic' or 'linear', got {self.order!r}")

    def apply(self, volume: Volume) -> tuple[Volume, dict[str, Any]]:
        axis = thick_axis(volume.spacing)[0] if self.axis is None else self.axis
        count = volume.shape[axis]
        ratio = self.target_spacing_mm / volume.spacing[axis]  # new voxel size in old voxels
        new_count = max(1, int(round(count / ratio)))
        offset = (count - 1) / 2 - (new_count - 1) / 2 * ratio
        positions = offset + ratio * np.arange(new_count)
        index_map = np.eye(4)  # new voxel index -> old voxel index
        index_map[axis, axis] = ratio
        index_map[axis, 3] = offset
        affine = volume.affine @ index_map

        images = {m: interpolate_axis(a, positions, axis, self.order) for m, a in volume.images.items()}
        seg = None if volume.seg is None else interpolate_axis(volume.seg, positions, axis, "nearest")
        mask = None if volume.mask is None else interpolate_axis(volume.mask, positions, axis, "nearest")
        result = volume.replace(images=images, affine=affine, seg=seg, mask=mask)
        return result, {
            "thick_axis": describe_axis(axis),
            "slices_before": count,
            "slices_after": new_count,
            "affine_before": volume.affine,
            "affine_after": affine,
        }


def upsampling_factor(spacing_mm: float, target_spacing_mm: float) -> int:
    """Integer in-plane up-sampling factor that brings ``spacing_mm`` closest to the target (>= 1).

    Rounds half up (1.5 mm to a 1 mm target: factor 2), so the factor only grows with the spacing.
    """
    return max(1, math.floor(spacing_mm / target_spacing_mm + 0.5))


@dataclass(frozen=True)
class ResampleAnisotropic(PreprocessStep):
    """Bring a thick-slice stack towards ``target_spacing_mm``, whatever its slice axis.

    When the grid's largest / smallest spacing exceeds ``min_ratio``: each in-plane axis is
    up-sampled (bicubic, :class:`UpsampleInPlane`) by its own integer factor round(spacing /
    target) (:func:`upsampling_factor`) when that factor is >= 2, then the slice axis is interpolated (cubic,
    :class:`ResampleThroughPlane`) to ``target_spacing_mm`` when its slices are thicker than that.
    In-plane spacings finer than the target are kept as they are (a 0.5 x 0.5 x 6.5 mm stack
    becomes 0.5 x 0.5 x 1 mm, not 0.5 mm isotropic). Otherwise the volume passes unchanged.
    The label map and brain mask follow by nearest neighbour. The decision is recorded either way.
    """

    name = "resample_anisotropic"

    target_spacing_mm: float = 1.0
    min_ratio: float = 2.0
    """Resample only when largest / smallest spacing is above this."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.target_spacing_mm) and self.target_spacing_mm > 0):
            raise MRIInputError(f"target_spacing_mm must be a finite size > 0 mm, got {self.target_spacing_mm}")
        if not (math.isfinite(self.min_ratio) and self.min_ratio >= 1):
            raise MRIInputError(f"min_ratio must be a finite spacing ratio >= 1, got {self.min_ratio}")

    def apply(self, volume: Volume) -> tuple[Volume, dict[str, Any]]:
        spacing = volume.spacing
        axis, ratio = thick_axis(spacing)
        axes = in_plane_axes(axis)
        anisotropic = ratio > self.min_ratio
        factors = [upsampling_factor(spacing[i], self.target_spacing_mm) if anisotropic else 1 for i in axes]
        result = volume
        for in_plane_axis, factor in zip(axes, factors):
            if factor >= 2:
                result, _ = UpsampleInPlane(factor=factor, axes=(in_plane_axis,)).apply(result)
        if anisotropic and spacing[axis] > self.target_spacing_mm:
            result, _ = ResampleThroughPlane(self.target_spacing_mm, axis=axis, order="cubic").apply(result)
        return result, {
            "resampled": result is not volume,
            "ratio": ratio,
            "thick_axis": describe_axis(axis),
            "in_plane_axes": axes,
            "in_plane_factors": factors,
            "spacing_before_mm": spacing,
            "spacing_after_mm": result.spacing,
            "slices_before": volume.shape[axis],
            "slices_after": result.shape[axis],
            "affine_before": volume.affine,
            "affine_after": result.affine,
        }

    def describe(self, estimates: dict[str, Any]) -> str | None:
        before = " x ".join(f"{s:.3g}" for s in estimates["spacing_before_mm"])
        if not estimates["resampled"]:
            ratio = estimates["ratio"]
            if ratio <= self.min_ratio:
                return f"grid kept: {before} mm (spacing ratio {ratio:.2f} <= {self.min_ratio:g})"
            return f"grid kept: {before} mm (slices already at most {self.target_spacing_mm:g} mm)"
        after = " x ".join(f"{s:.3g}" for s in estimates["spacing_after_mm"])
        axis = estimates["thick_axis"]
        return (
            f"{axis['slices']} thick slices ({axis['direction']}) resampled: {before} mm -> {after} mm, "
            f"{estimates['slices_before']} -> {estimates['slices_after']} slices"
        )
