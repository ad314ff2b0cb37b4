"""The adversarial patch loss: hinge (MedNeRF) or non-saturating (GRAF) losses, lazy R1, and the
per-step D and G terms computed so that one backward pass gives each side only its own gradient.

nerfstudio's Trainer sums every term of the loss dict and calls ``backward`` once. The terms are
built so that this is a proper alternating GAN step:

- ``discriminator_loss`` (and ``r1_penalty``, ``decoder_loss``) see the fake patches *detached*: no
  gradient reaches the generator.
- ``generator_adversarial_loss`` is computed with the discriminator's parameters frozen
  (``requires_grad = False``): gradient flows through D to the fake patches, none reaches D.

The discriminator has its own param group (``discriminator``) and optimizer, so each side is
stepped by its own optimizer from its own loss.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Literal, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.functional.image import structural_similarity_index_measure

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.nerf.discriminator import PATCH_AUGMENTATIONS, PatchDiscriminator


@dataclass
class AdversarialConfig:
    """The adversarial patch loss (``--pipeline.adversarial.*``). ``lambda_adv = 0``: plain MSE training."""

    lambda_adv: float = 0.0
    """Weight of the generator's adversarial loss (0: off, no discriminator is built)."""
    start_step: int = 0
    """Training step from which the adversarial terms are added (before it: MSE only, D untouched)."""
    end_step: Optional[int] = None
    """Training step from which the adversarial terms stop (None: they run to the end); MSE alone after it."""
    lambda_mse: float = 1.0
    """Weight of the MSE term when the adversarial loss is on (generator loss = lambda_mse * MSE + lambda_adv * adv)."""
    loss: Literal["hinge", "non_saturating"] = "hinge"
    """``hinge``: MedNeRF's, with a random margin in [0.8, 1]. ``non_saturating``: GRAF's softplus loss."""
    r1_gamma: float = 10.0
    """Weight gamma of the R1 penalty gamma / 2 * E||grad_x D(x)||^2 on real patches (0: off)."""
    r1_interval: int = 4
    """Lazy R1: applied every r1_interval steps, scaled by r1_interval (1: every step)."""
    augmentation_weight: float = 0.2 / 3
    """Weight of each augmented head's loss (flips, rotation), the identity head's being 1 (MedNeRF: 0.2 / 3)."""
    unseen_patches_per_batch: Optional[int] = None
    """Fake patches rendered at random unseen orbit poses per step (None: as many as training patches)."""
    unseen_elevation_band_deg: Tuple[float, float] = (-5.0, 5.0)
    """Elevation of the unseen poses, degrees relative to the training orbit's, drawn uniformly in this band."""
    decoder: bool = False
    """Self-supervised decoder: the discriminator also reconstructs the real patches."""
    decoder_loss: Literal["mse", "ssim"] = "mse"
    """Reconstruction loss of the decoder: MSE or 1 - SSIM."""
    decoder_weight: float = 1.0
    """Weight of the decoder's reconstruction loss in the discriminator's loss."""
    resolution: int = 32
    """Side the discriminator resizes patches to, pixels (MedNeRF: 32)."""
    channels: Tuple[int, int, int] = (16, 32, 64)
    """Discriminator channels at resolution / 2, / 4, / 8 (MedNeRF: 16, 32, 64)."""

    @property
    def enabled(self) -> bool:
        return self.lambda_adv > 0

    def active_at(self, step: int) -> bool:
        """Whether the adversarial terms are added at training step ``step``."""
        return self.enabled and self.start_step <= step and (self.end_step is None or step < self.end_step)

    def __post_init__(self) -> None:
        if self.lambda_adv < 0 or self.lambda_mse < 0 or self.r1_gamma < 0 or self.decoder_weight < 0:
            raise MRIInputError(
                "adversarial: lambda_adv, lambda_mse, r1_gamma and decoder_weight must be >= 0, got "
                f"{self.lambda_adv}, {self.lambda_mse}, {self.r1_gamma}, {self.decoder_weight}"
            )
        if self.r1_interval < 1:
            raise MRIInputError(f"adversarial: r1_interval must be >= 1, got {self.r1_interval}")
        if self.start_step < 0:
            raise MRIInputError(f"adversarial: start_step must be >= 0, got {self.start_step}")
        if self.end_step is not None and self.end_step <= self.start_step:
            raise MRIInputError(
                f"adversarial: end_step must be > start_step ({self.start_step}) or None, got {self.end_step}"
            )
        if self.unseen_patches_per_batch is not None and self.unseen_patches_per_batch < 1:
            raise MRIInputError(
                f"adversarial: unseen_patches_per_batch must be >= 1 or None, got {self.unseen_patches_per_batch}"
            )
        low, high = self.unseen_elevation_band_deg
        if not -90 < low <= high < 90:
            raise MRIInputError(
                f"adversarial: unseen_elevation_band_deg must satisfy -90 < low <= high < 90, got {low}, {high}"
            )


def head_weights(augmentation_weight: float, device: torch.device | str = "cpu") -> Tensor:
    """[A] weight of each augmentation head's loss: 1 for identity, ``augmentation_weight`` for the others."""
    weights = torch.full((len(PATCH_AUGMENTATIONS),), augmentation_weight, device=device)
    weights[0] = 1.0
    return weights


def discriminator_loss(
    real_logits: Tensor, fake_logits: Tensor, kind: Literal["hinge", "non_saturating"], weights: Tensor
) -> Tensor:
    """D's loss on logits [A, B_real] and [A, B_fake]; heads weighted by ``weights`` [A], batch averaged.

    ``hinge``: relu(m - D(real)) + relu(m + D(fake)), m ~ U(0.8, 1) per logit (MedNeRF).
    ``non_saturating``: softplus(-D(real)) + softplus(D(fake)) (GRAF).
    """
    if kind == "hinge":
        real = F.relu(0.8 + 0.2 * torch.rand_like(real_logits) - real_logits)
        fake = F.relu(0.8 + 0.2 * torch.rand_like(fake_logits) + fake_logits)
    elif kind == "non_saturating":
        real, fake = F.softplus(-real_logits), F.softplus(fake_logits)
    else:
        raise MRIInputError(f"adversarial: loss must be 'hinge' or 'non_saturating', got {kind!r}")
    return (weights * (real.mean(dim=1) + fake.mean(dim=1))).sum()


def generator_loss(fake_logits: Tensor, kind: Literal["hinge", "non_saturating"], weights: Tensor) -> Tensor:
    """G's loss on D's logits [A, B] of fake patches: -D(fake) (hinge) or softplus(-D(fake)) (non-saturating)."""
    if kind == "hinge":
        per_logit = -fake_logits
    elif kind == "non_saturating":
        per_logit = F.softplus(-fake_logits)
    else:
        raise MRIInputError(f"adversarial: loss must be 'hinge' or 'non_saturating', got {kind!r}")
    return (weights * per_logit.mean(dim=1)).sum()


def r1_penalty(real_logits: Tensor, real_patches: Tensor, weights: Tensor) -> Tensor:
    """E_batch ||grad_x sum_a w_a D_a(x)||^2 at the real patches (without the gamma / 2).

    Args:
        real_logits: [A, B] logits computed from ``real_patches`` (which must require grad).
        real_patches: [B, 3, K, K].
        weights: [A] head weights.

    Returns:
        scalar, differentiable with respect to the discriminator's parameters.
    """
    (gradient,) = torch.autograd.grad((weights[:, None] * real_logits).sum(), real_patches, create_graph=True)
    return gradient.pow(2).flatten(1).sum(dim=1).mean()


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """``module``'s parameters with ``requires_grad = False`` inside the context, as they were afterwards."""
    flags = [parameter.requires_grad for parameter in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in zip(module.parameters(), flags):
            parameter.requires_grad_(flag)


class AdversarialPatchLoss(nn.Module):
    """The discriminator and the adversarial terms of one training step.

    Args:
        config: the loss settings (``config.enabled`` must be true).
    """

    def __init__(self, config: AdversarialConfig):
        super().__init__()
        if not config.enabled:
            raise MRIInputError("adversarial: AdversarialPatchLoss needs lambda_adv > 0")
        self.config = config
        self.discriminator = PatchDiscriminator(config.resolution, config.channels, decoder=config.decoder)

    def forward(self, real: Tensor, fake: Tensor, step: int) -> dict[str, Tensor]:
        """The D and G terms of step ``step``.

        Args:
            real: [B_r, 3, K, K] ground-truth patches from training views, in [0, 1].
            fake: [B_f, 3, K, K] rendered patches (training and unseen poses), attached to the generator.
            step: training step (decides whether the lazy R1 runs).

        Returns:
            ``discriminator_loss``, ``generator_adversarial_loss`` (times ``lambda_adv``), and on R1 steps
            ``r1_penalty`` (times ``gamma / 2 * r1_interval``), with the decoder ``decoder_loss``.
        """
        config, discriminator = self.config, self.discriminator
        weights = head_weights(config.augmentation_weight, real.device)
        with_r1 = config.r1_gamma > 0 and step % config.r1_interval == 0
        real = real.detach().requires_grad_(with_r1)
        real_logits, reconstruction = discriminator(real, with_reconstruction=config.decoder)
        fake_logits, _ = discriminator(fake.detach())
        losses = {"discriminator_loss": discriminator_loss(real_logits, fake_logits, config.loss, weights)}
        if with_r1:
            penalty = r1_penalty(real_logits, real, weights)
            losses["r1_penalty"] = 0.5 * config.r1_gamma * config.r1_interval * penalty
        if reconstruction is not None:
            target = discriminator.resize(real.detach())
            if config.decoder_loss == "ssim":
                reconstruction_loss = 1 - structural_similarity_index_measure(reconstruction, target, data_range=1.0)
            else:
                reconstruction_loss = F.mse_loss(reconstruction, target)
            losses["decoder_loss"] = config.decoder_weight * reconstruction_loss
        with frozen(discriminator):
            generator_logits, _ = discriminator(fake)
        adversarial = generator_loss(generator_logits, config.loss, weights)
        losses["generator_adversarial_loss"] = config.lambda_adv * adversarial
        return losses
