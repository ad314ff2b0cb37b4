"""Empty-space skipping: an occupancy grid over ``[-1, 1]^3`` per subject, from its training views.

The views are projections of a volume that is zero outside the brain, so the field only has to be
evaluated where the training views see something. :class:`OccupancyGrid` marks, per subject, the cells
of a ``G^3`` grid inside the visual hull of that subject's training views
(:func:`mri_nerfstudio.visual_hull.visual_hull`, dilated by ``margin`` world units); nothing else of the
subject is read (no brain mask, no held-out view). :func:`evaluate_field` evaluates the field only at the
samples in occupied cells and gives the others density 0 and colour 0.

The views reach the model through the dataparser metadata: ``training_views`` (one [V, H, W] float
tensor per subject, or None for a subject held out of training) and ``training_cameras`` (their
nerfstudio :class:`Cameras`, or None). A subject without training views gets the union of the training
subjects' hulls: the only space where the field was ever trained, and no data of its own.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.cameras.rays import RaySamples
from nerfstudio.field_components.field_heads import FieldHeadNames
from torch import Tensor, nn

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.nerf.field import ConditionalRadianceField
from mri_nerfstudio.visual_hull import visual_hull

PROJECTION_OF_CAMERA_TYPE: dict[int, str] = {
    CameraType.ORTHOPHOTO.value: "orthographic",
    CameraType.PERSPECTIVE.value: "perspective",
}
"""nerfstudio camera type -> projection of :mod:`mri_nerfstudio.views` (the two the views are made with)."""


def hull_of_views(views: Tensor, cameras: Cameras, resolution: int, margin: float) -> Tensor:
    """[G, G, G] bool: the visual hull of ``views`` [V, H, W] seen by nerfstudio ``cameras`` [V], dilated by
    ``margin`` world units (see :func:`~mri_nerfstudio.visual_hull.visual_hull`)."""
    if len(cameras) != len(views):
        raise MRIInputError(f"{len(cameras)} cameras for {len(views)} views, expected one camera per view")
    types = set(cameras.camera_type.flatten().tolist())
    if not types <= set(PROJECTION_OF_CAMERA_TYPE):
        raise MRIInputError(
            f"cameras must be orthographic (ORTHOPHOTO) or perspective, got camera types {sorted(types)}"
        )
    if len(types) != 1:
        raise MRIInputError(f"cameras must share one projection, got camera types {sorted(types)}")
    height, width = int(cameras.height.flatten()[0]), int(cameras.width.flatten()[0])
    if tuple(views.shape[1:]) != (height, width):
        raise MRIInputError(f"views are {tuple(views.shape[1:])} pixels, the cameras' images {height} x {width}")
    return visual_hull(
        views.float(),
        cameras.camera_to_worlds,
        cameras.fx,
        cameras.fy,
        cameras.cx,
        cameras.cy,
        PROJECTION_OF_CAMERA_TYPE[types.pop()],
        resolution,
        margin,
    )


class OccupancyGrid(nn.Module):
    """One occupancy grid per subject; samples of subject ``s`` are occupied where grid ``s`` is.

    Args:
        grids: [S, G, G, G] bool (see :meth:`from_training_views`). Not saved in checkpoints: the model
            rebuilds it from the dataparser metadata.
    """

    def __init__(self, grids: Tensor):
        super().__init__()
        if grids.ndim != 4 or len(set(grids.shape[1:])) != 1:
            raise MRIInputError(f"occupancy grids must be [S, G, G, G], got shape {tuple(grids.shape)}")
        self.register_buffer("grids", grids.bool(), persistent=False)

    @classmethod
    def from_training_views(
        cls,
        views: Sequence[Optional[Tensor]],
        cameras: Sequence[Optional[Cameras]],
        resolution: int,
        margin: float,
    ) -> "OccupancyGrid":
        """The grids of subjects given by their training views [V, H, W] and cameras [V] (None for both: a
        subject held out of training, which gets the union of the other subjects' hulls)."""
        if len(views) != len(cameras) or not views:
            raise MRIInputError(
                f"dataparser metadata: {len(views)} training_views and {len(cameras)} training_cameras, "
                "expected one of each per subject"
            )
        hulls: list[Optional[Tensor]] = []
        for subject, (subject_views, subject_cameras) in enumerate(zip(views, cameras)):
            if (subject_views is None) != (subject_cameras is None):
                raise MRIInputError(
                    f"dataparser metadata: subject {subject} has training_views or training_cameras but not both"
                )
            hulls.append(
                None if subject_views is None else hull_of_views(subject_views, subject_cameras, resolution, margin)
            )
        trained = [hull for hull in hulls if hull is not None]
        if not trained:
            raise MRIInputError("dataparser metadata: no subject has training views to build an occupancy grid from")
        union = torch.stack(trained).any(dim=0)
        return cls(torch.stack([union if hull is None else hull for hull in hulls]))

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
