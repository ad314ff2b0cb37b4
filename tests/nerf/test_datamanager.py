"""The scaled patch sampler: scale schedule, patch coordinates, bilinear ground truth, and the data manager."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.nerf.datamanager import (
    MRIDataManagerConfig,
    PatchScaleSchedule,
    bilinear_sample,
    patch_grid,
    sample_patch_coords,
)
from mri_nerfstudio.nerf.dataparser import MRIDataParserConfig
from mri_nerfstudio.prepare import PrepareConfig

SIZE = 24  # view side, pixels


@pytest.fixture(scope="module")
def datamanager_config(phantom_root, tmp_path_factory):
    dataparser = MRIDataParserConfig(
        data=phantom_root, cache_dir=tmp_path_factory.mktemp("cache"), prepare=PrepareConfig(image_size=SIZE)
    )
    return MRIDataManagerConfig(dataparser=dataparser, patch_size=4, train_num_rays_per_batch=96)


@pytest.fixture(scope="module")
def datamanager(datamanager_config):
    return datamanager_config.setup(device="cpu", test_mode="val")


def _images(num_images: int = 3, height: int = 6, width: int = 7, channels: int = 3) -> torch.Tensor:
    return torch.rand(num_images, height, width, channels, generator=torch.Generator().manual_seed(0))


def test_schedule_follows_graf_formula():
    schedule = PatchScaleSchedule()
    assert schedule.min_scale_at(0) == 0.9  # exp(0) = 1, capped at initial_min_scale
    assert schedule.min_scale_at(14_999) == 0.9  # exp(-0.0025 * 3 * 14) = 0.9003, still capped
    assert schedule.min_scale_at(15_000) == pytest.approx(math.exp(-0.0025 * 3 * 15))
    assert schedule.min_scale_at(100_000) == pytest.approx(math.exp(-0.75))  # 0.472
    assert schedule.min_scale_at(10**6) == 0.25
    assert PatchScaleSchedule(scale_anneal=0.0).min_scale_at(0) == 0.25
    with pytest.raises(MRIInputError, match="min_scale"):
        PatchScaleSchedule(min_scale=0.5, initial_min_scale=0.4)


def test_patch_grid_spans_the_fraction_s_of_the_image():
    coords = patch_grid(torch.tensor([[2.0, 3.0]]), torch.tensor([0.5]), patch_size=4, height=16, width=32)
    assert coords.shape == (1, 4, 4, 2)
    # Rows: side 0.5 * 16 = 8 px from y = 2, cells of 2 px; columns: 16 px from x = 3, cells of 4 px.
    torch.testing.assert_close(coords[0, :, 0, 0], torch.tensor([3.0, 5.0, 7.0, 9.0]))
    torch.testing.assert_close(coords[0, 0, :, 1], torch.tensor([5.0, 9.0, 13.0, 17.0]))
    assert (coords[0, :, :, 0] == coords[0, :, :1, 0]).all() and (coords[0, :, :, 1] == coords[0, :1, :, 1]).all()


@pytest.mark.parametrize("patch_size, min_scale, max_scale", [(8, 0.25, 1.0), (8, 0.0, 0.1), (1, 0.0, 0.0)])
def test_sampled_coords_lie_between_the_outermost_pixel_centres(patch_size, min_scale, max_scale):
    height, width = 20, 30
    coords = sample_patch_coords(
        500, patch_size, height, width, min_scale, max_scale, generator=torch.Generator().manual_seed(1)
    )
    assert coords.shape == (500, patch_size, patch_size, 2)
    assert coords[..., 0].min() >= 0.5 and coords[..., 0].max() <= height - 0.5
    assert coords[..., 1].min() >= 0.5 and coords[..., 1].max() <= width - 0.5
    if patch_size > 1:
        # Neighbouring rays are at least one pixel apart in the shorter axis (scales raised to K / min(H, W)).
        row_step = coords[:, 1, 0, 0] - coords[:, 0, 0, 0]
        assert row_step.min() >= 1.0 - 1e-5
        assert row_step.max() <= max(max_scale * height / patch_size, 1.0) + 1e-5


def test_single_rays_cover_the_image_uniformly():
    """patch_size 1 with scale 0 gives rays uniform over [0.5, H - 0.5] x [0.5, W - 0.5]."""
    coords = sample_patch_coords(20_000, 1, 10, 10, 0.0, 0.0, generator=torch.Generator().manual_seed(2))
    ys = coords[:, 0, 0, 0]
    # U(0.5, 9.5): mean 5, std 9 / sqrt(12) = 2.6; the sample mean's std is 0.018, so 0.1 is > 5 sigma.
    assert float(ys.mean()) == pytest.approx(5.0, abs=0.1)
    assert float(ys.std()) == pytest.approx(9 / math.sqrt(12), abs=0.05)


def test_patch_size_larger_than_the_image_is_rejected():
    with pytest.raises(MRIInputError, match="patch_size"):
        sample_patch_coords(1, 9, 8, 16, 0.5, 1.0)


def test_integer_aligned_patch_reproduces_the_exact_pixels():
    images = _images(height=12, width=12)
    size = 4
    coords = patch_grid(torch.tensor([[3.0, 5.0]]), torch.tensor([size / 12]), size, 12, 12)
    pixels = bilinear_sample(images, torch.full((1, size, size), 2), coords)
    # Exact up to float32 rounding of the coordinates (about 1e-6 px, pixel values in [0, 1]).
    torch.testing.assert_close(pixels[0], images[2, 3 : 3 + size, 5 : 5 + size], atol=1e-5, rtol=0)


def test_bilinear_sample_averages_neighbours_at_half_pixel_offsets():
    images = _images()
    # (y, x) = (2.0, 3.5): halfway between rows 1 and 2, on the centre of column 3.
    vertical = bilinear_sample(images, torch.tensor([1]), torch.tensor([[2.0, 3.5]]))
    torch.testing.assert_close(vertical[0], (images[1, 1, 3] + images[1, 2, 3]) / 2)
    corner = bilinear_sample(images, torch.tensor([0]), torch.tensor([[2.0, 3.0]]))
    torch.testing.assert_close(corner[0], images[0, 1:3, 2:4].mean(dim=(0, 1)))


def test_bilinear_sample_matches_grid_sample():
    images = _images()
    generator = torch.Generator().manual_seed(3)
    # Points over and slightly beyond the image, to cover border clamping too.
    coords = torch.rand(3, 50, 2, generator=generator) * torch.tensor([7.0, 8.0]) - 0.5
    indices = torch.arange(3)[:, None].expand(-1, 50)
    grid = torch.stack([coords[..., 1] / 7 * 2 - 1, coords[..., 0] / 6 * 2 - 1], dim=-1)[:, :, None]
    expected = F.grid_sample(images.permute(0, 3, 1, 2), grid, align_corners=False, padding_mode="border")
    torch.testing.assert_close(bilinear_sample(images, indices, coords), expected[..., 0].permute(0, 2, 1))


def test_next_train_returns_patches_from_several_views(datamanager):
    torch.manual_seed(0)
    ray_bundle, batch = datamanager.next_train(step=0)
    num_rays = 6 * 4 * 4  # 96 rays // 4^2 = 6 patches
    assert datamanager.get_train_rays_per_batch() == num_rays
    assert ray_bundle.shape == (num_rays,) and batch["image"].shape == (num_rays, 3)
    assert batch["indices"].shape == (num_rays, 3)
    cameras = batch["indices"][:, 0]
    patch_cameras = cameras.reshape(6, 16)
    assert (patch_cameras == patch_cameras[:, :1]).all() and len(set(patch_cameras[:, 0].tolist())) > 1
    torch.testing.assert_close(ray_bundle.camera_indices[:, 0], cameras)
    subject_of_camera = datamanager.train_dataset.cameras.metadata["subject_index"]
    torch.testing.assert_close(ray_bundle.metadata["subject_index"], subject_of_camera[cameras])
    # Grey views (R = G = B); each ray's ground truth interpolates its view around the pixel it falls in,
    # so it lies within that pixel's 3 x 3 neighbourhood's range.
    assert torch.equal(batch["image"][:, 0], batch["image"][:, 2])
    views = datamanager.train_dataparser_outputs.metadata["images"][:, None]  # [N, 1, H, W]
    padded = F.pad(views, (1, 1, 1, 1), mode="replicate")
    highest, lowest = F.max_pool2d(padded, 3, stride=1)[:, 0], -F.max_pool2d(-padded, 3, stride=1)[:, 0]
    camera, row, column = batch["indices"].unbind(-1)
    assert (lowest[camera, row, column] - 1e-6 <= batch["image"][:, 0]).all()
    assert (batch["image"][:, 0] <= highest[camera, row, column] + 1e-6).all()


def test_patch_rays_are_the_cameras_pixel_rays(datamanager):
    """At integer-aligned pixel centres the patch rays equal the rays of the full image (same convention)."""
    cameras = datamanager.train_cameras
    coords = patch_grid(torch.tensor([[5.0, 9.0]]), torch.tensor([4 / SIZE]), 4, SIZE, SIZE).reshape(-1, 2)
    camera = 7
    rays = cameras.generate_rays(camera_indices=torch.full((16, 1), camera), coords=coords)
    full = cameras.generate_rays(camera_indices=camera)  # [H, W] rays through the pixel centres
    torch.testing.assert_close(rays.origins, full.origins[5:9, 9:13].reshape(-1, 3))
    torch.testing.assert_close(rays.directions, full.directions[5:9, 9:13].reshape(-1, 3))


def test_ground_truth_of_patches_at_pixel_scale_is_the_view(datamanager_config):
    """patch_size = view side at scale 1: one patch is the whole view, pixel for pixel."""
    config = MRIDataManagerConfig(
        dataparser=datamanager_config.dataparser, patch_size=SIZE, patches_per_batch=2, scale_anneal=0.0
    )
    datamanager = config.setup(device="cpu", test_mode="val")
    _, batch = datamanager.next_train(step=0)
    patches = batch["image"].reshape(2, SIZE, SIZE, 3)
    cameras = batch["indices"][:, 0].reshape(2, -1)[:, 0]
    views = datamanager.train_dataparser_outputs.metadata["images"]
    for patch, camera in zip(patches, cameras):
        torch.testing.assert_close(patch[..., 0], views[camera], atol=1e-5, rtol=0)


def test_single_ray_patches_and_eval_batches(datamanager_config):
    config = MRIDataManagerConfig(dataparser=datamanager_config.dataparser, patch_size=1, train_num_rays_per_batch=64)
    datamanager = config.setup(device="cpu", test_mode="val")
    ray_bundle, batch = datamanager.next_train(step=0)
    assert ray_bundle.shape == (64,) and batch["image"].shape == (64, 3)
    # Evaluation stays nerfstudio's: random single pixels and full held-out views.
    eval_bundle, eval_batch = datamanager.next_eval(step=0)
    assert eval_bundle.shape == (config.eval_num_rays_per_batch,)
    camera, image_batch = datamanager.next_eval_image(step=0)
    assert image_batch["image"].shape == (SIZE, SIZE, 3) and camera.shape == (1,)


def test_bad_patch_settings_are_rejected(datamanager_config):
    too_big = MRIDataManagerConfig(dataparser=datamanager_config.dataparser, patch_size=SIZE + 1)
    with pytest.raises(MRIInputError, match="patch_size"):
        too_big.setup(device="cpu", test_mode="val")
    no_patches = MRIDataManagerConfig(dataparser=datamanager_config.dataparser, patch_size=4, patches_per_batch=0)
    with pytest.raises(MRIInputError, match="patches_per_batch"):
        no_patches.setup(device="cpu", test_mode="val")


def test_unseen_pose_patches_lie_on_the_training_orbits(datamanager):
    torch.manual_seed(0)
    patch_rays = 4 * 4
    bundle = datamanager.next_unseen_pose_patches(step=0, num_patches=12, elevation_band_deg=(-5.0, 5.0))
    assert bundle.origins.shape == (12 * patch_rays, 3)
    subjects = bundle.metadata["subject_index"].reshape(12, patch_rays)
    assert (subjects == subjects[:, :1]).all() and set(subjects[:, 0].tolist()) <= {0.0, 1.0}
    # Orthographic cameras: all rays of a patch are parallel, pointing at the origin from the orbit.
    directions = bundle.directions.reshape(12, patch_rays, 3)
    torch.testing.assert_close(directions, directions[:, :1].expand_as(directions))
    elevation = torch.rad2deg(torch.asin(-directions[:, 0, 2]))
    assert float(elevation.abs().max()) <= 5.0 + 1e-4 and float(elevation.std()) > 0  # training orbit at 0 degrees
    azimuth = torch.rad2deg(torch.atan2(directions[:, 0, 0], -directions[:, 0, 1])) % 360
    assert float(azimuth.max() - azimuth.min()) > 90  # spread around the orbit, not only the training poses
    distance = -(bundle.origins * bundle.directions).sum(dim=-1)  # origins lie on the image plane at the camera
    torch.testing.assert_close(distance, torch.full_like(distance, PrepareConfig().camera_radius))
