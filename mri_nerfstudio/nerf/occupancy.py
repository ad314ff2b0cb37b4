"""Empty-space skipping: an occupancy grid over ``[-1, 1]^3`` built from the subjects' brain masks.

The views are projections of a volume that is zero outside the brain mask, so the field only has to be
evaluated near the brain. :class:`OccupancyGrid` marks, per subject, the cells of a ``G^3`` grid that
hold a brain voxel or lie within ``margin`` world units of one (the dilation keeps the brain's rim and
the field's interpolation support); :func:`evaluate_field` evaluates the field only at the samples in
occupied cells and gives the others density 0 and colour 0.

The masks reach the model through the dataparser metadata: ``brain_masks`` (one [X, Y, Z] bool tensor
per subject) and ``world_from_voxel`` (one [4, 4] tensor per subject: voxel index -> world units).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from nerfstudio.cameras.rays import RaySamples
from nerfstudio.field_components.field_heads import FieldHeadNames
from torch import Tensor, nn

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.nerf.field import ConditionalRadianceField


def occupancy_from_mask(mask: Tensor, world_from_voxel: Tensor, resolution: int, margin: float) -> Tensor:
    """Cells of a ``resolution^3`` grid over ``[-1, 1]^3`` within ``margin`` of the brain mask.

    Each mask voxel centre marks its cell; the marks are then dilated by ``margin`` plus half a voxel's
    diagonal (so a voxel's whole extent is covered however coarse the voxels are), rounded up to whole
    cells: a point in an unmarked cell is more than ``margin`` away from every brain voxel.

    Args:
        mask: [X, Y, Z] bool brain mask.
        world_from_voxel: [4, 4] voxel index (centres at integers) -> world units.
        resolution: G, cells per axis (cell ``i`` spans ``[-1 + 2 i / G, -1 + 2 (i + 1) / G]``).
        margin: world units >= 0.

    Returns:
        [G, G, G] bool, indexed (x, y, z) like world coordinates.
    """
    if mask.ndim != 3:
        raise MRIInputError(f"brain mask must be 3D [X, Y, Z], got shape {tuple(mask.shape)}")
    if tuple(world_from_voxel.shape) != (4, 4):
        raise MRIInputError(f"world_from_voxel must be [4, 4], got shape {tuple(world_from_voxel.shape)}")
    if resolution < 1 or not margin >= 0:
        raise MRIInputError(f"occupancy grid needs resolution >= 1 and margin >= 0, got {resolution} and {margin}")
    if not mask.any():
        raise MRIInputError("brain mask is empty: no voxel to build the occupancy grid from")
    transform = world_from_voxel.to(torch.float64)
    voxels = torch.nonzero(mask).to(torch.float64)  # [M, 3]
    world = voxels @ transform[:3, :3].T + transform[:3, 3]
    cells = ((world + 1.0) * (resolution / 2)).floor().long()
    cells = cells[((cells >= 0) & (cells < resolution)).all(dim=-1)]
    grid = torch.zeros(resolution, resolution, resolution, dtype=torch.bool)
    grid[cells[:, 0], cells[:, 1], cells[:, 2]] = True
    half_diagonal = 0.5 * float(transform[:3, :3].norm(dim=0).norm())
    radius = math.ceil((margin + half_diagonal) * resolution / 2)  # cells
    dilated = F.max_pool3d(grid[None, None].float(), kernel_size=2 * radius + 1, stride=1, padding=radius)
    return dilated[0, 0] > 0


class OccupancyGrid(nn.Module):
    """One occupancy grid per subject; samples of subject ``s`` are occupied where grid ``s`` is.

    Args:
        grids: [S, G, G, G] bool (see :func:`occupancy_from_mask`). Not saved in checkpoints: the model
            rebuilds it from the dataparser metadata.
    """

    def __init__(self, grids: Tensor):
        super().__init__()
        if grids.ndim != 4 or len(set(grids.shape[1:])) != 1:
            raise MRIInputError(f"occupancy grids must be [S, G, G, G], got shape {tuple(grids.shape)}")
        self.register_buffer("grids", grids.bool(), persistent=False)

    @classmethod
    def from_brain_masks(
        cls, masks: Sequence[Tensor], world_from_voxel: Sequence[Tensor], resolution: int, margin: float
    ) -> "OccupancyGrid":
        """The grids of subjects given by their masks [X, Y, Z] and voxel -> world transforms [4, 4]."""
        if len(masks) != len(world_from_voxel) or not masks:
            raise MRIInputError(
                f"dataparser metadata: {len(masks)} brain_masks and {len(world_from_voxel)} world_from_voxel, "
                "expected one of each per subject"
            )
        grids = [
            occupancy_from_mask(torch.as_tensor(mask), torch.as_tensor(transform), resolution, margin)
            for mask, transform in zip(masks, world_from_voxel)
        ]
        return cls(torch.stack(grids))

    @property
    def resolution(self) -> int:
        return self.grids.shape[-1]

    def occupied_fraction(self) -> float:
        """Fraction of occupied cells over all subjects' grids."""
        return float(self.grids.float().mean())

    def occupied(self, positions: Tensor, subjects: Tensor) -> Tensor:
        """Whether each point lies in an occupied cell of its subject's grid (False outside the cube).

        Args:
            positions: [..., 3] world units.
            subjects: [...] int64 subject indices (broadcastable to ``positions.shape[:-1]``).

        Returns:
            [...] bool.
        """
        cells = ((positions.detach() + 1.0) * (self.resolution / 2)).floor().long()
        inside = ((cells >= 0) & (cells < self.resolution)).all(dim=-1)
        cells = cells.clamp(0, self.resolution - 1)
        subjects = subjects.expand(positions.shape[:-1])
        return self.grids[subjects, cells[..., 0], cells[..., 1], cells[..., 2]] & inside


def evaluate_field(
    field: ConditionalRadianceField, ray_samples: RaySamples, occupied: Tensor | None = None
) -> dict[FieldHeadNames, Tensor]:
    """Density [..., 1] and colour [..., 3] of ray samples (batch shape ``[...]``), float32.

    Args:
        field: the radiance field.
        ray_samples: with the codes in their metadata (see :class:`ConditionalRadianceField`).
        occupied: [...] bool, or None for all. The field runs only where it is True; elsewhere density
            and colour are 0 (and get no gradient).

    Float32 whatever the autocast precision, so that rendering (exponentials, cumulative products)
    runs in full precision under mixed-precision training.
    """
    if occupied is None:
        outputs = field(ray_samples)
        return {name: outputs[name].float() for name in (FieldHeadNames.DENSITY, FieldHeadNames.RGB)}
    positions = ray_samples.frustums.get_positions()
    batch = positions.shape[:-1]
    shape_code, appearance_code = field.sample_codes(ray_samples)
    directions = ray_samples.frustums.directions.expand(*batch, 3)
    keep = occupied.expand(batch)
    density = positions.new_zeros(*batch, 1, dtype=torch.float32)
    rgb = positions.new_zeros(*batch, 3, dtype=torch.float32)
    if keep.any():
        kept_density, kept_rgb = field.point_outputs(
            positions[keep], directions[keep], shape_code[keep], appearance_code[keep]
        )
        density[keep] = kept_density.float()
        rgb[keep] = kept_rgb.float()
    return {FieldHeadNames.DENSITY: density, FieldHeadNames.RGB: rgb}
