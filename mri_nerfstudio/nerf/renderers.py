"""Ray renderers, one per view mode of :mod:`mri_nerfstudio.views`, so the model forms images as the data was formed.

Every renderer takes per-sample colours ``rgb`` [..., S, 3], densities ``density`` [..., S, 1] (per
world unit) and the ``ray_samples`` (distances ``t`` and spacings ``delta``, world units) of rays with
batch shape ``[...]``, and returns a dict of per-ray outputs:

- ``rgb`` [..., 3]: the pixel;
- ``accumulation`` [..., 1]: the ray's opacity ``1 - exp(-sum_i sigma_i delta_i)`` (equal to the sum
  of the emission-absorption weights);
- ``depth`` [..., 1]: a distance along the ray, world units, defined per mode.

Samples with ``delta = 0`` (rays that miss the unit sphere get ``near = far``) contribute nothing.
"""

from __future__ import annotations

from nerfstudio.cameras.rays import RaySamples
from nerfstudio.model_components.renderers import RGBRenderer
from torch import Tensor, nn

from mri_nerfstudio.errors import MRIInputError

_EPS = 1e-10


def _optical_depths(density: Tensor, ray_samples: RaySamples) -> Tensor:
    """``sigma_i delta_i`` [..., S, 1]."""
    return density * ray_samples.deltas


def _sample_distances(ray_samples: RaySamples) -> Tensor:
    """Distance of each sample's midpoint along its ray [..., S, 1], world units."""
    return (ray_samples.frustums.starts + ray_samples.frustums.ends) / 2


class EmissionAbsorptionRenderer(nn.Module):
    """``volume`` mode: NeRF's quadrature on a black background.

    ``alpha_i = 1 - exp(-sigma_i delta_i)``, ``w_i = alpha_i prod_{j<i} (1 - alpha_j)``,
    ``rgb = sum_i w_i c_i``; ``depth`` is the expected termination distance ``sum_i w_i t_i / sum_i w_i``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.rgb_renderer = RGBRenderer(background_color="black")

    def forward(self, rgb: Tensor, density: Tensor, ray_samples: RaySamples) -> dict[str, Tensor]:
        weights = ray_samples.get_weights(density)  # [..., S, 1]
        accumulation = weights.sum(dim=-2)
        depth = (weights * _sample_distances(ray_samples)).sum(dim=-2) / accumulation.clamp(min=_EPS)
        return {"rgb": self.rgb_renderer(rgb=rgb, weights=weights), "accumulation": accumulation, "depth": depth}


class AttenuationRenderer(nn.Module):
    """``drr`` mode: X-ray-like attenuation, ``rgb = 1 - exp(-sum_i sigma_i delta_i)`` (grey; colour unused).

    ``depth`` is the attenuation-weighted mean distance ``sum_i sigma_i delta_i t_i / sum_i sigma_i delta_i``.
    """

    def forward(self, rgb: Tensor, density: Tensor, ray_samples: RaySamples) -> dict[str, Tensor]:
        optical_depths = _optical_depths(density, ray_samples)  # [..., S, 1]
        total = optical_depths.sum(dim=-2)  # [..., 1]
        accumulation = -total.neg().expm1()
        depth = (optical_depths * _sample_distances(ray_samples)).sum(dim=-2) / total.clamp(min=_EPS)
        return {"rgb": accumulation.expand(*accumulation.shape[:-1], 3), "accumulation": accumulation, "depth": depth}


class MaxIntensityRenderer(nn.Module):
    """``mip`` mode: maximum intensity projection, ``rgb = max_i c_i`` per channel over the ray's samples.

    Only samples inside the scene (``delta > 0``) count, so rays that miss it are black. ``depth`` is
    the distance of the brightest sample (by mean over channels); ``accumulation`` the opacity (the
    density only enters there: a MIP does not see it).
    """

    def forward(self, rgb: Tensor, density: Tensor, ray_samples: RaySamples) -> dict[str, Tensor]:
        inside = (ray_samples.deltas > 0).to(rgb.dtype)  # [..., S, 1]
        colours = rgb * inside
        brightest = colours.mean(dim=-1, keepdim=True).argmax(dim=-2, keepdim=True)  # [..., 1, 1]
        depth = _sample_distances(ray_samples).expand_as(inside).gather(-2, brightest).squeeze(-2)
        accumulation = -_optical_depths(density, ray_samples).sum(dim=-2).neg().expm1()
        return {"rgb": colours.amax(dim=-2), "accumulation": accumulation, "depth": depth}


class MeanIntensityRenderer(nn.Module):
    """The mean of ``density / k`` along the ray, ``sum_i sigma_i delta_i / (k sum_i delta_i)``: grey [..., 3].

    In the ``volume`` and ``drr`` modes density is ``k`` times the MRI intensity, so this is the ray's
    average intensity estimated by the field (0 for rays that miss the scene).

    Args:
        density_scale: k, density per unit intensity per world unit (> 0).
    """

    def __init__(self, density_scale: float):
        super().__init__()
        if not density_scale > 0:
            raise MRIInputError(f"density_scale must be > 0, got {density_scale}")
        self.density_scale = density_scale

    def forward(self, density: Tensor, ray_samples: RaySamples) -> Tensor:
        length = ray_samples.deltas.sum(dim=-2)  # [..., 1]
        mean = _optical_depths(density, ray_samples).sum(dim=-2) / (self.density_scale * length).clamp(min=_EPS)
        return mean.expand(*mean.shape[:-1], 3)


def renderer_for_view_mode(view_mode: str) -> nn.Module:
    """The renderer that forms images like the views of ``view_mode`` (``volume``, ``drr`` or ``mip``)."""
    renderers = {"volume": EmissionAbsorptionRenderer, "drr": AttenuationRenderer, "mip": MaxIntensityRenderer}
    if view_mode not in renderers:
        raise MRIInputError(f"view_mode must be one of {tuple(renderers)}, got {view_mode!r}")
    return renderers[view_mode]()
