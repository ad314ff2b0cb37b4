"""Classical reconstructions from orbit views: the orbit's geometry against skimage's Radon convention, FBP and
SART on a phantom, the axial emission-absorption renderer against render_views, the tied voxel grid's fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.transform import radon

from mri_nerfstudio import classical_reconstruction as classical
from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.views import ViewCameras, make_orbit_cameras, render_views

K = 3.0


def _blobs(x: np.ndarray | torch.Tensor, y, z):
    """An asymmetric phantom of two smooth blobs inside the unit sphere (intensities up to about 1)."""
    exp = torch.exp if isinstance(x, torch.Tensor) else np.exp
    value = exp(-((x - 0.35) ** 2 + (y + 0.1) ** 2 + z**2) / 0.05) + 0.5 * exp(
        -((x + 0.2) ** 2 + (y - 0.4) ** 2 + (z - 0.1) ** 2) / 0.1
    )
    return value * ((x**2 + y**2 + z**2) <= 0.95)


def _phantom(size: int) -> torch.Tensor:
    """[size^3] the phantom on :func:`classical.cube_world_from_voxel`."""
    axis = torch.linspace(-1.0, 1.0, size)
    return _blobs(*torch.meshgrid(axis, axis, axis, indexing="ij")).float()


def _drr_views(size: int, n_views: int, step_deg: float, image_size: int):
    cameras = make_orbit_cameras(n_views=n_views, step_deg=step_deg, image_size=image_size)
    world_from_voxel = classical.cube_world_from_voxel(size)
    return render_views(_phantom(size), world_from_voxel, cameras, "drr", K, step=0.01).numpy(), cameras


def test_orbit_rows_are_skimage_sinograms_of_axial_slices():
    """Row v of the drr views at azimuth a = skimage's radon of the axial slice z_v at theta = a, with the slice's
    column c at x = -(c - M // 2) / fx and row r at y = (r - M // 2) / fx; other conventions do not match."""
    image_size, row = 32, 15
    views, cameras = _drr_views(97, n_views=36, step_deg=10.0, image_size=image_size)
    sinograms, theta = classical.axial_sinograms(views, cameras, K)
    size = sinograms.shape[1]
    assert size == image_size + 1 and np.allclose(theta, np.arange(36) * 10.0)
    pixels = np.arange(size) - size // 2
    x, y = -pixels[None, :] / cameras.fx, pixels[:, None] / cameras.fx
    z = (cameras.cy - row - 0.5) / cameras.fy
    slice_image = _blobs(x, y, z)
    expected = radon(slice_image, theta=theta, circle=True)
    error = np.abs(sinograms[row] - expected).max() / expected.max()
    assert error < 0.05
    for wrong_theta in (-theta, theta + 90.0):
        assert np.abs(sinograms[row] - radon(slice_image, theta=wrong_theta, circle=True)).max() / expected.max() > 0.5
    flipped = radon(slice_image[:, ::-1], theta=theta, circle=True)
    assert np.abs(sinograms[row] - flipped).max() / expected.max() > 0.5


@pytest.mark.parametrize("method", ["fbp", "sart"])
def test_back_projection_recovers_a_phantom_from_many_views(method):
    views, cameras = _drr_views(65, n_views=72, step_deg=5.0, image_size=32)
    if method == "fbp":
        grid = classical.filtered_back_projection(views, cameras, K)
    else:
        grid = classical.sart(views, cameras, K, iterations=3)
    assert grid.values.shape == (33, 33, 32) and (grid.values >= 0).all()
    points = np.random.default_rng(0).uniform(-0.7, 0.7, size=(2000, 3))
    truth = _blobs(points[:, 0], points[:, 1], points[:, 2])
    error = grid.sample(points) - truth
    assert np.sqrt(np.mean(error**2)) < 0.03 * truth.max()


def test_few_views_recover_the_phantom_less_well():
    """Sanity of the benchmark's question: fewer views, a worse slice-wise reconstruction."""
    errors = []
    points = np.random.default_rng(1).uniform(-0.7, 0.7, size=(2000, 3))
    truth = _blobs(points[:, 0], points[:, 1], points[:, 2])
    views, cameras = _drr_views(65, n_views=72, step_deg=5.0, image_size=32)
    for every in (1, 18):
        indices = list(range(0, 72, every))
        subset = ViewCameras(cameras.c2w[indices], cameras.width, cameras.height, cameras.projection)
        grid = classical.filtered_back_projection(views[indices], subset, K)
        errors.append(np.sqrt(np.mean((grid.sample(points) - truth) ** 2)))
    assert errors[1] > 2 * errors[0]


def test_slice_wise_reconstruction_refuses_other_orbits():
    tilted = make_orbit_cameras(n_views=4, step_deg=90.0, elevation_deg=10.0, image_size=8)
    with pytest.raises(MRIInputError, match="elevation 0"):
        classical.axial_sinograms(np.zeros((4, 8, 8)), tilted, K)
    perspective = make_orbit_cameras(n_views=4, step_deg=90.0, image_size=8, projection="perspective")
    with pytest.raises(MRIInputError, match="orthographic"):
        classical.check_axial_orbit(perspective)
    with pytest.raises(MRIInputError, match="views"):
        classical.axial_sinograms(np.zeros((3, 8, 8)), make_orbit_cameras(n_views=4, image_size=8), K)


def test_axial_orbit_renderer_matches_render_views():
    size = 33
    cameras = make_orbit_cameras(n_views=8, step_deg=45.0, image_size=24)
    volume = _phantom(size)
    expected = render_views(volume, classical.cube_world_from_voxel(size), cameras, "volume", K, step=0.005)
    rendered = classical.render_axial_orbit(volume, cameras, K, samples_per_ray=2 * (size - 1))
    assert rendered.shape == (8, 24, 24)
    assert float((rendered - expected).abs().max()) < 2e-3 * float(expected.max())


def test_tied_voxel_grid_reproduces_its_training_views():
    size, image_size = 17, 16
    cameras = make_orbit_cameras(n_views=6, step_deg=60.0, image_size=image_size)
    views = render_views(_phantom(size), classical.cube_world_from_voxel(size), cameras, "volume", K).numpy()
    grid = classical.fit_tied_voxel_grid(views, cameras, K, size=size, tv_weight=0.0, steps=40, learning_rate=0.1)
    assert grid.values.shape == (size,) * 3 and (grid.values >= 0).all()
    rendered = classical.render_axial_orbit(torch.from_numpy(grid.values), cameras, K, 2 * (size - 1)).numpy()
    psnr = 10 * np.log10(1.0 / np.mean((rendered - views) ** 2))
    assert psnr > 35.0


def test_total_variation_is_zero_on_constants_and_grows_with_edges():
    constant = torch.full((5, 5, 5), 0.3)
    assert float(classical.total_variation(constant)) < 1e-3
    step = constant.clone()
    step[2:] = 1.0
    assert float(classical.total_variation(step)) > 0.1


def test_grid_volume_samples_its_own_voxels_and_another_grid():
    values = np.arange(27, dtype=np.float32).reshape(3, 3, 3)
    grid = classical.GridVolume(values, classical.cube_world_from_voxel(3))
    points = np.array([[-1.0, -1.0, -1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.5]])
    np.testing.assert_allclose(grid.sample(points), [0, 13, 13.5])
    mask = np.zeros((3, 3, 3), dtype=bool)
    mask[1, 1, :] = True
    on_grid = grid.on_grid(mask, classical.cube_world_from_voxel(3))
    np.testing.assert_allclose(on_grid[mask], values[1, 1, :])
    assert (on_grid[~mask] == 0).all()
