"""Planes through a volume in scanner millimetres: axial, coronal, sagittal and oblique slices.

A :class:`SlicePlane` is a pixel grid on a plane in RAS millimetres: its centre, two in-plane unit axes
(image columns and image rows) and a pixel size. :func:`plane_points` gives every pixel centre in RAS mm,
so one plane samples a NIfTI (:func:`sample_volume_on_plane`) and a learned field alike.

A plane is ``normal . x = offset_mm`` (``x`` in RAS mm, ``normal`` a unit vector): the axial plane at
``z`` mm is ``normal (0, 0, 1)``, ``offset z``. The image axes follow the radiological display of clinical
viewers: axial and coronal slices show the patient's right on the image's left; sagittal slices show
anterior on the left; superior (axial: anterior) is at the top. An oblique plane takes the axes of the
anatomical plane whose normal is nearest its own, turned by the smallest rotation that takes that normal
onto the oblique one (so a slightly tilted axial plane still looks like an axial slice).

No nerfstudio here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.ndimage import map_coordinates

from mri_nerfstudio.errors import MRIInputError

AnatomicalPlane = Literal["axial", "coronal", "sagittal"]

ANATOMICAL_AXES: dict[str, tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]] = {
    # name: (normal, image column direction, image row direction), RAS.
    "axial": ((0.0, 0.0, 1.0), (-1.0, 0.0, 0.0), (0.0, -1.0, 0.0)),
    "coronal": ((0.0, 1.0, 0.0), (-1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
    "sagittal": ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, -1.0)),
}
"""The anatomical planes' normals and display axes in RAS (radiological convention)."""


@dataclass(frozen=True)
class SlicePlane:
    """A pixel grid on a plane in RAS millimetres.

    Attributes:
        normal: [3] unit normal (RAS).
        offset_mm: the plane is ``normal . x = offset_mm``.
        centre: [3] RAS mm of the image's centre (on the plane).
        columns: [3] unit direction of increasing image column (RAS), in the plane.
        rows: [3] unit direction of increasing image row (RAS), in the plane.
        pixel_mm: pixel size, mm.
        shape: (rows, columns) in pixels.
        label: a name for files and titles, e.g. ``axial z=+12.0mm``.
    """

    normal: np.ndarray
    offset_mm: float
    centre: np.ndarray
    columns: np.ndarray
    rows: np.ndarray
    pixel_mm: float
    shape: tuple[int, int]
    label: str

    def describe(self) -> dict:
        """The plane as plain JSON values."""
        return {
            "label": self.label,
            "normal": self.normal.tolist(),
            "offset_mm": self.offset_mm,
            "centre_ras_mm": self.centre.tolist(),
            "column_direction_ras": self.columns.tolist(),
            "row_direction_ras": self.rows.tolist(),
            "pixel_mm": self.pixel_mm,
            "shape": list(self.shape),
        }


def rotation_about(axis: np.ndarray, angle: float) -> np.ndarray:
    """[3, 3] the right-handed rotation by ``angle`` radians about unit ``axis`` (Rodrigues' formula)."""
    k = np.asarray(axis, dtype=np.float64)
    cross = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + math.sin(angle) * cross + (1.0 - math.cos(angle)) * cross @ cross


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[3, 3] the smallest rotation taking unit vector ``a`` onto unit vector ``b``; ``a . b`` must be >= 0 (at
    most a quarter turn, where the axis ``a x b`` is well defined), which :func:`oblique_plane` ensures."""
    axis = np.cross(a, b)
    sine = float(np.linalg.norm(axis))
    if sine < 1e-12:
        return np.eye(3)
    return rotation_about(axis / sine, math.atan2(sine, float(np.dot(a, b))))


def unit_normal(normal: np.ndarray | tuple[float, ...]) -> np.ndarray:
    """[3] ``normal`` scaled to unit length (a one-line error for a zero or malformed vector)."""
    vector = np.asarray(normal, dtype=np.float64).reshape(-1)
    if vector.shape != (3,) or not np.isfinite(vector).all() or np.linalg.norm(vector) < 1e-9:
        raise MRIInputError(f"--normal must be three finite numbers (x y z in RAS), not all zero; got {list(vector)}")
    return vector / np.linalg.norm(vector)


def _box_corners(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """[8, 3] corners of the RAS box ``lower``..``upper``."""
    return np.array(np.meshgrid(*zip(lower, upper), indexing="ij")).reshape(3, -1).T


def fitted_plane(
    normal: np.ndarray,
    columns: np.ndarray,
    rows: np.ndarray,
    offset_mm: float,
    bounds: tuple[np.ndarray, np.ndarray],
    pixel_mm: float,
    label: str,
) -> SlicePlane:
    """The plane ``normal . x = offset_mm`` with the given image axes, cropped to the box ``bounds`` (RAS mm
    lower and upper corners, e.g. :meth:`~mri_nerfstudio.grids.VoxelGrid.ras_bounds`) at ``pixel_mm``.

    The image is centred on the box centre's projection onto the plane and covers the box's projection, in
    whole pixels (so on an axis-aligned grid sampled at its own spacing, pixel centres are voxel centres).
    """
    if not (math.isfinite(pixel_mm) and pixel_mm > 0):
        raise MRIInputError(f"--pixel-mm must be a positive number of millimetres, got {pixel_mm}")
    lower, upper = (np.asarray(corner, dtype=np.float64) for corner in bounds)
    corners = _box_corners(lower, upper)
    distances = corners @ normal
    if not distances.min() <= offset_mm <= distances.max():
        raise MRIInputError(
            f"plane {label} misses the volume: along the normal {np.round(normal, 3).tolist()} the volume spans "
            f"{distances.min():+.1f} to {distances.max():+.1f} mm"
        )
    middle = (lower + upper) / 2
    centre = middle + (offset_mm - float(middle @ normal)) * normal
    half_width = np.abs((corners - centre) @ columns).max()
    half_height = np.abs((corners - centre) @ rows).max()
    shape = tuple(max(1, math.ceil(2 * half / pixel_mm - 1e-6)) for half in (half_height, half_width))
    return SlicePlane(normal, float(offset_mm), centre, columns, rows, float(pixel_mm), shape, label)  # type: ignore[arg-type]


def anatomical_plane(
    name: str, position_mm: float, bounds: tuple[np.ndarray, np.ndarray], pixel_mm: float
) -> SlicePlane:
    """The ``axial`` (at z = ``position_mm``), ``coronal`` (y) or ``sagittal`` (x) plane in RAS mm."""
    if name not in ANATOMICAL_AXES:
        raise MRIInputError(f"--plane must be one of axial, coronal, sagittal or oblique; got {name!r}")
    normal, columns, rows = (np.asarray(axis) for axis in ANATOMICAL_AXES[name])
    coordinate = "xyz"[int(np.argmax(np.abs(normal)))]
    label = f"{name} {coordinate}={position_mm:+.1f}mm"
    return fitted_plane(normal, columns, rows, position_mm, bounds, pixel_mm, label)


def oblique_plane(
    normal: np.ndarray | tuple[float, ...], offset_mm: float, bounds: tuple[np.ndarray, np.ndarray], pixel_mm: float
) -> SlicePlane:
    """The plane ``normal . x = offset_mm`` (RAS mm; ``normal`` is normalised here), its image axes those of
    the nearest anatomical plane turned by the smallest rotation onto it (see the module docstring)."""
    unit = unit_normal(normal)
    name = max(ANATOMICAL_AXES, key=lambda plane: abs(float(np.dot(ANATOMICAL_AXES[plane][0], unit))))
    reference, columns, rows = (np.asarray(axis) for axis in ANATOMICAL_AXES[name])
    sign = 1.0 if float(np.dot(reference, unit)) >= 0 else -1.0
    rotation = rotation_between(sign * reference, unit)
    label = f"oblique n=({unit[0]:+.2f},{unit[1]:+.2f},{unit[2]:+.2f}) d={offset_mm:+.1f}mm"
    return fitted_plane(unit, rotation @ columns, rotation @ rows, offset_mm, bounds, pixel_mm, label)


def plane_points(plane: SlicePlane) -> np.ndarray:
    """[H, W, 3] float64 RAS mm of every pixel centre of ``plane`` (row ``i``, column ``j``)."""
    height, width = plane.shape
    along_rows = (np.arange(height) - (height - 1) / 2) * plane.pixel_mm
    along_columns = (np.arange(width) - (width - 1) / 2) * plane.pixel_mm
    return (
        plane.centre
        + along_rows[:, None, None] * plane.rows[None, None, :]
        + along_columns[None, :, None] * plane.columns[None, None, :]
    )


def sample_volume_on_plane(array: np.ndarray, affine: np.ndarray, plane: SlicePlane, order: int = 1) -> np.ndarray:
    """[H, W] float32: ``array`` ([X, Y, Z], voxel -> RAS mm ``affine``) at the plane's pixel centres
    (order 1 trilinear, 0 nearest; 0 outside the volume)."""
    points = plane_points(plane).reshape(-1, 3)
    voxel_from_ras = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    voxels = points @ voxel_from_ras[:3, :3].T + voxel_from_ras[:3, 3]
    values = map_coordinates(np.asarray(array, dtype=np.float32), voxels.T, order=order, mode="constant", cval=0.0)
    return values.reshape(plane.shape).astype(np.float32)
