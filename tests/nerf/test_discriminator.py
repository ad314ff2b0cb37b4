"""The FastGAN-style patch discriminator: logits per augmentation head, any patch size, spectral norm, decoder."""

from __future__ import annotations

import pytest
import torch

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.nerf.discriminator import PATCH_AUGMENTATIONS, PatchDiscriminator


def _patches(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("size", [8, 32])
def test_one_logit_per_head_and_patch_for_any_patch_size(size):
    torch.manual_seed(0)
    discriminator = PatchDiscriminator()
    logits, reconstruction = discriminator(_patches(5, size))
    assert logits.shape == (len(PATCH_AUGMENTATIONS), 5) and torch.isfinite(logits).all()
    assert reconstruction is None


def test_heads_see_the_augmented_patches():
    torch.manual_seed(0)
    discriminator = PatchDiscriminator().eval()  # eval: no power iteration, the same weights in both passes
    patches = _patches(3, 32)
    logits, _ = discriminator(patches)
    features = discriminator.features(discriminator.resize(patches.flip(-1)) * 2 - 1)
    horizontal = list(PATCH_AUGMENTATIONS).index("horizontal_flip")
    expected = discriminator.heads[horizontal](features).reshape(3)
    torch.testing.assert_close(logits[horizontal], expected, rtol=1e-4, atol=1e-5)


def test_convolutions_are_spectrally_normalised():
    torch.manual_seed(0)
    discriminator = PatchDiscriminator()
    for _ in range(30):  # power iterations converge during training-mode forwards
        discriminator(_patches(2, 32))
    conv = discriminator.down[1].conv
    sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
    assert sigma == pytest.approx(1.0, abs=0.05)


def test_decoder_reconstructs_the_patch_in_unit_range():
    torch.manual_seed(0)
    discriminator = PatchDiscriminator(decoder=True)
    _, reconstruction = discriminator(_patches(2, 16), with_reconstruction=True)
    assert reconstruction.shape == (2, 3, 32, 32)
    assert 0.0 <= float(reconstruction.detach().min()) and float(reconstruction.detach().max()) <= 1.0
    with pytest.raises(MRIInputError, match="decoder=True"):
        PatchDiscriminator()(_patches(1, 32), with_reconstruction=True)
    with pytest.raises(MRIInputError, match="multiple of 8"):
        PatchDiscriminator(resolution=20)
