"""The visual hull of a subject's views: the cells of ``[-1, 1]^3`` that no view sees as background.

A view's pixel is the projection of everything on its ray, and the views are exactly 0 where the ray
misses the brain (``volume`` and ``drr`` modes: no intensity, no absorption; ``mip``: the maximum of
zeros). So a point whose ray in ANY view has a background pixel holds no brain: the brain lies in the
intersection of the views' foreground silhouettes swept along their rays, the visual hull (Laurentini,
1994). It is built from the views and their cameras alone, so it needs nothing that a reconstruction
from those views would not have (no brain mask).

:func:`visual_hull` carves a ``G^3`` grid of cells over ``[-1, 1]^3`` conservatively: a cell is empty
only when every pixel its projection touches is background in some view. The footprint is the box
around the projections of the cell's eight corners, widened to the whole pixels it overlaps (pixel squares,
not pixel centres: a brain thinner than a pixel between two pixel centres still keeps its cell); a footprint that
reaches past the image border, or a cell partly behind a camera, is not known to be empty in that view.
The hull is then dilated by ``margin`` world units (whole cells), to keep the faint rim of the brain
that the background threshold cuts and the field's interpolation support.

Cameras follow :mod:`mri_nerfstudio.views` (nerfstudio's OpenGL convention, pixel centres at +0.5,
row 0 at the top); :func:`project_points` is the inverse of :func:`mri_nerfstudio.views.generate_rays`.
No nerfstudio here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.views import PROJECTIONS, Projection

BACKGROUND_LEVEL = 1e-6
"""Pixels below this are background. The views are exactly 0 where a ray misses the brain, and an 8-bit view
(PNG) holds nothing between 0 and 1/255, so the level only guards against float rounding. A larger one
would carve the brain's dim rim: in a ``volume`` view a ray grazing rim voxels of intensity 0.03 reads
about 3e-4."""


def _per_view(value: float | Tensor, views: int, name: str) -> Tensor:
    """A camera intrinsic as [V] float64: a number, or one value per view ([V] or [V, 1])."""
    tensor = torch.as_tensor(value, dtype=torch.float64).reshape(-1).cpu()
    if tensor.numel() not in (1, views) or not bool(torch.isfinite(tensor).all()):
        raise MRIInputError(
            f"{name} must be one finite number or one per view ({views}), got shape {tuple(tensor.shape)}"
        )
    return tensor.expand(views)


def _camera_to_world(c2w: Tensor) -> Tensor:
    """[V, 3, 4] float64 from [V, 3, 4] or [V, 4, 4] camera-to-world matrices."""
    c2w = torch.as_tensor(c2w)
    if c2w.ndim != 3 or c2w.shape[1:] not in ((3, 4), (4, 4)) or len(c2w) < 1:
        raise MRIInputError(f"c2w must be [V, 3, 4] or [V, 4, 4] with V >= 1, got shape {tuple(c2w.shape)}")
    return c2w[:, :3].to(torch.float64).cpu()


def project_points(
    points: Tensor,
    c2w: Tensor,
    fx: float | Tensor,
    fy: float | Tensor,
    cx: float | Tensor,
    cy: float | Tensor,
    projection: Projection,
) -> tuple[Tensor, Tensor, Tensor]:
    """Where world points land in each camera's image: the inverse of :func:`mri_nerfstudio.views.generate_rays`.

    Camera coordinates ``q = R^T (p - t)`` for ``c2w = [R | t]``; perspective ``u = cx + fx q_x / -q_z``,
    ``v = cy - fy q_y / -q_z``; orthographic ``u = cx + fx q_x``, ``v = cy - fy q_y``. The pixel in column
    ``floor(u)``, row ``floor(v)`` is the one whose ray passes nearest the point; its centre is at
    ``(floor(u) + 0.5, floor(v) + 0.5)``.

    Args:
        points: [..., 3] world units.
        c2w: [V, 3, 4] or [V, 4, 4] camera-to-world (OpenGL: the camera looks along its -Z).
        fx, fy: focal lengths in pixels (orthographic: pixels per world unit), one number or [V].
        cx, cy: principal point in pixels, one number or [V].
        projection: ``"orthographic"`` or ``"perspective"``.

    Returns:
        ``u`` (column) and ``v`` (row), [V, ...] float64 pixels, and ``in_front`` [V, ...] bool: the point is
        in front of the camera (``q_z < 0``), where rays go; ``u``, ``v`` are meaningless elsewhere.
    """
    if projection not in PROJECTIONS:
        raise MRIInputError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
    if points.shape[-1:] != (3,):
        raise MRIInputError(f"points must be [..., 3] world coordinates, got shape {tuple(points.shape)}")
    c2w = _camera_to_world(c2w)
    views = len(c2w)
    intrinsics = ((fx, "fx"), (fy, "fy"), (cx, "cx"), (cy, "cy"))
    fx, fy, cx, cy = (_per_view(value, views, name) for value, name in intrinsics)
    if not bool((fx > 0).all() and (fy > 0).all()):
        raise MRIInputError(f"fx and fy must be > 0 pixels, got {fx.tolist()} and {fy.tolist()}")
    flat = points.reshape(-1, 3).to(torch.float64).cpu()
    rotation, centre = c2w[:, :, :3], c2w[:, :, 3]
    local = torch.einsum("vji,vpj->vpi", rotation, flat[None] - centre[:, None])  # [V, P, 3] camera coordinates
    in_front = local[..., 2] < 0
    x, y = local[..., 0], local[..., 1]
    if projection == "perspective":
        depth = torch.where(in_front, -local[..., 2], torch.ones_like(local[..., 2]))
        x, y = x / depth, y / depth
    u = cx[:, None] + fx[:, None] * x
    v = cy[:, None] - fy[:, None] * y
    shape = (views, *points.shape[:-1])
    return u.reshape(shape), v.reshape(shape), in_front.reshape(shape)


def _cell_extremes(values: Tensor) -> tuple[Tensor, Tensor]:
    """Minimum and maximum [G, G, G] over each cell's 8 corners of ``values`` [G + 1, G + 1, G + 1] at the corners."""
    minimum, maximum = values, values
    for axis in range(3):
        size = values.shape[axis] - 1
        minimum = torch.minimum(minimum.narrow(axis, 0, size), minimum.narrow(axis, 1, size))
        maximum = torch.maximum(maximum.narrow(axis, 0, size), maximum.narrow(axis, 1, size))
    return minimum, maximum


def _pixel_range(low: Tensor, high: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """First and last pixel (indices into the image framed by one pixel, so -1 and ``size`` are the frame) whose
    square ``[i, i + 1)`` overlaps the footprint ``[low, high]`` (pixel coordinates, [G, G, G] each)."""
    first = low.floor()
    last = torch.maximum(high.ceil() - 1, first)
    return first.clamp(-1, size).long() + 1, last.clamp(-1, size).long() + 1


def _box_sums(table: Tensor, rows: tuple[Tensor, Tensor], columns: tuple[Tensor, Tensor]) -> Tensor:
    """Sums over inclusive boxes of rows ``rows[0]..rows[1]`` and columns ``columns[0]..columns[1]`` from a
    summed-area ``table`` [R + 1, C + 1] (``table[i, j]`` = sum of rows < i and columns < j)."""
    (r0, r1), (c0, c1) = rows, columns
    return table[r1 + 1, c1 + 1] - table[r0, c1 + 1] - table[r1 + 1, c0] + table[r0, c0]


def dilate(grid: Tensor, cells: int) -> Tensor:
    """[G, G, G] bool: ``grid`` grown by ``cells`` cells along each axis (a cube of side ``2 cells + 1``)."""
    if cells <= 0:
        return grid.clone()
    grown = F.max_pool3d(grid[None, None].float(), kernel_size=2 * cells + 1, stride=1, padding=cells)
    return grown[0, 0] > 0


def visual_hull(
    views: Tensor,
    c2w: Tensor,
    fx: float | Tensor,
    fy: float | Tensor,
    cx: float | Tensor,
    cy: float | Tensor,
    projection: Projection,
    resolution: int,
    margin: float,
    background_level: float = BACKGROUND_LEVEL,
) -> Tensor:
    """The cells of a ``resolution^3`` grid over ``[-1, 1]^3`` that may hold the brain seen in ``views``.

    A cell is empty when, in at least one view, every pixel that its projection touches is below
    ``background_level`` (module docstring: corners projected, footprint widened to whole pixels, unknown
    past the image border or behind the camera); the occupied cells are then dilated by
    ``ceil(margin * resolution / 2)`` cells.

    Args:
        views: [V, H, W] float pixel values of one subject (the training views), background 0.
        c2w: [V, 3, 4] or [V, 4, 4] their camera-to-world matrices (:mod:`mri_nerfstudio.views` convention).
        fx, fy: focal lengths in pixels (orthographic: pixels per world unit), one number or [V].
        cx, cy: principal point in pixels, one number or [V].
        projection: ``"orthographic"`` or ``"perspective"`` (as :class:`~mri_nerfstudio.views.ViewCameras`).
        resolution: G, cells per axis (cell ``i`` spans ``[-1 + 2 i / G, -1 + 2 (i + 1) / G]``).
        margin: world units >= 0 by which the carved hull is dilated.
        background_level: pixels below it are background.

    Returns:
        [G, G, G] bool, indexed (x, y, z) like world coordinates.
    """
    views = torch.as_tensor(views)
    if views.ndim != 3 or min(views.shape) < 1 or not views.is_floating_point():
        raise MRIInputError(f"views must be [V, H, W] float pixel values, got {tuple(views.shape)} {views.dtype}")
    c2w = _camera_to_world(c2w)
    if len(c2w) != len(views):
        raise MRIInputError(f"c2w has {len(c2w)} cameras for {len(views)} views, expected one per view")
    if int(resolution) != resolution or resolution < 1:
        raise MRIInputError(f"resolution must be an integer >= 1 cells per axis, got {resolution}")
    if not (math.isfinite(margin) and margin >= 0):
        raise MRIInputError(f"margin must be >= 0 world units, got {margin}")
    if not math.isfinite(background_level):
        raise MRIInputError(f"background_level must be a finite pixel value, got {background_level}")
    _, height, width = views.shape
    axis = torch.linspace(-1.0, 1.0, resolution + 1, dtype=torch.float64)
    corners = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1)  # [G + 1] * 3 + [3]
    intrinsics = ((fx, "fx"), (fy, "fy"), (cx, "cx"), (cy, "cy"))
    fx, fy, cx, cy = (_per_view(value, len(c2w), name) for value, name in intrinsics)
    occupied = torch.ones(resolution, resolution, resolution, dtype=torch.bool)
    for view in range(len(views)):  # one view at a time: memory stays a few grids' worth
        at = slice(view, view + 1)
        projected = project_points(corners, c2w[at], fx[at], fy[at], cx[at], cy[at], projection)
        columns, rows, in_front = (values[0] for values in projected)  # [G + 1, G + 1, G + 1] each
        # Foreground, framed by one pixel of "unknown" (counted as foreground) all around; padded index = pixel + 1.
        foreground = F.pad((views[view].detach().cpu() >= background_level).to(torch.float64), (1, 1, 1, 1), value=1.0)
        table = F.pad(foreground.cumsum(0).cumsum(1), (1, 0, 1, 0))  # [H + 3, W + 3] summed-area table
        column_range = _pixel_range(*_cell_extremes(columns), width)
        row_range = _pixel_range(*_cell_extremes(rows), height)
        all_in_front = _cell_extremes(in_front.to(torch.float64))[0] > 0
        seen_empty = all_in_front & (_box_sums(table, tuple(row_range), tuple(column_range)) == 0)
        occupied &= ~seen_empty
    if not occupied.any():
        raise MRIInputError(
            f"views: every cell projects to background (pixels < {background_level:g}) in some view; "
            "expected views that show the brain"
        )
    return dilate(occupied, math.ceil(margin * resolution / 2))
