"""Adversarial losses, R1 and the per-step D / G terms: each side gets only its own gradient."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.nerf.adversarial import (
    AdversarialConfig,
    AdversarialPatchLoss,
    discriminator_loss,
    frozen,
    generator_loss,
    head_weights,
    r1_penalty,
)

WEIGHTS = head_weights(0.2 / 3)


def test_head_weights_follow_mednerf():
    torch.testing.assert_close(WEIGHTS, torch.tensor([1.0, 0.2 / 3, 0.2 / 3, 0.2 / 3]))


def test_hinge_and_non_saturating_losses():
    confident_real, confident_fake = torch.full((4, 2), 2.0), torch.full((4, 2), -2.0)
    assert float(discriminator_loss(confident_real, confident_fake, "hinge", WEIGHTS)) == 0.0
    # Logits 0 on both sides: hinge margin m ~ U(0.8, 1) on each, weighted sum of heads = 1.2.
    hinge = float(discriminator_loss(torch.zeros(4, 2), torch.zeros(4, 2), "hinge", WEIGHTS))
    assert 2 * 0.8 * 1.2 <= hinge <= 2 * 1.0 * 1.2
    assert float(discriminator_loss(torch.zeros(4, 2), torch.zeros(4, 2), "non_saturating", WEIGHTS)) == (
        pytest.approx(2 * math.log(2) * 1.2)
    )
    assert float(generator_loss(confident_fake, "hinge", WEIGHTS)) == pytest.approx(2.0 * 1.2)
    assert float(generator_loss(torch.zeros(4, 2), "non_saturating", WEIGHTS)) == pytest.approx(math.log(2) * 1.2)
    with pytest.raises(MRIInputError, match="hinge"):
        generator_loss(confident_fake, "wasserstein", WEIGHTS)


def test_r1_is_nonzero_and_differentiable_in_the_discriminator():
    torch.manual_seed(0)
    loss = AdversarialPatchLoss(AdversarialConfig(lambda_adv=1.0))
    real = torch.rand(3, 3, 8, 8, requires_grad=True)
    logits, _ = loss.discriminator(real)
    penalty = r1_penalty(logits, real, WEIGHTS)
    assert float(penalty.detach()) > 0
    penalty.backward()
    gradients = [p.grad for p in loss.discriminator.parameters() if p.grad is not None]
    assert gradients and sum(float(g.abs().sum()) for g in gradients) > 0


def test_r1_is_lazy_and_scaled_by_its_interval():
    torch.manual_seed(0)
    loss = AdversarialPatchLoss(AdversarialConfig(lambda_adv=1.0, r1_interval=3, r1_gamma=10.0))
    real, fake = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    assert "r1_penalty" in loss(real, fake, step=0) and "r1_penalty" not in loss(real, fake, step=1)
    assert "r1_penalty" not in AdversarialPatchLoss(AdversarialConfig(lambda_adv=1.0, r1_gamma=0.0))(real, fake, 0)


@pytest.mark.parametrize("kind,decoder", [("hinge", True), ("non_saturating", False)])
def test_each_side_gets_only_its_own_gradient(kind, decoder):
    """D's terms never reach the generator, G's adversarial term never reaches D."""
    torch.manual_seed(0)
    generator = nn.Conv2d(3, 3, 1)
    loss = AdversarialPatchLoss(AdversarialConfig(lambda_adv=0.5, loss=kind, decoder=decoder, r1_interval=1))
    discriminator_parameters = list(loss.discriminator.parameters())
    real = torch.rand(2, 3, 8, 8)
    fake = torch.sigmoid(generator(torch.rand(3, 3, 8, 8)))
    terms = loss(real, fake, step=0)
    assert set(terms) == {"discriminator_loss", "r1_penalty", "generator_adversarial_loss"} | (
        {"decoder_loss"} if decoder else set()
    )
    for name, term in terms.items():
        to_generator = torch.autograd.grad(term, list(generator.parameters()), retain_graph=True, allow_unused=True)
        to_discriminator = torch.autograd.grad(term, discriminator_parameters, retain_graph=True, allow_unused=True)
        reaches_generator = any(g is not None and bool(g.abs().sum() > 0) for g in to_generator)
        reaches_discriminator = any(g is not None and bool(g.abs().sum() > 0) for g in to_discriminator)
        is_generator_term = name == "generator_adversarial_loss"
        assert (reaches_generator, reaches_discriminator) == (is_generator_term, not is_generator_term), name
    assert all(p.requires_grad for p in discriminator_parameters)  # unfrozen after G's term


def test_active_at_is_the_start_end_window():
    window = AdversarialConfig(lambda_adv=1e-3, start_step=10, end_step=20)
    assert [window.active_at(step) for step in (9, 10, 19, 20)] == [False, True, True, False]
    assert AdversarialConfig(lambda_adv=1e-3).active_at(10**6) and not AdversarialConfig().active_at(0)


def test_frozen_restores_the_flags():
    module = nn.Linear(2, 2)
    module.bias.requires_grad_(False)
    with frozen(module):
        assert not any(p.requires_grad for p in module.parameters())
    assert module.weight.requires_grad and not module.bias.requires_grad


def test_config_is_checked():
    assert not AdversarialConfig().enabled and AdversarialConfig(lambda_adv=1e-3).enabled
    with pytest.raises(MRIInputError, match="r1_interval"):
        AdversarialConfig(r1_interval=0)
    with pytest.raises(MRIInputError, match="start_step"):
        AdversarialConfig(start_step=-1)
    with pytest.raises(MRIInputError, match="end_step must be > start_step"):
        AdversarialConfig(start_step=100, end_step=100)
    with pytest.raises(MRIInputError, match="unseen_patches_per_batch"):
        AdversarialConfig(unseen_patches_per_batch=0)
    with pytest.raises(MRIInputError, match="unseen_elevation_band_deg"):
        AdversarialConfig(unseen_elevation_band_deg=(10.0, -10.0))
    with pytest.raises(MRIInputError, match="lambda_adv > 0"):
        AdversarialPatchLoss(AdversarialConfig())
