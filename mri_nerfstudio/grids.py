"""Voxel grids in scanner space that a learned volume is sampled on, and the brain's iso-level on them.

A :class:`VoxelGrid` is a shape and a voxel -> RAS millimetre affine, exactly what a NIfTI file holds.
Two grids matter when a reconstruction goes back to the scanner:

- :func:`scanner_grid`: the grid of the input file itself (same shape and affine, hence the same
  orientation in any viewer);
- :func:`isotropic_grid`: the same field of view along the same axes at one spacing in every direction
  (e.g. 1 mm across 5 mm slices: the field is continuous, so it can be sampled between the slices).

:func:`sample_on_grid` evaluates any function of world points (the frame of :mod:`mri_nerfstudio.views`)
on a grid in chunks, so memory stays bounded whatever the grid size. No nerfstudio here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from skimage.filters import threshold_otsu

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.volume import Volume, resample_to_grid

POINTS_PER_CHUNK = 1 << 18
"""Grid points evaluated at once by :func:`sample_on_grid` (about 6 MB of float64 coordinates)."""


@dataclass(frozen=True)
class VoxelGrid:
    """A voxel grid in scanner space.

    Attributes:
        shape: [X, Y, Z] voxels.
        affine: [4, 4] float64 voxel index -> RAS mm (the NIfTI affine).
    """

    shape: tuple[int, int, int]
    affine: np.ndarray

    def __post_init__(self) -> None:
        shape = tuple(int(size) for size in self.shape)
        affine = np.asarray(self.affine, dtype=np.float64)
        if len(shape) != 3 or min(shape) < 1:
            raise MRIInputError(f"grid shape must be 3 positive sizes, got {self.shape}")
        if affine.shape != (4, 4) or not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            raise MRIInputError("grid affine must be a finite, invertible 4 x 4 matrix")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "affine", affine)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    def voxel_indices(self, start: int, stop: int) -> np.ndarray:
        """[stop - start, 3] int64 indices of the voxels ``start..stop-1`` in C (row-major) order."""
        return np.stack(np.unravel_index(np.arange(start, stop), self.shape), axis=-1)

    def ras_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper RAS mm corners ([3] each) of the box around the voxels' full extent
        (voxel centres +- half a voxel along each grid axis)."""
        corners = np.array(np.meshgrid(*[(-0.5, size - 0.5) for size in self.shape], indexing="ij")).reshape(3, -1).T
        ras = corners @ self.affine[:3, :3].T + self.affine[:3, 3]
        return ras.min(axis=0), ras.max(axis=0)


def scanner_grid(volume: Volume) -> VoxelGrid:
    """The grid of the file ``volume``'s reference modality came from (shape and affine as stored)."""
    return VoxelGrid(shape=tuple(volume.scanner_shape), affine=np.asarray(volume.scanner_affine))


def isotropic_grid(volume: Volume, spacing_mm: float) -> VoxelGrid:
    """The scanner grid's field of view along the scanner grid's own axes, at ``spacing_mm`` in every direction.

    Each axis keeps its direction and its extent (``size * spacing``, rounded to whole voxels of the new
    spacing); the first voxel's corner stays where the scanner grid's first corner is.
    """
    if not (math.isfinite(spacing_mm) and spacing_mm > 0):
        raise MRIInputError(f"--spacing-mm must be a positive number of millimetres, got {spacing_mm}")
    scanner = scanner_grid(volume)
    spacing = np.asarray(scanner.spacing_mm)
    shape = tuple(max(1, round(size * s / spacing_mm)) for size, s in zip(scanner.shape, spacing))
    directions = scanner.affine[:3, :3] / spacing
    corner = scanner.affine[:3, :3] @ np.full(3, -0.5) + scanner.affine[:3, 3]
    affine = np.eye(4)
    affine[:3, :3] = directions * spacing_mm
    affine[:3, 3] = corner + affine[:3, :3] @ np.full(3, 0.5)
    if math.prod(shape) > 1 << 30:
        raise MRIInputError(f"--spacing-mm {spacing_mm} gives a grid of {shape} voxels; choose a coarser spacing")
    return VoxelGrid(shape=shape, affine=affine)


def sample_on_grid(
    values_at_world: Callable[[np.ndarray], np.ndarray],
    grid: VoxelGrid,
    world_from_ras: np.ndarray,
    points_per_chunk: int = POINTS_PER_CHUNK,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Evaluate ``values_at_world`` at every voxel centre of ``grid``, one chunk of points at a time.

    Args:
        values_at_world: [P, 3] float64 world points -> [P] values.
        grid: where to sample.
        world_from_ras: [4, 4] RAS mm -> world units (the subject's scene normalisation).
        points_per_chunk: points per call of ``values_at_world``.
        progress: called with the number of points done after each chunk.

    Returns:
        [X, Y, Z] float32 on ``grid``.
    """
    if points_per_chunk < 1:
        raise MRIInputError(f"points_per_chunk must be >= 1, got {points_per_chunk}")
    world_from_voxel = np.asarray(world_from_ras, dtype=np.float64) @ grid.affine
    values = np.empty(grid.size, dtype=np.float32)
    for start in range(0, grid.size, points_per_chunk):
        stop = min(start + points_per_chunk, grid.size)
        points = grid.voxel_indices(start, stop) @ world_from_voxel[:3, :3].T + world_from_voxel[:3, 3]
        values[start:stop] = np.asarray(values_at_world(points), dtype=np.float32).reshape(-1)
        if progress is not None:
            progress(stop)
    return values.reshape(grid.shape)


def resample_onto(array: np.ndarray, affine: np.ndarray, grid: VoxelGrid, order: int) -> np.ndarray:
    """``array`` ([X, Y, Z], voxel -> RAS mm ``affine``) on ``grid``: order 1 trilinear, 0 nearest; 0 outside.

    Exact (up to rounding) where ``grid``'s voxel centres fall on ``array``'s, e.g. the scanner grid and
    the canonical grid of the same file, which differ by axis flips only.
    """
    return resample_to_grid(np.asarray(array), np.asarray(affine, dtype=np.float64), grid.shape, grid.affine, order)


def brain_level(estimate: np.ndarray) -> float:
    """The iso-level that separates the brain from empty space in a reconstruction, read from the reconstruction alone.

    Otsu's threshold (the split of a histogram into two classes with the largest between-class variance) on
    the logarithm of the estimate's positive values. The field's density in empty space is small but spread
    over orders of magnitude (a softplus density never reaches 0), while the brain's intensities (normalised
    and equalised, nearly uniform over [0, 1]) lie within about one order of magnitude: on a log scale the two
    form two modes, and Otsu's split falls in the valley between them. Values <= 0 (space the model skipped,
    outside the unit sphere, a ReLU density switched off) are left out: they say nothing about where the brain
    ends. No brain mask is read, so the level is what a reconstruction without one would use.

    Args:
        estimate: [...] float, the field's intensity estimate (density / k) on a grid.

    Returns:
        The level, > 0: the brain is ``estimate > level``.
    """
    values = np.asarray(estimate, dtype=np.float64).ravel()
    positive = values[(values > 0) & np.isfinite(values)]
    if positive.size == 0 or positive.min() == positive.max():
        raise MRIInputError("estimate: fewer than two distinct positive values, no brain level can be read from it")
    return float(np.exp(threshold_otsu(np.log(positive))))


def world_cube_grid(size: int, radius_mm: float) -> tuple[VoxelGrid, np.ndarray]:
    """A ``size``^3 grid over the world cube [-1, 1]^3, in millimetres of a brain of bounding radius ``radius_mm``.

    For a volume with no scanner geometry (a reconstruction from a view image alone): RAS axes, origin
    at the brain's centre. Returns the grid and its RAS mm -> world transform [4, 4].
    """
    if size < 2 or not (math.isfinite(radius_mm) and radius_mm > 0):
        raise MRIInputError(f"cube grid: size must be >= 2 and radius > 0 mm, got {size}, {radius_mm}")
    spacing = 2.0 * radius_mm / size
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = -radius_mm + spacing / 2
    return VoxelGrid((size, size, size), affine), np.diag([1 / radius_mm] * 3 + [1.0])
