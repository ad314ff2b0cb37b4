"""The slice encoder's input: modalities on the world working grid, presence flags, acquired spacing, cache."""

from __future__ import annotations

import numpy as np
import pytest

from mri_nerfstudio.encoder_input import cached_encoder_input, encoder_input, resample_to_working_grid, working_grid_points
from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.volume import MODALITIES, Volume


def _volume(modalities=("t1", "flair"), spacing=(2.0, 2.0, 2.0), shape=(40, 40, 40)) -> Volume:
    """A bright ball of radius 20 mm at the origin, on a grid centred at the origin, in every modality."""
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -(np.asarray(shape) - 1) / 2 * np.asarray(spacing)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    ras = ijk * np.asarray(spacing) + affine[:3, 3]
    ball = (np.linalg.norm(ras, axis=-1) < 20.0).astype(np.float32)
    return Volume(name="ball", images={m: ball * (MODALITIES.index(m) + 1 if m in MODALITIES else 1) / 4 for m in modalities}, affine=affine,
                  scanner_affine=affine, scanner_shape=shape)


def _world_from_voxel(volume: Volume, radius_mm: float = 40.0) -> np.ndarray:
    return np.diag([1 / radius_mm] * 3 + [1.0]) @ volume.affine


def test_working_grid_covers_the_world_cube_with_slices_first():
    points = working_grid_points(8)
    assert points.shape == (8, 8, 8, 3)
    assert np.allclose(points[0, 0, 0], [-0.875, -0.875, -0.875]) and np.allclose(points[-1, -1, -1], 0.875)
    assert np.allclose(points[3, :, :, 2], points[3, 0, 0, 2])  # first axis = world z (slices)


def test_ball_lands_at_the_centre_with_the_right_radius_and_missing_modalities_are_zero():
    volume = _volume()
    result = encoder_input(volume, _world_from_voxel(volume), grid_size=16)
    assert result.scans.shape == (len(MODALITIES), 16, 16, 16) and result.scans.dtype == np.float32
    assert result.present.tolist() == [1.0, 0.0, 0.0, 1.0]
    assert not result.scans[1].any() and not result.scans[2].any()
    np.testing.assert_allclose(result.spacing_mm, [2.0, 2.0, 2.0])
    inside = np.linalg.norm(working_grid_points(16), axis=-1) < 0.4  # ball radius 20 mm = 0.5 world units
    outside = np.linalg.norm(working_grid_points(16), axis=-1) > 0.65
    assert result.scans[0][inside].min() > 0.2 and result.scans[0][outside].max() < 1e-6
    np.testing.assert_allclose(result.scans[3][inside], 4 * result.scans[0][inside], rtol=1e-5)


def test_thick_slices_give_the_same_input_up_to_interpolation():
    thin = _volume(spacing=(2.0, 2.0, 2.0), shape=(40, 40, 40))
    thick = _volume(spacing=(2.0, 2.0, 6.0), shape=(40, 40, 14))
    a = encoder_input(thin, _world_from_voxel(thin), 16)
    b = encoder_input(thick, _world_from_voxel(thick), 16)
    assert np.abs(a.scans - b.scans).mean() < 0.02
    np.testing.assert_allclose(b.spacing_mm, [2.0, 2.0, 6.0])


def test_fine_voxels_are_pooled_not_aliased():
    """A 1-voxel checkerboard averages to its mean (0.5) instead of picking single voxels."""
    shape = (64, 64, 64)
    checker = (np.indices(shape).sum(axis=0) % 2).astype(np.float32)
    affine = np.diag([0.5, 0.5, 0.5, 1.0])
    affine[:3, 3] = -16.0
    sampled = resample_to_working_grid(checker, np.diag([1 / 16] * 3 + [1.0]) @ affine, grid_size=8)
    assert np.abs(sampled[2:-2, 2:-2, 2:-2] - 0.5).max() < 0.05


def test_unknown_modality_and_tiny_grid_are_errors():
    volume = _volume(modalities=("t1", "dwi"))
    with pytest.raises(MRIInputError, match="dwi"):
        encoder_input(volume, _world_from_voxel(volume))
    with pytest.raises(MRIInputError, match="grid_size"):
        encoder_input(_volume(), _world_from_voxel(_volume()), grid_size=4)


def test_cache_is_written_once_and_read_back(tmp_path):
    volume = _volume()
    first = cached_encoder_input(tmp_path, volume, _world_from_voxel(volume), 8)
    path = tmp_path / "encoder_input_8.npz"
    assert path.is_file() and [p.name for p in tmp_path.iterdir()] == [path.name]
    stamp = path.stat().st_mtime_ns
    second = cached_encoder_input(tmp_path, volume, _world_from_voxel(volume), 8)
    assert path.stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(first.scans, second.scans)
    np.testing.assert_array_equal(first.present, second.present)
