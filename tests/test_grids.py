"""Scanner and isotropic grids, chunked sampling on them, and the brain threshold that matches a mask."""

from __future__ import annotations

import numpy as np
import pytest

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.grids import (
    VoxelGrid,
    best_dice_threshold,
    isotropic_grid,
    resample_onto,
    sample_on_grid,
    scanner_grid,
)
from mri_nerfstudio.volume import load_subject


def test_scanner_grid_is_the_input_files_grid(phantom_subject_dir):
    import nibabel as nib

    volume = load_subject(phantom_subject_dir)
    grid = scanner_grid(volume)
    stored = nib.load(phantom_subject_dir / "BraTS2021_00000_t1.nii.gz")
    assert grid.shape == stored.shape and np.allclose(grid.affine, stored.affine)


def test_isotropic_grid_keeps_axes_and_field_of_view(phantom_subject_dir):
    volume = load_subject(phantom_subject_dir)
    scanner = scanner_grid(volume)
    fine = isotropic_grid(volume, 2.0)
    assert fine.shape == tuple(2 * size for size in scanner.shape)  # 4 mm -> 2 mm
    assert np.allclose(fine.spacing_mm, 2.0)
    assert np.allclose(np.sign(fine.affine[:3, :3]), np.sign(scanner.affine[:3, :3]))  # same orientation
    for fine_bound, scanner_bound in zip(fine.ras_bounds(), scanner.ras_bounds()):
        assert np.allclose(fine_bound, scanner_bound)
    with pytest.raises(MRIInputError, match="spacing-mm"):
        isotropic_grid(volume, 0.0)


def test_sample_on_grid_chunks_and_maps_voxels_to_world():
    affine = np.diag([-2.0, 3.0, 1.0, 1.0])
    affine[:3, 3] = (10.0, -5.0, 2.0)
    grid = VoxelGrid((5, 4, 3), affine)
    world_from_ras = np.diag([0.5, 0.5, 0.5, 1.0])
    calls, done = [], []

    def first_coordinate(points: np.ndarray) -> np.ndarray:
        calls.append(len(points))
        return points[:, 0]

    values = sample_on_grid(first_coordinate, grid, world_from_ras, points_per_chunk=7, progress=done.append)
    i = np.arange(5)[:, None, None]
    assert values.shape == (5, 4, 3) and values.dtype == np.float32
    assert np.allclose(values, np.broadcast_to(0.5 * (10.0 - 2.0 * i), (5, 4, 3)))
    assert max(calls) == 7 and sum(calls) == 60 and done[-1] == 60


def test_resample_onto_the_scanner_grid_undoes_the_canonical_flips(phantom_subject_dir):
    volume = load_subject(phantom_subject_dir)
    grid = scanner_grid(volume)
    reference = volume.images[volume.reference]
    on_scanner = resample_onto(reference, volume.affine, grid, order=1)
    assert np.allclose(on_scanner, volume.to_scanner_space(reference), atol=1e-5)


def test_best_dice_threshold_recovers_a_mask():
    rng = np.random.default_rng(0)
    mask = np.zeros((20, 20, 20), dtype=bool)
    mask[5:15, 4:16, 6:14] = True
    estimate = np.where(mask, rng.uniform(0.3, 1.0, mask.shape), rng.uniform(0.0, 0.2, mask.shape))
    level, dice = best_dice_threshold(estimate, mask)
    assert 0.2 <= level <= 0.3 and dice == 1.0
    noisy = estimate + rng.normal(0, 0.1, mask.shape)
    level, dice = best_dice_threshold(noisy, mask)
    assert 0.1 < level < 0.4 and 0.9 < dice < 1.0
    with pytest.raises(MRIInputError, match="empty"):
        best_dice_threshold(estimate, np.zeros_like(mask))
