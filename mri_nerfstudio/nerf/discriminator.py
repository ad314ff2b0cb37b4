"""MedNeRF's FastGAN-style patch discriminator: spectral-normed convolutions, skip-layer excitation,
one logit head per augmentation, and an optional self-supervised decoder of real patches.

Patches of any side K are resized bilinearly to the discriminator's ``resolution`` (32, MedNeRF's K),
so the same network serves the 8 x 8 patches of tests and the 32 x 32 patches of training. Features
at ``resolution``, ``/2``, ``/4`` and ``/8`` pixels; two skip-layer excitation blocks gate the two
deepest maps with the two shallowest (FastGAN's SLE: a cheap long-range skip that needs no
normalisation). Each augmentation (identity, vertical flip, horizontal flip, 90-degree rotation) has
its own head, as in MedNeRF: the trunk is shared, the decision for a flipped or rotated patch is not.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from mri_nerfstudio.errors import MRIInputError


PATCH_AUGMENTATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "identity": lambda x: x,
    "vertical_flip": lambda x: x.flip(-2),
    "horizontal_flip": lambda x: x.flip(-1),
    "rotate_90": lambda x: x.rot90(1, dims=(-2, -1)),
}
"""The augmentations the heads are trained on, identity first, each mapping [B, C, K, K] -> [B, C, K, K]."""


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1, padding: int = 0) -> nn.Module:
    return spectral_norm(nn.Conv2d(in_channels, out_channels, kernel, stride, padding))


class DownBlock(nn.Module):
    """Halves the resolution: [B, C_in, R, R] -> [B, C_out, R / 2, R / 2] (strided 4 x 4 conv, LeakyReLU 0.2)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = _conv(in_channels, out_channels, 4, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(self.conv(x), 0.2)


class SkipLayerExcitation(nn.Module):
    """FastGAN's skip-layer excitation: channel gates for a deep map computed from a shallow one.

    ``gate = sigmoid(conv1x1(swish(conv4x4(avgpool4(shallow)))))`` [B, C_deep, 1, 1], output ``deep * gate``.
    """

    def __init__(self, shallow_channels: int, deep_channels: int):
        super().__init__()
        self.squeeze = _conv(shallow_channels, deep_channels, 4)
        self.excite = _conv(deep_channels, deep_channels, 1)

    def forward(self, shallow: Tensor, deep: Tensor) -> Tensor:
        pooled = F.adaptive_avg_pool2d(shallow, 4)
        gate = torch.sigmoid(self.excite(F.silu(self.squeeze(pooled))))
        return deep * gate


class PatchDecoder(nn.Module):
    """Self-supervised decoder: the deepest features [B, C, R/8, R/8] back to the patch [B, 3, R, R] in [0, 1]."""

    def __init__(self, in_channels: int, width: int = 32):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1), nn.LeakyReLU(0.2)]
        for _ in range(3):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(width, width, 3, padding=1)]
            layers += [nn.GLU(dim=1), nn.Conv2d(width // 2, width, 1)]
        layers += [nn.Conv2d(width, 3, 3, padding=1), nn.Sigmoid()]
        self.layers = nn.Sequential(*layers)

    def forward(self, features: Tensor) -> Tensor:
        return self.layers(features)


class PatchDiscriminator(nn.Module):
    """Real/fake logits of K x K patches, one head per :data:`PATCH_AUGMENTATIONS` entry.

    Args:
        resolution: side the patches are resized to, pixels (a multiple of 8, >= 32).
        channels: feature channels at ``resolution / 2``, ``/ 4``, ``/ 8`` (MedNeRF: 16, 32, 64).
        decoder: add :class:`PatchDecoder` (self-supervised reconstruction of real patches).
    """

    def __init__(self, resolution: int = 32, channels: tuple[int, int, int] = (16, 32, 64), decoder: bool = False):
        super().__init__()
        if resolution < 32 or resolution % 8:
            raise MRIInputError(f"discriminator resolution must be a multiple of 8 and >= 32, got {resolution}")
        c1, c2, c3 = channels
        self.resolution = resolution
        self.stem = nn.Sequential(_conv(3, c1 // 2, 3, padding=1), nn.LeakyReLU(0.2))  # R
        self.down = nn.ModuleList([DownBlock(c1 // 2, c1), DownBlock(c1, c2), DownBlock(c2, c3)])  # R/2, R/4, R/8
        self.excite_quarter = SkipLayerExcitation(c1 // 2, c2)  # R -> gates R/4
        self.excite_eighth = SkipLayerExcitation(c1, c3)  # R/2 -> gates R/8
        self.heads = nn.ModuleList([_conv(c3, 1, resolution // 8) for _ in PATCH_AUGMENTATIONS])
        self.decoder = PatchDecoder(c3) if decoder else None

    def resize(self, patches: Tensor) -> Tensor:
        """[B, 3, K, K'] -> [B, 3, R, R], bilinear (identity when K = K' = R)."""
        if patches.shape[-2:] == (self.resolution, self.resolution):
            return patches
        return F.interpolate(patches, size=(self.resolution,) * 2, mode="bilinear", align_corners=False)

    def features(self, patches: Tensor) -> Tensor:
        """Deepest feature map [B, C3, R/8, R/8] of patches [B, 3, R, R] (already resized)."""
        full = self.stem(patches)
        half = self.down[0](full)
        quarter = self.excite_quarter(full, self.down[1](half))
        return self.excite_eighth(half, self.down[2](quarter))

    def forward(self, patches: Tensor, with_reconstruction: bool = False) -> tuple[Tensor, Tensor | None]:
        """Logits of patches in [0, 1].

        Args:
            patches: [B, 3, K, K] colours in [0, 1] (any K; resized to ``resolution``).
            with_reconstruction: also decode the identity patches (needs ``decoder=True``).

        Returns:
            logits [A, B] (row ``a``: head ``a`` on augmentation ``a`` of the patches, identity first) and
            the reconstruction [B, 3, R, R] of the identity patches, or None.
        """
        patches = self.resize(patches) * 2 - 1
        batch = patches.shape[0]
        augmented = torch.cat([augment(patches) for augment in PATCH_AUGMENTATIONS.values()])
        features = self.features(augmented)
        logits = torch.stack(
            [head(features[a * batch : (a + 1) * batch]).reshape(batch) for a, head in enumerate(self.heads)]
        )
        reconstruction = None
        if with_reconstruction:
            if self.decoder is None:
                raise MRIInputError("discriminator: with_reconstruction needs decoder=True")
            reconstruction = self.decoder(features[:batch])
        return logits, reconstruction
