"""The conditional radiance field: encodings, both backbones, output shapes and ranges, conditioning."""

from __future__ import annotations

import pytest
import torch
from nerfstudio.cameras.rays import RayBundle, RaySamples
from nerfstudio.field_components.field_heads import FieldHeadNames
from nerfstudio.model_components.ray_samplers import UniformSampler

from mri_nerfstudio.nerf.field import (
    ConditionalRadianceField,
    FeatureGridBackbone,
    MLPBackbone,
    PositionalEncoding,
    trilinear_interpolation,
)

SHAPE_DIM, APPEARANCE_DIM = 4, 3


def _ray_samples(num_rays: int = 6, num_samples: int = 5, seed: int = 0) -> RaySamples:
    """Rays from z = 4 towards -z through the unit sphere, samples over t in [3, 5]."""
    generator = torch.Generator().manual_seed(seed)
    xy = (torch.rand(num_rays, 2, generator=generator) - 0.5) * 1.2
    origins = torch.cat([xy, torch.full((num_rays, 1), 4.0)], dim=-1)
    bundle = RayBundle(
        origins=origins,
        directions=torch.tensor([0.0, 0.0, -1.0]).expand(num_rays, 3),
        pixel_area=torch.ones(num_rays, 1),
        nears=torch.full((num_rays, 1), 3.0),
        fars=torch.full((num_rays, 1), 5.0),
    )
    return UniformSampler(num_samples=num_samples, train_stratified=False)(bundle)


def _with_codes(ray_samples: RaySamples, shape_code: torch.Tensor, appearance_code: torch.Tensor) -> RaySamples:
    num_rays = ray_samples.shape[0]
    ray_samples.metadata = {
        "shape_code": shape_code.expand(num_rays, 1, SHAPE_DIM),
        "appearance_code": appearance_code.expand(num_rays, 1, APPEARANCE_DIM),
    }
    return ray_samples


def _backbones() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {
        "mlp": MLPBackbone(SHAPE_DIM, APPEARANCE_DIM, width=32, depth=4, skip_after=1, colour_width=16),
        "grid": FeatureGridBackbone(SHAPE_DIM, APPEARANCE_DIM, resolutions=(4, 8), channels=2, width=16),
    }


def test_positional_encoding_sizes_match_graf():
    assert PositionalEncoding(10).out_dim == 63
    assert PositionalEncoding(4).out_dim == 27
    x = torch.tensor([[0.25, -0.5, 1.0]])
    encoded = PositionalEncoding(2)(x)
    assert encoded.shape == (1, 15)
    torch.testing.assert_close(encoded[0, :3], x[0])
    torch.testing.assert_close(encoded[0, 3:9], torch.sin(torch.cat([x[0], 2 * x[0]])))


@pytest.mark.parametrize("backbone", ["mlp", "grid"])
@pytest.mark.parametrize("activation", ["relu", "softplus"])
def test_outputs_have_sample_shapes_and_valid_ranges(backbone, activation):
    field = ConditionalRadianceField(_backbones()[backbone], density_activation=activation).eval()
    samples = _with_codes(_ray_samples(), torch.randn(SHAPE_DIM), torch.randn(APPEARANCE_DIM))
    outputs = field(samples)
    density, rgb = outputs[FieldHeadNames.DENSITY], outputs[FieldHeadNames.RGB]
    assert density.shape == (6, 5, 1) and rgb.shape == (6, 5, 3)
    assert bool((density >= 0).all()) and bool(((rgb >= 0) & (rgb <= 1)).all())
    assert torch.isfinite(density).all() and torch.isfinite(rgb).all()


@pytest.mark.parametrize("backbone", ["mlp", "grid"])
def test_shape_code_changes_density_and_appearance_code_changes_only_colour(backbone):
    field = ConditionalRadianceField(_backbones()[backbone], density_activation="softplus").eval()
    appearance = torch.zeros(APPEARANCE_DIM)
    first = field(_with_codes(_ray_samples(), torch.zeros(SHAPE_DIM), appearance))
    second = field(_with_codes(_ray_samples(), torch.ones(SHAPE_DIM), appearance))
    third = field(_with_codes(_ray_samples(), torch.zeros(SHAPE_DIM), torch.ones(APPEARANCE_DIM)))
    difference = (first[FieldHeadNames.DENSITY] - second[FieldHeadNames.DENSITY]).abs().max()
    assert difference > 1e-4
    torch.testing.assert_close(first[FieldHeadNames.DENSITY], third[FieldHeadNames.DENSITY])
    assert (first[FieldHeadNames.RGB] - third[FieldHeadNames.RGB]).abs().max() > 1e-4


def test_missing_codes_read_as_zero_codes():
    field = ConditionalRadianceField(_backbones()["grid"]).eval()
    without = field(_ray_samples())
    with_zeros = field(_with_codes(_ray_samples(), torch.zeros(SHAPE_DIM), torch.zeros(APPEARANCE_DIM)))
    torch.testing.assert_close(without[FieldHeadNames.DENSITY], with_zeros[FieldHeadNames.DENSITY])
    torch.testing.assert_close(without[FieldHeadNames.RGB], with_zeros[FieldHeadNames.RGB])


def test_code_of_the_wrong_size_is_refused():
    field = ConditionalRadianceField(_backbones()["grid"]).eval()
    samples = _ray_samples()
    samples.metadata = {"shape_code": torch.zeros(6, 1, SHAPE_DIM + 1)}
    with pytest.raises(ValueError, match="shape_code"):
        field(samples)


@pytest.mark.parametrize("backbone", ["mlp", "grid"])
@pytest.mark.parametrize("training", [False, True])
def test_tied_colour_is_density_over_k_at_every_sample(backbone, training):
    """One intensity per point: colour = density / k in all three channels, on both evaluation paths
    (nerfstudio's ``forward`` and the flat ``point_outputs`` that empty-space skipping calls), with the
    training-mode density noise too."""
    k = 2.5
    field = ConditionalRadianceField(
        _backbones()[backbone], density_activation="softplus", density_noise_std=1.0, colour="tied", density_scale=k
    )
    field.train(training)
    samples = _with_codes(_ray_samples(), torch.randn(SHAPE_DIM), torch.randn(APPEARANCE_DIM))
    torch.manual_seed(3)
    outputs = field(samples)
    density, rgb = outputs[FieldHeadNames.DENSITY], outputs[FieldHeadNames.RGB]
    assert rgb.shape == (6, 5, 3) and bool((density > 0).all())
    torch.testing.assert_close(rgb, (density / k).expand(6, 5, 3))
    positions = samples.frustums.get_positions().reshape(-1, 3)
    directions = samples.frustums.directions.expand(6, 5, 3).reshape(-1, 3)
    torch.manual_seed(3)
    flat_density, flat_rgb = field.point_outputs(
        positions, directions, torch.randn(30, SHAPE_DIM), torch.randn(30, APPEARANCE_DIM)
    )
    torch.testing.assert_close(flat_rgb, (flat_density / k).expand(30, 3))


def test_tied_colour_ignores_the_appearance_code_and_free_colour_is_the_default():
    assert ConditionalRadianceField(_backbones()["grid"]).colour == "free"
    field = ConditionalRadianceField(_backbones()["grid"], colour="tied", density_scale=3.0).eval()
    first = field(_with_codes(_ray_samples(), torch.zeros(SHAPE_DIM), torch.zeros(APPEARANCE_DIM)))
    second = field(_with_codes(_ray_samples(), torch.zeros(SHAPE_DIM), torch.ones(APPEARANCE_DIM)))
    torch.testing.assert_close(first[FieldHeadNames.RGB], second[FieldHeadNames.RGB])
    with pytest.raises(ValueError, match="colour"):
        ConditionalRadianceField(_backbones()["grid"], colour="painted")
    with pytest.raises(ValueError, match="density_scale"):
        ConditionalRadianceField(_backbones()["grid"], colour="tied", density_scale=0.0)


def test_density_noise_only_in_training_mode():
    field = ConditionalRadianceField(_backbones()["grid"], density_activation="softplus", density_noise_std=1.0)
    samples = _with_codes(_ray_samples(), torch.zeros(SHAPE_DIM), torch.zeros(APPEARANCE_DIM))
    field.eval()
    torch.testing.assert_close(field.get_density(samples)[0], field.get_density(samples)[0])
    field.train()
    assert (field.get_density(samples)[0] - field.get_density(samples)[0]).abs().max() > 1e-3


def test_mlp_backbone_has_mednerf_size_with_256_d_codes():
    mlp = MLPBackbone(shape_code_dim=128, appearance_code_dim=128)
    count = sum(p.numel() for p in mlp.parameters())
    assert count == 677_764  # the docstring's breakdown
    assert abs(count - 680_000) / 680_000 < 0.01


def test_grid_backbone_parameter_count_matches_docstring():
    grid = FeatureGridBackbone()
    assert sum(p.numel() for p in grid.parameters()) == 4_720_220
    assert sum(p.numel() for p in grid.grids.parameters()) == 4_718_592


def test_trilinear_interpolation_reproduces_affine_functions():
    """Trilinear interpolation is exact for f(x) = A x + b, whatever the resolution."""
    resolution = 5
    axis = torch.linspace(-1.0, 1.0, resolution)
    vertices = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    matrix, offset = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, 1.0]]), torch.tensor([0.1, -0.2])
    table = vertices @ matrix.T + offset  # [R^3, 2]
    points = torch.rand(100, 3, generator=torch.Generator().manual_seed(1)) * 2 - 1
    torch.testing.assert_close(trilinear_interpolation(table, resolution, points), points @ matrix.T + offset)
    # Outside the cube the nearest face is read.
    outside = torch.tensor([[2.0, 0.0, -3.0]])
    torch.testing.assert_close(
        trilinear_interpolation(table, resolution, outside), torch.tensor([[1.0, 0.0, -1.0]]) @ matrix.T + offset
    )


def test_total_variation_is_zero_on_constant_grids_and_positive_otherwise():
    grid = FeatureGridBackbone(resolutions=(3, 4), channels=2)
    with torch.no_grad():
        for table in grid.grids:
            table.fill_(0.7)
    assert float(grid.total_variation()) == 0.0
    with torch.no_grad():
        grid.grids[1][0, 0] += 1.0
    assert float(grid.total_variation()) > 0.0
