"""The head's pose in the scanner: the rotation that turns a brain to the MNI152 brain's orientation.

The views orbit the world's superior axis, and the world frame is the scanner's unless a pose turns it.
Heads lie in scanners at different tilts (the 30 IXI T1s of ``../shared/data``: pitched 3 to 29 degrees
against MNI152, ``scripts/bench_head_pose.py``), so view i of two subjects shows two brains from different
angles, and a model shared across subjects has to learn the tilt as well as the anatomy.
:func:`estimate_head_pose` measures the tilt; :class:`~mri_nerfstudio.views.SceneNormalization` takes its
rotation, so that the orbit turns about the brain's own superior axis and view 0 looks at every brain from
the same side.

The pose comes from the brain mask's shape alone (smoothed masks, mean squares, a similarity transform of
which only the rotation is kept), so it is the same for every contrast (T1, T1ce, T2, FLAIR, z-scored or
not) and needs no intensity model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
from scipy import ndimage

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.lazy_import import lazy_module
from mri_nerfstudio.preprocess.register import rotation_angle_deg, to_sitk
from mri_nerfstudio.volume import LPS_FROM_RAS

sitk = lazy_module("SimpleITK", "to estimate the head's pose")

POSE_SPACING_MM = 4.0
"""Voxel size of the grids the masks are compared on: the brain's outline, not its folds, sets the pose."""

MASK_SMOOTHING_MM = 4.0
"""Gaussian sigma on both masks, so that the metric changes smoothly with the rotation."""

START_PITCHES_DEG = (-30.0, 0.0, 30.0)
"""Pitches (about the left-right axis, where scanners differ most) the search starts from; the best fit wins."""

MAX_ROTATION_DEG = 60.0
"""A fitted rotation beyond this is not a head's tilt in a scanner but a failed fit (a brain cut off by the
field of view, or a mask that is not a brain): it is an error, not a silent default."""


@dataclass(frozen=True)
class HeadPose:
    """Where the brain points in the scanner.

    Attributes:
        rotation: [3, 3] float64 rotation (det +1) taking scanner RAS directions to the MNI152-aligned frame:
            ``aligned = rotation @ ras``. Its inverse's columns are the brain's right, anterior and superior
            axes in scanner RAS.
        mismatch: mean squared difference of the smoothed masks after the fit (0: identical outlines).
    """

    rotation: np.ndarray
    mismatch: float

    @property
    def angles_deg(self) -> dict[str, float]:
        """Euler angles of ``rotation`` (x-y-z order: pitch about R, roll about A, yaw about S), degrees."""
        r = self.rotation
        return {
            "pitch": math.degrees(math.atan2(r[2, 1], r[2, 2])),
            "roll": math.degrees(-math.asin(max(-1.0, min(1.0, r[2, 0])))),
            "yaw": math.degrees(math.atan2(r[1, 0], r[0, 0])),
        }

    @property
    def angle_deg(self) -> float:
        """The rotation's total angle, degrees."""
        return rotation_angle_deg(self.rotation)

    def record(self) -> dict:
        """The provenance record of the alignment."""
        return {
            "step": "align_head",
            "params": {"template": "nilearn MNI152 brain mask", "spacing_mm": POSE_SPACING_MM,
                       "smoothing_mm": MASK_SMOOTHING_MM},
            "estimates": {
                "rotation_ras": self.rotation.tolist(),
                "angle_deg": self.angle_deg,
                **{f"{name}_deg": value for name, value in self.angles_deg.items()},
                "mismatch": self.mismatch,
            },
        }


@lru_cache(maxsize=1)
def _template_mask() -> "sitk.Image":
    """nilearn's 2 mm MNI152 brain mask on the pose grid, smoothed (shipped inside nilearn, no download)."""
    from nilearn.datasets import load_mni152_brain_mask  # seconds to import; only the pose needs it here

    mask = load_mni152_brain_mask(resolution=2)
    return _smoothed_mask(np.asarray(mask.dataobj) > 0, mask.affine)


def grid_over_mask(
    image: np.ndarray, mask: np.ndarray, affine: np.ndarray, spacing_mm: float, margin_mm: float
) -> "sitk.Image":
    """``image`` resampled linearly (0 outside it) onto an isotropic grid of ``spacing_mm`` with the image's axes,
    over ``mask``'s bounding box widened by ``margin_mm`` (within the image).

    Args:
        image: [X, Y, Z] float32 values.
        mask: [X, Y, Z] bool, not empty.
        affine: [4, 4] voxel index -> RAS mm of both.
        spacing_mm: the grid's voxel size.
        margin_mm: how far the grid reaches beyond the mask.
    """
    source = to_sitk(image, affine)
    voxels = np.argwhere(mask)
    spacing = np.asarray(source.GetSpacing())
    margin = np.ceil(margin_mm / spacing).astype(int)
    corner = np.maximum(voxels.min(axis=0) - margin, 0)
    extent_mm = (np.minimum(voxels.max(axis=0) + margin, np.asarray(mask.shape) - 1) - corner) * spacing
    size = [int(math.ceil(e / spacing_mm)) + 1 for e in extent_mm]
    origin = source.TransformIndexToPhysicalPoint([int(c) for c in corner])
    return sitk.Resample(
        source, size, sitk.Transform(), sitk.sitkLinear, origin, [spacing_mm] * 3, source.GetDirection(), 0.0,
        sitk.sitkFloat32,
    )


def _smoothed_mask(mask: np.ndarray, affine: np.ndarray) -> "sitk.Image":
    """A bool mask as float32 on an isotropic :data:`POSE_SPACING_MM` grid over its bounding box (+ margin),
    smoothed by :data:`MASK_SMOOTHING_MM`."""
    resampled = grid_over_mask(mask.astype(np.float32), mask, affine, POSE_SPACING_MM, 3 * MASK_SMOOTHING_MM)
    smoothed = ndimage.gaussian_filter(sitk.GetArrayFromImage(resampled), MASK_SMOOTHING_MM / POSE_SPACING_MM)
    result = sitk.GetImageFromArray(smoothed.astype(np.float32))
    result.CopyInformation(resampled)
    return result


def _centroid_lps(image: "sitk.Image") -> np.ndarray:
    """[3] LPS mm: the intensity-weighted centre of an image."""
    z, y, x = ndimage.center_of_mass(sitk.GetArrayFromImage(image))  # SimpleITK arrays are [z, y, x]
    return np.asarray(image.TransformContinuousIndexToPhysicalPoint((float(x), float(y), float(z))))


def _fit(
    fixed: "sitk.Image",
    moving: "sitk.Image",
    start: "sitk.Similarity3DTransform",
    set_metric: Callable[["sitk.ImageRegistrationMethod"], None],
    shrink: tuple[int, ...],
) -> float:
    """Fit ``start`` in place (multi-resolution, ``shrink`` factors on the grid); the final metric value."""
    method = sitk.ImageRegistrationMethod()
    set_metric(method)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-4, numberOfIterations=200, relaxationFactor=0.5
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(shrink))
    method.SetSmoothingSigmasPerLevel([0.0] * len(shrink))
    method.SetInitialTransform(start, inPlace=True)
    method.Execute(fixed, moving)
    return method.GetMetricValue()


def fit_rotation(
    template: "sitk.Image",
    scan: "sitk.Image",
    centre_lps: np.ndarray,
    shift_lps: np.ndarray,
    set_metric: Callable[["sitk.ImageRegistrationMethod"], None],
) -> HeadPose:
    """The rotation of the best similarity transform from ``template`` onto ``scan``, over starts at each of
    :data:`START_PITCHES_DEG`.

    Args:
        template: the fixed image (MNI152 space).
        scan: the moving image (scanner space).
        centre_lps: [3] LPS mm, the transform's centre on the template.
        shift_lps: [3] LPS mm, the starting translation (e.g. between the two centroids).
        set_metric: sets the metric of a registration method (mean squares, mutual information...).

    Returns:
        The :class:`HeadPose`; ``mismatch`` is the best fit's metric value.
    """
    best, best_value = None, math.inf
    for pitch in START_PITCHES_DEG:
        start = sitk.Similarity3DTransform()
        start.SetCenter(np.asarray(centre_lps, dtype=float).tolist())
        start.SetTranslation(np.asarray(shift_lps, dtype=float).tolist())
        start.SetRotation((1.0, 0.0, 0.0), math.radians(pitch))
        value = _fit(template, scan, start, set_metric, shrink=(2, 1))
        if value < best_value:
            best, best_value = start, value
    # fixed (template, LPS) -> moving (scan, LPS): a template direction d lies along rotation_lps @ d in the scan
    rotation_lps = np.asarray(best.GetMatrix()).reshape(3, 3) / best.GetScale()
    flip = LPS_FROM_RAS[:3, :3]
    scan_from_template = flip @ rotation_lps @ flip
    return HeadPose(rotation=scan_from_template.T, mismatch=float(best_value))


def estimate_head_pose(mask: np.ndarray, affine: np.ndarray, where: str | Path | None = None) -> HeadPose:
    """The rotation that lines a brain mask up with MNI152's brain mask.

    A similarity transform (rotation, translation, one scale: brains differ in size) maps the template's
    smoothed mask onto the subject's, by mean squares, from each of :data:`START_PITCHES_DEG`; the best fit's
    rotation is the pose.

    Args:
        mask: [X, Y, Z] bool brain mask.
        affine: [4, 4] voxel index -> scanner RAS mm (any orientation, no shear).
        where: the subject (file or folder) that errors name.

    Returns:
        The :class:`HeadPose`.

    Raises:
        MRIInputError: an empty mask, or a fit that rotates by more than :data:`MAX_ROTATION_DEG`.
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise MRIInputError("brain mask: empty, so there is no head pose to align", where)
    fixed = _template_mask()
    moving = _smoothed_mask(mask, affine)
    centre = _centroid_lps(fixed)
    pose = fit_rotation(fixed, moving, centre, _centroid_lps(moving) - centre, lambda m: m.SetMetricAsMeanSquares())
    if pose.angle_deg > MAX_ROTATION_DEG:
        raise MRIInputError(
            f"brain mask: its outline fits MNI152's only after a {pose.angle_deg:.0f} degree rotation (at most "
            f"{MAX_ROTATION_DEG:.0f} is a head's tilt): is the brain cut off by the field of view, or the mask not "
            "a brain? Leave align-head off for this subject",
            where,
        )
    return pose
