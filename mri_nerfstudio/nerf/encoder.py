"""The slice encoder: a subject's scans -> the shape and appearance codes that condition the field.

The poster's design: a 3D CNN over the slices, each slice's features flattened into a row of a
"slice matrix", a Squeeze-and-Excitation block weighting the rows, and the result conditioning the
radiance field. Here the encoder *predicts the subject's codes*: the model adds a learned per-subject
residual (zero for subjects never trained on), so a new subject gets codes from its scans alone and
the field itself is unchanged.

A few numbers cannot say where a new brain's anatomy lies, so with subject grids
(:mod:`~mri_nerfstudio.nerf.subject_grids`) the encoder also predicts each subject's grid: a small 3D CNN
at the working grid's resolution maps the scans to features in place (voxel-aligned, as pixelNeRF aligns
image features), which the model adds to the subject's learned grid.

Input: :class:`~mri_nerfstudio.encoder_input.EncoderInput` tensors, i.e. the BraTS modalities as
channels on a ``G^3`` working grid (slice axis first), the modality presence flags and the acquired
voxel spacing (which tells the network how thick the slices were before resampling).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn


@dataclass
class SliceEncoderConfig:
    """Settings of :class:`SliceEncoder` (``--pipeline.model.encoder.*``)."""

    enabled: Literal["auto", "on", "off"] = "auto"
    """``auto``: on when the data has two or more subjects and the dataparser gives their scans (mri-data does);
    one subject has nothing to generalise from."""
    width: int = 16
    """Channels of the first 3D convolution (doubled at each in-plane down-sampling)."""
    slice_feature_dim: int = 32
    """Length of each row of the slice matrix."""
    squeeze_excitation: bool = True
    """Weight the slice matrix's rows by a Squeeze-and-Excitation block (off: every slice weighs 1)."""
    se_reduction: int = 4
    """SE bottleneck: G slices -> G / se_reduction -> G."""
    output_init_std: float = 0.01
    """Std of the output layer's initial weights (small: codes start near the prior's mean)."""
    grid_features: bool = True
    """With subject grids: also predict each subject's grid features from its scans (:class:`ScanFeatureVolume`)."""
    grid_width: int = 8
    """Channels of the hidden layers of :class:`ScanFeatureVolume` (16: 0.4 dB more on held-out subjects' val
    views of 24 real brains, for 1.26x the step time)."""


class SliceSqueezeExcitation(nn.Module):
    """Squeeze-and-Excitation over the rows of a slice matrix.

    Squeeze: each slice's mean feature [B, S]; excitation: ``sigmoid(W2 relu(W1 s))`` [B, S], one weight
    per slice, multiplying its row.
    """

    def __init__(self, num_slices: int, reduction: int):
        super().__init__()
        hidden = max(1, num_slices // reduction)
        self.excitation = nn.Sequential(nn.Linear(num_slices, hidden), nn.ReLU(), nn.Linear(hidden, num_slices), nn.Sigmoid())

    def forward(self, slice_matrix: Tensor) -> tuple[Tensor, Tensor]:
        """[B, S, F] -> (weighted [B, S, F], weights [B, S])."""
        weights = self.excitation(slice_matrix.mean(dim=-1))
        return slice_matrix * weights[..., None], weights


def _conv_block(c_in: int, c_out: int, stride: tuple[int, int, int] = (1, 1, 1)) -> nn.Sequential:
    """3 x 3 x 3 convolution, group norm, SiLU."""
    return nn.Sequential(
        nn.Conv3d(c_in, c_out, kernel_size=3, stride=stride, padding=1),
        nn.GroupNorm(min(8, c_out), c_out),
        nn.SiLU(),
    )


class ScanFeatureVolume(nn.Module):
    """Scans -> a feature volume on the same grid: two 3 x 3 x 3 convolutions (a 5-cell receptive field), then a
    1 x 1 x 1 projection that starts at zero (so a new model's grids start as its learned grids alone).

    Args:
        num_modalities: C, input channels.
        width: hidden channels.
        channels: F, output features per cell.
    """

    def __init__(self, num_modalities: int, width: int, channels: int):
        super().__init__()
        self.layers = nn.Sequential(_conv_block(num_modalities, width), _conv_block(width, width))
        self.projection = nn.Conv3d(width, channels, kernel_size=1)
        nn.init.zeros_(self.projection.weight)
        nn.init.zeros_(self.projection.bias)

    def forward(self, scans: Tensor) -> Tensor:
        """[B, C, G, G, G] -> [B, F, G, G, G], the same axes (slice axis first)."""
        return self.projection(self.layers(scans))


class SliceEncoder(nn.Module):
    """3D CNN -> slice matrix -> SE -> codes.

    Args:
        config: network sizes and switches.
        num_modalities: C, input channels.
        grid_size: G, cells per axis of the working grid (the dataparser's ``encoder_grid_size``).
        code_dim: size of the output (shape code + appearance code).
        grid_channels: F, features per cell of the predicted subject grids (0: no grid prediction, also when
            ``config.grid_features`` is off).
    """

    def __init__(
        self, config: SliceEncoderConfig, num_modalities: int, grid_size: int, code_dim: int, grid_channels: int = 0
    ):
        super().__init__()
        g, w = grid_size, config.width
        if g < 8 or g % 8:
            raise ValueError(f"encoder grid_size must be a multiple of 8 and >= 8, got {g}")
        # Strides (1, 2, 2) keep every slice and shrink each one in-plane: G x G -> G/8 x G/8.
        self.cnn = nn.Sequential(
            _conv_block(num_modalities, w, (1, 2, 2)),
            _conv_block(w, 2 * w, (1, 2, 2)),
            _conv_block(2 * w, 4 * w, (1, 2, 2)),
        )
        self.slice_rows = nn.Linear(4 * w * (g // 8) ** 2, config.slice_feature_dim)
        self.squeeze_excitation = SliceSqueezeExcitation(g, config.se_reduction) if config.squeeze_excitation else None
        self.context_dim = num_modalities + 3  # presence flags + log spacing
        self.head = nn.Sequential(
            nn.Linear(g * config.slice_feature_dim + self.context_dim, 128),
            nn.SiLU(),
            nn.Linear(128, code_dim),
        )
        nn.init.normal_(self.head[-1].weight, std=config.output_init_std)
        nn.init.zeros_(self.head[-1].bias)
        self.grid_head: ScanFeatureVolume | None = None
        if config.grid_features and grid_channels > 0:
            self.grid_head = ScanFeatureVolume(num_modalities, config.grid_width, grid_channels)

    def slice_matrix(self, scans: Tensor) -> Tensor:
        """Scans [B, C, S, G, G] -> one row per slice [B, S, F]."""
        features = self.cnn(scans)  # [B, 4w, S, G/8, G/8]
        rows = features.permute(0, 2, 1, 3, 4).flatten(2)  # [B, S, 4w * (G/8)^2]
        return self.slice_rows(rows)

    def forward(self, scans: Tensor, present: Tensor, spacing_mm: Tensor) -> Tensor:
        """Codes of B subjects.

        Args:
            scans: [B, C, S, G, G] modalities on the working grid (S = G slices).
            present: [B, C] 1 for the modalities each subject has.
            spacing_mm: [B, 3] acquired voxel size, mm.

        Returns:
            [B, code_dim].
        """
        matrix = self.slice_matrix(scans)
        if self.squeeze_excitation is not None:
            matrix, _ = self.squeeze_excitation(matrix)
        # log spacing: 1 mm -> 0, 5 mm slices -> 1.6; a scale-free input for the MLP.
        context = torch.cat([present, spacing_mm.clamp(min=1e-3).log()], dim=-1)
        return self.head(torch.cat([matrix.flatten(1), context], dim=-1))
