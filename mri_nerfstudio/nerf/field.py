"""Conditional radiance fields: world positions, view directions and per-subject codes -> density and colour.

One nerfstudio :class:`Field` (:class:`ConditionalRadianceField`) with two interchangeable backbones:

- :class:`MLPBackbone`: GRAF / MedNeRF's generator (positional encoding, 8 x 256 ReLU MLP with a skip,
  shape code at the input and the skip, appearance code in the colour branch). About 0.68 M
  parameters with 128 + 128-d codes: accurate but slow on a CPU.
- :class:`FeatureGridBackbone`: learnable dense feature grids over ``[-1, 1]^3`` (several resolutions,
  trilinear interpolation) and a tiny MLP. Most parameters sit in the grids, but each sample reads
  only 8 grid cells per level, so a step costs a fraction of the MLP's: the CPU preset.

The field reads the conditioning from ``ray_samples.metadata`` (``"shape_code"`` [..., Ds] and
``"appearance_code"`` [..., Da], broadcastable to the samples): the model puts the subject's codes
there. Missing codes are zeros, the mean of the codes' prior.

The colour is either ``free`` (the backbone's colour head, conditioned on the appearance code) or
``tied`` to the density: one intensity ``I`` per point, density ``k * I`` and colour ``I``, the image
formation of the views themselves (:func:`mri_nerfstudio.views.render_views`).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from nerfstudio.cameras.rays import RaySamples
from nerfstudio.field_components.field_heads import FieldHeadNames
from nerfstudio.fields.base_field import Field
from torch import Tensor, nn

from mri_nerfstudio.views import DEFAULT_DENSITY_SCALE

DensityActivation = Literal["relu", "softplus"]
ColourModel = Literal["free", "tied"]
COLOUR_MODELS: tuple[str, ...] = ("free", "tied")


class PositionalEncoding(nn.Module):
    """NeRF / GRAF frequency encoding ``[x, sin(2^l x), cos(2^l x)]`` for ``l = 0 .. L-1`` (no factor pi).

    Args:
        num_frequencies: L.
        in_dim: size of the last axis of the input.
    """

    def __init__(self, num_frequencies: int, in_dim: int = 3):
        super().__init__()
        self.in_dim = in_dim
        self.register_buffer("frequencies", 2.0 ** torch.arange(num_frequencies, dtype=torch.float32), persistent=False)

    @property
    def out_dim(self) -> int:
        return self.in_dim * (1 + 2 * len(self.frequencies))

    def forward(self, x: Tensor) -> Tensor:
        """[..., in_dim] -> [..., in_dim * (1 + 2L)]."""
        scaled = (x[..., None, :] * self.frequencies[:, None]).flatten(-2)  # [..., L * in_dim]
        return torch.cat([x, scaled.sin(), scaled.cos()], dim=-1)


class RadianceBackbone(nn.Module):
    """What :class:`ConditionalRadianceField` needs from a network: density logits, features, colour.

    Inputs are flat: ``N`` samples. Positions are world units; the scene is the unit sphere.
    """

    shape_code_dim: int
    appearance_code_dim: int

    @abstractmethod
    def density_logits(self, positions: Tensor, shape_code: Tensor) -> tuple[Tensor, Tensor]:
        """Density before its activation [N, 1] and features for the colour [N, F].

        Args:
            positions: [N, 3] world units.
            shape_code: [N, Ds].
        """

    @abstractmethod
    def colour(self, features: Tensor, directions: Tensor, appearance_code: Tensor) -> Tensor:
        """Colour [N, 3] in [0, 1] from features [N, F], unit view directions [N, 3] and appearance code [N, Da]."""


class MLPBackbone(RadianceBackbone):
    """GRAF / MedNeRF's generator network.

    ``[PE(x), z_shape]`` -> ``depth`` ReLU layers of ``width`` (the input is concatenated again after
    layer ``skip_after``, 0-based) -> density logit (linear) and a ``width`` feature (linear), then
    ``[feature, PE(d), z_app]`` -> ``colour_width`` ReLU -> 3, sigmoid.

    Parameters with the defaults (codes 128 + 128): 677,764 (trunk 558,592; density 257; feature
    65,792; colour 53,123), MedNeRF's ~0.68 M.

    Args:
        shape_code_dim: Ds.
        appearance_code_dim: Da.
        width: trunk width.
        depth: number of trunk layers.
        skip_after: index of the trunk layer whose output is concatenated with the input.
        colour_width: width of the colour branch's hidden layer.
        position_frequencies: L of the position encoding (10: 63-d with the input).
        direction_frequencies: L of the direction encoding (4: 27-d with the input).
    """

    def __init__(
        self,
        shape_code_dim: int = 128,
        appearance_code_dim: int = 128,
        width: int = 256,
        depth: int = 8,
        skip_after: int = 4,
        colour_width: int = 128,
        position_frequencies: int = 10,
        direction_frequencies: int = 4,
    ):
        super().__init__()
        if not 0 <= skip_after < depth - 1:
            raise ValueError(f"skip_after must index a trunk layer before the last, got {skip_after} for depth {depth}")
        self.shape_code_dim = shape_code_dim
        self.appearance_code_dim = appearance_code_dim
        self.skip_after = skip_after
        self.position_encoding = PositionalEncoding(position_frequencies)
        self.direction_encoding = PositionalEncoding(direction_frequencies)
        in_dim = self.position_encoding.out_dim + shape_code_dim
        self.trunk = nn.ModuleList(
            nn.Linear(in_dim if i == 0 else width + (in_dim if i == skip_after + 1 else 0), width) for i in range(depth)
        )
        self.density_head = nn.Linear(width, 1)
        self.feature_head = nn.Linear(width, width)
        self.colour_branch = nn.Sequential(
            nn.Linear(width + self.direction_encoding.out_dim + appearance_code_dim, colour_width),
            nn.ReLU(),
            nn.Linear(colour_width, 3),
        )

    def density_logits(self, positions: Tensor, shape_code: Tensor) -> tuple[Tensor, Tensor]:
        inputs = torch.cat([self.position_encoding(positions), shape_code], dim=-1)
        hidden = inputs
        for i, layer in enumerate(self.trunk):
            hidden = F.relu(layer(hidden))
            if i == self.skip_after:
                hidden = torch.cat([inputs, hidden], dim=-1)
        return self.density_head(hidden), self.feature_head(hidden)

    def colour(self, features: Tensor, directions: Tensor, appearance_code: Tensor) -> Tensor:
        inputs = torch.cat([features, self.direction_encoding(directions), appearance_code], dim=-1)
        return torch.sigmoid(self.colour_branch(inputs))


class FeatureGridBackbone(RadianceBackbone):
    """Dense feature grids over ``[-1, 1]^3`` and a tiny MLP (the CPU preset).

    Each level ``l`` is a grid of ``resolutions[l]^3`` vertices x ``channels`` features spanning the
    cube (vertex 0 at -1, vertex R-1 at +1), read by trilinear interpolation (positions outside the
    cube read the nearest face). ``[features of all levels, z_shape]`` -> ``width`` ReLU -> density
    logit (linear) and the ``width`` hidden vector as colour feature; ``[feature, z_app]`` -> 3,
    sigmoid. The colour ignores the view direction (MRI views are emission images: no view effects).

    Parameters with the defaults (resolutions 32, 64, 96; 4 channels; codes 8 + 8): 4,720,220, of
    which 4,718,592 in the grids; a sample reads 8 vertices per level and runs about 1,600 multiply-adds.

    Args:
        shape_code_dim: Ds.
        appearance_code_dim: Da.
        resolutions: vertices per axis of each level (>= 2).
        channels: features per vertex.
        width: hidden width of the MLP.
        init_std: standard deviation of the grids' normal initialisation.
    """

    def __init__(
        self,
        shape_code_dim: int = 8,
        appearance_code_dim: int = 8,
        resolutions: Sequence[int] = (32, 64, 96),
        channels: int = 4,
        width: int = 64,
        init_std: float = 0.1,
    ):
        super().__init__()
        if not resolutions or min(resolutions) < 2:
            raise ValueError(f"resolutions must be a non-empty list of sizes >= 2, got {tuple(resolutions)}")
        self.shape_code_dim = shape_code_dim
        self.appearance_code_dim = appearance_code_dim
        self.resolutions = tuple(int(r) for r in resolutions)
        # Each grid is a table [R^3, C], vertex (i, j, k) at row (i R + j) R + k: trilinear interpolation
        # gathers 8 contiguous rows, about twice as fast on CPU as grid_sample on a [C, R, R, R] volume.
        self.grids = nn.ParameterList(nn.Parameter(init_std * torch.randn(r**3, channels)) for r in self.resolutions)
        self.density_mlp = nn.Sequential(nn.Linear(len(self.resolutions) * channels + shape_code_dim, width), nn.ReLU())
        self.density_head = nn.Linear(width, 1)
        self.colour_head = nn.Linear(width + appearance_code_dim, 3)

    def grid_features(self, positions: Tensor) -> Tensor:
        """Trilinearly interpolated features of every level, concatenated: [N, 3] -> [N, L * C]."""
        levels = zip(self.grids, self.resolutions)
        return torch.cat([trilinear_interpolation(grid, resolution, positions) for grid, resolution in levels], dim=-1)

    def density_logits(self, positions: Tensor, shape_code: Tensor) -> tuple[Tensor, Tensor]:
        hidden = self.density_mlp(torch.cat([self.grid_features(positions), shape_code], dim=-1))
        return self.density_head(hidden), hidden

    def colour(self, features: Tensor, directions: Tensor, appearance_code: Tensor) -> Tensor:
        return torch.sigmoid(self.colour_head(torch.cat([features, appearance_code], dim=-1)))

    def total_variation(self) -> Tensor:
        """Mean squared difference between neighbouring vertices, summed over axes and levels (scalar)."""
        loss = self.grids[0].new_zeros(())
        for grid, resolution in zip(self.grids, self.resolutions):
            volume = grid.view(resolution, resolution, resolution, -1)
            loss = loss + sum(volume.diff(dim=axis).square().mean() for axis in range(3))
        return loss


_CORNERS = torch.tensor([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)])
"""[8, 3] offsets of a grid cell's corners."""


def trilinear_interpolation(table: Tensor, resolution: int, positions: Tensor) -> Tensor:
    """Trilinear interpolation in a dense grid stored as a table.

    Args:
        table: [R^3, C] vertex features, vertex (i, j, k) (along x, y, z) at row ``(i R + j) R + k``;
            the vertices span ``[-1, 1]^3`` (vertex 0 at -1, vertex R - 1 at +1).
        resolution: R >= 2.
        positions: [N, 3] world units; outside the cube they are clamped onto it.

    Returns:
        [N, C] interpolated features.
    """
    continuous = (positions.clamp(-1.0, 1.0) + 1.0) * (0.5 * (resolution - 1))  # [N, 3] in vertex units
    lower = continuous.detach().floor().clamp(max=resolution - 2).long()
    fraction = continuous - lower
    offsets = _CORNERS.to(positions.device)
    corners = lower[:, None, :] + offsets  # [N, 8, 3]
    rows = (corners[..., 0] * resolution + corners[..., 1]) * resolution + corners[..., 2]  # [N, 8]
    weights = torch.where(offsets.bool(), fraction[:, None, :], 1.0 - fraction[:, None, :])  # [N, 8, 3]
    return (table[rows] * weights.prod(dim=-1, keepdim=True)).sum(dim=1)


class ConditionalRadianceField(Field):
    """Density and colour of a subject, conditioned on its shape and appearance codes.

    Outputs (for ray samples of batch shape ``[...]``): ``FieldHeadNames.DENSITY`` [..., 1] >= 0 (per
    world unit) and ``FieldHeadNames.RGB`` [..., 3]: in [0, 1] with the ``free`` colour, ``density / k``
    (>= 0, the intensity; the same in the three channels) with the ``tied`` colour.

    Args:
        backbone: the network (:class:`MLPBackbone` or :class:`FeatureGridBackbone`).
        density_activation: ``relu`` (GRAF) or ``softplus`` (smooth, never stuck at zero: the grid).
        density_noise_std: standard deviation of the Gaussian noise added to the density logits in
            training mode (GRAF's regulariser); the model anneals it through this attribute.
        colour: ``free``: the backbone's colour head; ``tied``: colour = density / k (the backbone's
            colour head and the appearance code are then unused).
        density_scale: k, density per unit intensity per world unit (> 0), for the ``tied`` colour.
    """

    def __init__(
        self,
        backbone: RadianceBackbone,
        density_activation: DensityActivation = "relu",
        density_noise_std: float = 0.0,
        colour: ColourModel = "free",
        density_scale: float = DEFAULT_DENSITY_SCALE,
    ):
        super().__init__()
        if density_activation not in ("relu", "softplus"):
            raise ValueError(f"density_activation must be 'relu' or 'softplus', got {density_activation!r}")
        if colour not in COLOUR_MODELS:
            raise ValueError(f"colour must be one of {COLOUR_MODELS}, got {colour!r}")
        if not density_scale > 0:
            raise ValueError(f"density_scale must be > 0, got {density_scale}")
        self.backbone = backbone
        self.density_activation = density_activation
        self.density_noise_std = density_noise_std
        self.colour = colour
        self.density_scale = density_scale

    def density(self, positions: Tensor, shape_code: Tensor, add_noise: bool = False) -> tuple[Tensor, Tensor]:
        """Density [N, 1] >= 0 (per world unit) and colour features [N, F].

        Args:
            positions: [N, 3] world units.
            shape_code: [N, Ds].
            add_noise: add ``density_noise_std`` Gaussian noise to the logits.
        """
        logits, features = self.backbone.density_logits(positions, shape_code)
        if add_noise and self.density_noise_std > 0:
            logits = logits + self.density_noise_std * torch.randn_like(logits)
        density = F.relu(logits) if self.density_activation == "relu" else F.softplus(logits)
        return density, features

    def point_outputs(
        self, positions: Tensor, directions: Tensor, shape_code: Tensor, appearance_code: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Density [N, 1] >= 0 (per world unit) and colour [N, 3] in [0, 1] at flat points.

        Args:
            positions: [N, 3] world units.
            directions: [N, 3] unit view directions.
            shape_code: [N, Ds].
            appearance_code: [N, Da].
        """
        density, features = self.density(positions, shape_code, add_noise=self.training)
        if self.colour == "tied":
            return density, self.tied_colour(density)
        return density, self.backbone.colour(features, directions, appearance_code)

    def tied_colour(self, density: Tensor) -> Tensor:
        """The ``tied`` colour: the intensity ``density / k`` in every channel, [..., 1] -> [..., 3]."""
        return (density / self.density_scale).expand(*density.shape[:-1], 3)

    def forward(self, ray_samples: RaySamples, compute_normals: bool = False) -> dict[FieldHeadNames, Tensor]:
        """nerfstudio's :meth:`Field.forward`; with the ``tied`` colour, the colour comes from the density."""
        if self.colour == "free":
            return super().forward(ray_samples, compute_normals=compute_normals)
        if compute_normals:
            raise ValueError("ConditionalRadianceField has no normals")
        density, _ = self.get_density(ray_samples)
        return {FieldHeadNames.DENSITY: density, FieldHeadNames.RGB: self.tied_colour(density)}

    def sample_codes(self, ray_samples: RaySamples) -> tuple[Tensor, Tensor]:
        """The shape [..., Ds] and appearance [..., Da] codes of every sample (batch shape ``[...]``)."""
        positions = ray_samples.frustums.get_positions()
        batch = positions.shape[:-1]
        shape_code = _conditioning(ray_samples, "shape_code", self.backbone.shape_code_dim, batch, positions)
        appearance_dim = self.backbone.appearance_code_dim
        appearance_code = _conditioning(ray_samples, "appearance_code", appearance_dim, batch, positions)
        return shape_code, appearance_code

    def get_density(self, ray_samples: RaySamples) -> tuple[Tensor, Tensor]:
        positions = ray_samples.frustums.get_positions()
        batch = positions.shape[:-1]
        shape_code = _conditioning(ray_samples, "shape_code", self.backbone.shape_code_dim, batch, positions)
        density, features = self.density(
            positions.reshape(-1, 3), shape_code.reshape(-1, shape_code.shape[-1]), add_noise=self.training
        )
        return density.view(*batch, 1), features.view(*batch, -1)

    def get_outputs(
        self, ray_samples: RaySamples, density_embedding: Tensor | None = None
    ) -> dict[FieldHeadNames, Tensor]:
        if density_embedding is None:
            raise ValueError("ConditionalRadianceField.get_outputs needs the features from get_density")
        batch = density_embedding.shape[:-1]
        directions = ray_samples.frustums.directions.expand(*batch, 3)
        appearance_code = _conditioning(
            ray_samples, "appearance_code", self.backbone.appearance_code_dim, batch, density_embedding
        )
        rgb = self.backbone.colour(
            density_embedding.reshape(-1, density_embedding.shape[-1]),
            directions.reshape(-1, 3),
            appearance_code.reshape(-1, appearance_code.shape[-1]),
        )
        return {FieldHeadNames.RGB: rgb.view(*batch, 3)}


def _conditioning(ray_samples: RaySamples, key: str, dim: int, batch: torch.Size, like: Tensor) -> Tensor:
    """``ray_samples.metadata[key]`` expanded to [*batch, dim], or zeros when absent."""
    metadata = ray_samples.metadata or {}
    if key not in metadata:
        return like.new_zeros(*batch, dim)
    code = metadata[key]
    if code.shape[-1] != dim:
        raise ValueError(f"ray_samples.metadata[{key!r}] has {code.shape[-1]} features, the field expects {dim}")
    return code.expand(*batch, dim)
