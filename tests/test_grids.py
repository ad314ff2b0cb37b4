"""Scanner and isotropic grids, chunked sampling on them, and the brain level read from a reconstruction alone."""

from __future__ import annotations

import numpy as np
import pytest

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.grids import (
    VoxelGrid,
    brain_level,
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


def test_brain_level_separates_a_brain_from_faint_empty_space_without_a_mask():
    """An equalised brain (uniform over [0.02, 1]) in empty space whose density is faint and spread over orders
    of magnitude (as a softplus field leaves it), plus exact zeros (skipped space): the level falls between."""
    rng = np.random.default_rng(0)
    brain = np.zeros((20, 20, 20), dtype=bool)
    brain[5:15, 4:16, 6:14] = True
    empty_space = 10.0 ** rng.uniform(-4.0, -2.0, brain.shape)
    estimate = np.where(brain, rng.uniform(0.02, 1.0, brain.shape), empty_space)
    estimate[:2] = 0.0  # skipped: left out
    level = brain_level(estimate)
    assert 0.01 < level < 0.02 and np.array_equal(estimate > level, brain)
    assert brain_level(np.where(estimate > 0, estimate, -1.0)) == level  # values <= 0 never count
    with pytest.raises(MRIInputError, match="fewer than two distinct positive values"):
        brain_level(np.zeros((4, 4, 4)))
    with pytest.raises(MRIInputError, match="fewer than two distinct positive values"):
        brain_level(np.full((4, 4, 4), 0.5))
