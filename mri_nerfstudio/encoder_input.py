"""What the slice encoder sees of a subject: its modalities on a fixed working grid of the world frame.

A prepared subject's volume has any shape, any slice thickness and any subset of the BraTS modalities.
:func:`encoder_input` resamples it onto a ``G x G x G`` grid spanning the world cube ``[-1, 1]^3`` (the
frame of the views: brain centred in the unit sphere, +Z superior), one channel per BraTS modality in
:data:`~mri_nerfstudio.volume.MODALITIES` order, the slice axis first. Before sampling, each axis is
box-averaged over the voxels that fall in one working cell, so thin slices are pooled rather than
aliased and thick slices are interpolated.

Fill rule for missing modalities: the channel is zeros and its ``present`` flag is 0; the encoder sees
the flags, so subjects with different modality sets can be trained together.

The result is cached next to the prepared subject (``encoder_input_G.npz``, written to a temporary name
then renamed), so every subject is resampled once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mri_nerfstudio.atomic_write import write_atomically
from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.volume import MODALITIES, Volume

DEFAULT_GRID_SIZE = 32


@dataclass(frozen=True)
class EncoderInput:
    """One subject on the working grid.

    Attributes:
        scans: [C, G, G, G] float32, C = len(MODALITIES); axes (world z = slice, world x, world y);
            intensities as prepared (in [0, 1] inside the brain), zeros where a modality is missing.
        present: [C] float32, 1 for the modalities the subject has.
        spacing_mm: [3] float32, voxel size (x, y, z) of the subject's file as acquired (slice
            thickness included), before any resampling.
    """

    scans: np.ndarray
    present: np.ndarray
    spacing_mm: np.ndarray

    @property
    def grid_size(self) -> int:
        return int(self.scans.shape[-1])


def working_grid_points(grid_size: int) -> np.ndarray:
    """World coordinates of the working grid's cell centres: [G, G, G, 3] float64, indexed (z, x, y) -> (x, y, z)."""
    centres = (np.arange(grid_size) + 0.5) / grid_size * 2.0 - 1.0
    z, x, y = np.meshgrid(centres, centres, centres, indexing="ij")
    return np.stack([x, y, z], axis=-1)


def resample_to_working_grid(image: np.ndarray, world_from_voxel: np.ndarray, grid_size: int) -> np.ndarray:
    """One 3D image sampled at the working grid's cell centres (trilinear, zero outside the image).

    Args:
        image: [X, Y, Z] float array on its voxel grid.
        world_from_voxel: [4, 4] voxel index -> world units.
        grid_size: G.

    Returns:
        [G, G, G] float32, axes (world z, world x, world y).
    """
    cell_world = 2.0 / grid_size
    voxel_world = np.linalg.norm(world_from_voxel[:3, :3], axis=0)  # world units per voxel step, per axis
    pool = tuple(max(1, int(cell_world / size)) for size in voxel_world)
    volume = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    if any(p > 1 for p in pool):
        volume = F.avg_pool3d(volume, kernel_size=pool, stride=pool, ceil_mode=True)
    voxel_from_world = np.linalg.inv(world_from_voxel)
    points = working_grid_points(grid_size).reshape(-1, 3)
    voxels = points @ voxel_from_world[:3, :3].T + voxel_from_world[:3, 3]  # original voxel indices
    voxels = (voxels + 0.5) / np.asarray(pool) - 0.5  # pooled voxel indices (pool centres)
    pooled_shape = np.asarray(volume.shape[2:], dtype=np.float64)
    normalised = voxels / np.maximum(pooled_shape - 1, 1) * 2.0 - 1.0  # align_corners=True convention
    grid = torch.from_numpy(normalised[:, ::-1].copy()).float().reshape(1, 1, 1, -1, 3)  # grid_sample wants (z, y, x)
    sampled = F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return sampled.reshape(grid_size, grid_size, grid_size).numpy()


def encoder_input(volume: Volume, world_from_voxel: np.ndarray, grid_size: int = DEFAULT_GRID_SIZE) -> EncoderInput:
    """A preprocessed volume as the encoder's input (see the module docstring).

    Args:
        volume: preprocessed subject; modalities outside :data:`MODALITIES` are an error.
        world_from_voxel: [4, 4] voxel index of ``volume`` -> world units.
        grid_size: G, cells per axis of the working grid (>= 8).
    """
    if grid_size < 8:
        raise MRIInputError(f"encoder grid_size must be >= 8, got {grid_size}")
    unknown = sorted(set(volume.modalities) - set(MODALITIES))
    if unknown:
        raise MRIInputError(
            f"subject {volume.name}: modalities {unknown} are not BraTS modalities; expected a subset of {MODALITIES}"
        )
    scans = np.zeros((len(MODALITIES), grid_size, grid_size, grid_size), dtype=np.float32)
    present = np.zeros(len(MODALITIES), dtype=np.float32)
    for channel, modality in enumerate(MODALITIES):
        if modality in volume.images:
            scans[channel] = resample_to_working_grid(volume.images[modality], world_from_voxel, grid_size)
            present[channel] = 1.0
    spacing = np.linalg.norm(np.asarray(volume.scanner_affine)[:3, :3], axis=0).astype(np.float32)
    return EncoderInput(scans=scans, present=present, spacing_mm=spacing)


def cached_encoder_input(
    directory: Path, volume: Volume, world_from_voxel: np.ndarray, grid_size: int = DEFAULT_GRID_SIZE
) -> EncoderInput:
    """:func:`encoder_input`, read from / written to ``directory/encoder_input_G.npz`` (a prepared subject's folder)."""
    path = Path(directory) / f"encoder_input_{grid_size}.npz"
    if path.is_file():
        with np.load(path) as stored:
            return EncoderInput(scans=stored["scans"], present=stored["present"], spacing_mm=stored["spacing_mm"])
    result = encoder_input(volume, world_from_voxel, grid_size)
    write_atomically(
        path, lambda tmp: np.savez(tmp, scans=result.scans, present=result.present, spacing_mm=result.spacing_mm)
    )
    return result
