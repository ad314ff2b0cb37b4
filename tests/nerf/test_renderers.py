"""Renderers against closed forms on rays of constant density (piecewise-constant quadrature is exact there)."""

from __future__ import annotations

import math

import pytest
import torch
from nerfstudio.cameras.rays import RayBundle, RaySamples
from nerfstudio.model_components.ray_samplers import UniformSampler

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.nerf.renderers import (
    AttenuationRenderer,
    EmissionAbsorptionRenderer,
    MaxIntensityRenderer,
    MeanIntensityRenderer,
    renderer_for_view_mode,
)

NEAR = 3.0


def _ray_samples(lengths: list[float], num_samples: int) -> RaySamples:
    """Rays [len(lengths)] with chords [NEAR, NEAR + length], uniform midpoint samples."""
    num_rays = len(lengths)
    bundle = RayBundle(
        origins=torch.zeros(num_rays, 3),
        directions=torch.tensor([1.0, 0.0, 0.0]).expand(num_rays, 3),
        pixel_area=torch.ones(num_rays, 1),
        nears=torch.full((num_rays, 1), NEAR),
        fars=NEAR + torch.tensor(lengths)[:, None],
    )
    return UniformSampler(num_samples=num_samples, train_stratified=False)(bundle)


LENGTHS = [0.5, 1.0, 2.0]
SIGMAS = torch.tensor([0.3, 1.5, 4.0])


def _constant(samples: RaySamples, values: torch.Tensor, channels: int) -> torch.Tensor:
    return values[:, None, None].expand(*samples.shape, channels).clone()


def test_emission_absorption_matches_closed_form():
    samples = _ray_samples(LENGTHS, num_samples=400)
    colour = torch.tensor([0.2, 0.5, 0.9])
    out = EmissionAbsorptionRenderer()(
        rgb=_constant(samples, colour, 3), density=_constant(samples, SIGMAS, 1), ray_samples=samples
    )
    length = torch.tensor(LENGTHS)
    opacity = 1 - torch.exp(-SIGMAS * length)
    # Constant density: the quadrature telescopes, so these are exact up to float32 rounding.
    torch.testing.assert_close(out["rgb"], (colour * opacity)[:, None].expand(-1, 3), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["accumulation"][:, 0], opacity, atol=1e-5, rtol=1e-5)
    # Expected termination of a truncated exponential; midpoint samples err by at most half a step.
    expected = NEAR + 1 / SIGMAS - length * torch.exp(-SIGMAS * length) / opacity
    step = max(LENGTHS) / 400
    torch.testing.assert_close(out["depth"][:, 0], expected, atol=step, rtol=0)


def test_attenuation_matches_closed_form_and_ignores_colour():
    samples = _ray_samples(LENGTHS, num_samples=16)
    density = _constant(samples, SIGMAS, 1)
    out = AttenuationRenderer()(rgb=torch.rand(*samples.shape, 3), density=density, ray_samples=samples)
    expected = 1 - torch.exp(-SIGMAS * torch.tensor(LENGTHS))
    torch.testing.assert_close(out["rgb"], expected[:, None].expand(-1, 3), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out["accumulation"][:, 0], expected, atol=1e-6, rtol=1e-5)
    # Constant attenuation: the weighted mean distance is the chord's midpoint.
    torch.testing.assert_close(out["depth"][:, 0], NEAR + torch.tensor(LENGTHS) / 2, atol=1e-5, rtol=0)


def test_max_intensity_takes_the_brightest_sample_and_its_distance():
    samples = _ray_samples([2.0], num_samples=8)  # midpoints at NEAR + 0.125 + 0.25 i
    grey = torch.tensor([0.1, 0.3, 0.2, 0.8, 0.4, 0.0, 0.5, 0.6])
    rgb = grey[None, :, None].expand(1, 8, 3).clone()
    rgb[0, 5, 0] = 0.9  # one bright channel: the max is per channel, the depth follows the mean
    out = MaxIntensityRenderer()(rgb=rgb, density=torch.zeros(1, 8, 1), ray_samples=samples)
    torch.testing.assert_close(out["rgb"], torch.tensor([[0.9, 0.8, 0.8]]))
    torch.testing.assert_close(out["depth"], torch.tensor([[NEAR + 0.125 + 0.25 * 3]]))
    torch.testing.assert_close(out["accumulation"], torch.zeros(1, 1))


@pytest.mark.parametrize("mode", ["volume", "drr", "mip"])
def test_rays_that_miss_the_scene_render_black(mode):
    samples = _ray_samples([0.0], num_samples=4)  # near == far: the collider's output for a miss
    renderer = renderer_for_view_mode(mode)
    out = renderer(rgb=torch.full((1, 4, 3), 0.7), density=torch.full((1, 4, 1), 2.0), ray_samples=samples)
    assert float(out["rgb"].abs().max()) == 0.0
    assert float(out["accumulation"].abs().max()) == 0.0
    assert out["depth"].shape == (1, 1) and torch.isfinite(out["depth"]).all()


def test_mean_intensity_of_constant_density_is_density_over_k():
    samples = _ray_samples(LENGTHS, num_samples=10)
    mean = MeanIntensityRenderer(density_scale=3.0)(density=_constant(samples, SIGMAS, 1), ray_samples=samples)
    assert mean.shape == (3, 3)
    torch.testing.assert_close(mean[:, 0], SIGMAS / 3.0)
    torch.testing.assert_close(mean, mean[:, :1].expand(-1, 3))


def test_renderer_matches_view_mode_and_refuses_unknown_modes():
    assert isinstance(renderer_for_view_mode("volume"), EmissionAbsorptionRenderer)
    assert isinstance(renderer_for_view_mode("drr"), AttenuationRenderer)
    assert isinstance(renderer_for_view_mode("mip"), MaxIntensityRenderer)
    with pytest.raises(MRIInputError, match="view_mode"):
        renderer_for_view_mode("xray")
    with pytest.raises(MRIInputError, match="density_scale"):
        MeanIntensityRenderer(density_scale=0.0)


def test_emission_absorption_gradients_reach_density_and_colour():
    samples = _ray_samples([1.0], num_samples=6)
    density = torch.full((1, 6, 1), 1.0, requires_grad=True)
    rgb = torch.full((1, 6, 3), 0.5, requires_grad=True)
    EmissionAbsorptionRenderer()(rgb=rgb, density=density, ray_samples=samples)["rgb"].sum().backward()
    assert float(density.grad.abs().sum()) > 0 and float(rgb.grad.abs().sum()) > 0
    assert math.isclose(float(rgb.grad.sum()), 3 * (1 - math.exp(-1.0)), rel_tol=1e-5)
