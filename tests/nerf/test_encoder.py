"""The slice encoder: shapes, the SE weights, every input reaching the codes, gradients."""

from __future__ import annotations

import pytest
import torch

from mri_nerfstudio.nerf.encoder import SliceEncoder, SliceEncoderConfig, SliceSqueezeExcitation


def _inputs(batch: int = 2, grid: int = 16):
    generator = torch.Generator().manual_seed(0)
    scans = torch.rand(batch, 4, grid, grid, grid, generator=generator)
    present = torch.ones(batch, 4)
    spacing = torch.ones(batch, 3)
    return scans, present, spacing


def test_codes_have_the_requested_size_and_differ_between_subjects():
    torch.manual_seed(0)
    encoder = SliceEncoder(SliceEncoderConfig(output_init_std=0.1), num_modalities=4, grid_size=16, code_dim=12)
    codes = encoder(*_inputs())
    assert codes.shape == (2, 12) and torch.isfinite(codes).all()
    assert (codes[0] - codes[1]).abs().max() > 1e-4


def test_squeeze_excitation_gives_one_weight_in_0_1_per_slice():
    se = SliceSqueezeExcitation(num_slices=16, reduction=4)
    matrix = torch.randn(3, 16, 8)
    weighted, weights = se(matrix)
    assert weights.shape == (3, 16) and ((weights > 0) & (weights < 1)).all()
    torch.testing.assert_close(weighted, matrix * weights[..., None])


@pytest.mark.parametrize("squeeze_excitation", [True, False])
def test_scans_presence_and_spacing_all_change_the_codes_and_everything_gets_gradient(squeeze_excitation):
    torch.manual_seed(0)
    config = SliceEncoderConfig(squeeze_excitation=squeeze_excitation, output_init_std=0.1)
    encoder = SliceEncoder(config, num_modalities=4, grid_size=16, code_dim=8)
    assert (encoder.squeeze_excitation is not None) == squeeze_excitation
    scans, present, spacing = _inputs(batch=1)
    base = encoder(scans, present, spacing)
    assert not torch.allclose(encoder(scans.flip(2), present, spacing), base)  # slice order matters
    assert not torch.allclose(encoder(scans, torch.tensor([[1.0, 0.0, 1.0, 1.0]]), spacing), base)
    assert not torch.allclose(encoder(scans, present, torch.tensor([[1.0, 1.0, 5.0]])), base)
    base.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())


def test_grid_size_must_be_a_multiple_of_8():
    with pytest.raises(ValueError, match="multiple of 8"):
        SliceEncoder(SliceEncoderConfig(), num_modalities=4, grid_size=12, code_dim=8)
