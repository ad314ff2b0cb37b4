"""The viewer's slice outputs: the field, the input scan and their difference on a plane through the brain.

Each camera ray shows what lies where it crosses one plane, chosen under the viewer's Custom Elements
(:class:`ViewerSlicePlane`): axial, coronal or sagittal, or an oblique plane (the axial plane tilted about
the image's horizontal and vertical axes), moved along its normal by an offset in millimetres from the
brain's centre. Rays that miss the plane inside the brain's unit sphere show black. The model turns the
crossing points into three outputs (``slice``, ``slice_scan``, ``slice_difference``); the geometry lives
here.

The world frame is RAS millimetres shifted, scaled and, for subjects prepared with ``align_head``, turned onto
the brain's own axes (:class:`~mri_nerfstudio.views.SceneNormalization`). So a plane's normal is given in world
axes (the scanner's, or the aligned brain's, whose axial plane then follows the brain's tilt), and an offset
of ``d`` mm is ``d / radius_mm`` world units.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from nerfstudio.viewer.viewer_elements import ViewerDropdown, ViewerSlider
from torch import Tensor, nn

from mri_nerfstudio.slices import ANATOMICAL_AXES, rotation_about

SLICE_PLANES = ("coronal", "axial", "sagittal", "oblique")
"""The dropdown's choices; coronal first, as the viewer's camera starts in front of the face."""
ERROR_RANGE = 0.5
"""``slice_difference``: a difference of +-0.5 (intensities in [0, 1]) is full red / blue."""


def oblique_normal(tilt_about_columns_deg: float, tilt_about_rows_deg: float) -> np.ndarray:
    """[3] unit normal (RAS) of the axial plane tilted about its image's horizontal (column) axis, then about
    its vertical (row) axis, in degrees (0, 0: the axial normal)."""
    _, columns, rows = (np.asarray(axis) for axis in ANATOMICAL_AXES["axial"])
    normal = np.asarray(ANATOMICAL_AXES["axial"][0], dtype=np.float64)
    for axis, angle in ((columns, tilt_about_columns_deg), (rows, tilt_about_rows_deg)):
        normal = rotation_about(axis, math.radians(angle)) @ normal
    return normal / np.linalg.norm(normal)


def ray_plane_crossings(origins: Tensor, directions: Tensor, normal: Tensor, offset: float) -> tuple[Tensor, Tensor]:
    """Where rays cross the plane ``normal . x = offset`` inside the unit sphere.

    Args:
        origins: [R, 3] world units.
        directions: [R, 3] (any length > 0).
        normal: [3] unit normal.
        offset: world units.

    Returns:
        points [R, 3] (the crossing; the origin where there is none) and hits [R] bool: the ray crosses
        the plane in front of its origin, within the unit sphere.
    """
    facing = directions @ normal  # [R]
    parallel = facing.abs() < 1e-9
    distance = (offset - origins @ normal) / torch.where(parallel, torch.ones_like(facing), facing)
    points = origins + distance[:, None] * directions
    hits = ~parallel & (distance > 0) & (points.norm(dim=-1) <= 1.0)
    return torch.where(hits[:, None], points, origins), hits


def difference_colours(difference: Tensor, hits: Tensor) -> Tensor:
    """[R, 3] colours of ``difference`` [R]: white at 0, red above (field brighter), blue below; black off
    the plane (``hits`` [R] false)."""
    scaled = (difference / ERROR_RANGE).clamp(-1.0, 1.0)
    colours = torch.stack([1.0 - (-scaled).clamp(min=0), 1.0 - scaled.abs(), 1.0 - scaled.clamp(min=0)], dim=-1)
    return colours * hits[:, None]


class ViewerSlicePlane(nn.Module):
    """The slice controls under the viewer's Custom Elements, and the plane they describe.

    An :class:`~torch.nn.Module` (without parameters) so that nerfstudio finds its controls on the model.

    Args:
        radius_mm: the largest subject's brain radius (mm): the offset slider spans +-``radius_mm``.
    """

    def __init__(self, radius_mm: float):
        super().__init__()
        self.plane = ViewerDropdown(
            "Slice plane", SLICE_PLANES[0], list(SLICE_PLANES), hint="Plane of the slice outputs (oblique: tilted)"
        )
        limit = float(math.ceil(radius_mm))
        self.offset_mm = ViewerSlider(
            "Slice offset (mm)", 0.0, -limit, limit, step=1.0, hint="Along the plane's normal, from the brain's centre"
        )
        self.tilt_columns_deg = ViewerSlider(
            "Oblique tilt, image x (deg)", 0.0, -90.0, 90.0, step=1.0, hint="Tilt of the oblique plane from axial"
        )
        self.tilt_rows_deg = ViewerSlider(
            "Oblique tilt, image y (deg)", 0.0, -90.0, 90.0, step=1.0, hint="Tilt of the oblique plane from axial"
        )

    def normal(self) -> np.ndarray:
        """[3] unit normal (RAS = world directions) of the chosen plane."""
        if self.plane.value == "oblique":
            return oblique_normal(float(self.tilt_columns_deg.value), float(self.tilt_rows_deg.value))
        return np.asarray(ANATOMICAL_AXES[self.plane.value][0], dtype=np.float64)

    def crossings(self, origins: Tensor, directions: Tensor, radius_mm: float) -> tuple[Tensor, Tensor]:
        """:func:`ray_plane_crossings` with the chosen plane, for a subject whose brain radius is ``radius_mm``."""
        normal = torch.as_tensor(self.normal(), dtype=origins.dtype, device=origins.device)
        return ray_plane_crossings(origins, directions, normal, float(self.offset_mm.value) / radius_mm)
