"""Inter-modality registration (3D rigid/affine) and in-plane slice-motion correction.

SimpleITK works in LPS millimetres with arrays in ``[z, y, x]`` order; our volumes are RAS arrays
``[X, Y, Z]`` with a voxel -> RAS mm affine. :func:`to_sitk` and :func:`from_sitk` convert exactly
between the two (axis order, spacing, direction cosines, origin), so every transform estimated here
can be reported in RAS mm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.lazy_import import lazy_module
from mri_nerfstudio.preprocess import PreprocessStep, require_reference
from mri_nerfstudio.preprocess.rescale import describe_axis, thick_axis
from mri_nerfstudio.volume import LPS_FROM_RAS, Volume

sitk = lazy_module("SimpleITK", "to register modalities")

TRANSFORM_DIRECTION = "fixed (reference) RAS mm -> moving RAS mm"
"""What every recorded matrix maps (SimpleITK convention: resampled(p) = moving(T(p)))."""

FLAT_SLICE_FRACTION = 1e-3
"""Slices whose intensity range is below this fraction of their stack's are not registered."""

_INTERPOLATORS = {"linear": "sitkLinear", "bspline": "sitkBSpline"}  # SimpleITK names, read on use
_INITIALIZERS = {
    "geometry": "GEOMETRY",
    "moments": "MOMENTS",
}


def to_sitk(array: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """A SimpleITK image with the voxels of ``array`` at the positions ``affine`` gives them.

    Args:
        array: [X, Y, Z] voxel values (any numeric dtype SimpleITK accepts).
        affine: [4, 4] voxel index -> RAS mm, without shear.

    Returns:
        An image whose index (i, j, k) holds ``array[i, j, k]`` at LPS point
        ``LPS_FROM_RAS @ affine @ (i, j, k, 1)``.
    """
    lps = LPS_FROM_RAS @ np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    direction = lps[:3, :3] / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-5):
        raise MRIInputError(f"affine must be a rotation times voxel sizes (no shear), got {affine.tolist()}")
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array).transpose(2, 1, 0)))
    image.SetSpacing(spacing.tolist())
    image.SetDirection(direction.flatten().tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    return image


def from_sitk(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`to_sitk`: ``(array [X, Y, Z], affine [4, 4] voxel index -> RAS mm)``."""
    array = np.ascontiguousarray(sitk.GetArrayFromImage(image).transpose(2, 1, 0))
    lps = np.eye(4)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    lps[:3, :3] = direction * np.asarray(image.GetSpacing(), dtype=np.float64)
    lps[:3, 3] = image.GetOrigin()
    return array, LPS_FROM_RAS @ lps


def transform_matrix_ras(transform: sitk.Euler3DTransform | sitk.AffineTransform) -> np.ndarray:
    """[4, 4] RAS mm matrix of a SimpleITK rigid or affine transform (which works in LPS mm)."""
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(transform.GetMatrix()).reshape(3, 3)
    centre = np.asarray(transform.GetCenter())
    lps[:3, 3] = centre + np.asarray(transform.GetTranslation()) - lps[:3, :3] @ centre
    return LPS_FROM_RAS @ lps @ LPS_FROM_RAS


def rotation_angle_deg(matrix: np.ndarray) -> float:
    """Angle in degrees of the rotation closest to the linear part of a [4, 4] (or [3, 3]) matrix."""
    u, _, vt = np.linalg.svd(np.asarray(matrix)[:3, :3])
    rotation = u @ vt
    return float(np.degrees(np.arccos(np.clip((np.trace(rotation) - 1.0) / 2.0, -1.0, 1.0))))


def _transform_record(transform: sitk.Euler3DTransform | sitk.AffineTransform, kind: str) -> dict[str, Any]:
    """Rotation (deg), translation (mm), centre (mm) and matrix, all in RAS, of a fitted transform."""
    matrix = transform_matrix_ras(transform)
    centre = LPS_FROM_RAS[:3, :3] @ np.asarray(transform.GetCenter())
    record: dict[str, Any] = {
        "direction": TRANSFORM_DIRECTION,
        "type": kind,
        "rotation_deg": rotation_angle_deg(matrix),
        "translation_mm": LPS_FROM_RAS[:3, :3] @ np.asarray(transform.GetTranslation()),
        "centre_mm": centre,
        "matrix_ras": matrix,
    }
    if kind == "rigid":
        # Conjugating by LPS_FROM_RAS flips the sense of rotations about the x and y axes.
        angle_x, angle_y, angle_z = np.degrees(transform.GetParameters()[:3])
        record["euler_deg"] = {"order": "R = Rz @ Rx @ Ry about R, A, S", "x": -angle_x, "y": -angle_y, "z": angle_z}
    return record


def _set_pyramid_descent(
    method: sitk.ImageRegistrationMethod,
    learning_rate: float,
    min_step: float,
    iterations: int,
    shrink_factors: Sequence[int],
    sigmas_mm: Sequence[float],
) -> None:
    """Regular-step gradient descent (scales from physical shift) over a pyramid of levels, each a
    shrink factor and a Gaussian smoothing sigma in mm."""
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=learning_rate, minStep=min_step, numberOfIterations=iterations, relaxationFactor=0.5
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(shrink_factors))
    method.SetSmoothingSigmasPerLevel(list(sigmas_mm))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()


@dataclass(frozen=True)
class RegisterToReference(PreprocessStep):
    """Register every other modality to the reference one (Mattes mutual information).

    Multi-resolution, centred initialisation, regular-step gradient descent; the moving modality is
    then resampled onto the reference grid. The label map is left as it is (BraTS segmentations are
    drawn on the reference grid).

    The pyramid's levels are meant as voxel sizes (shrink factor x finest spacing); SimpleITK
    shrinks every axis by one factor, so on an anisotropic grid each level's factor is lowered to
    keep the thickest axis near that size (:meth:`pyramid`).

    Recorded per registered modality: the pyramid levels run (shrink factors, sampling fractions and
    ``level_voxels_mm``, each level's voxel size per axis), the final metric value, the
    optimiser's stop condition and iterations at the last level, and the transform
    T(p) = A (p - centre) + centre + translation (``direction`` says what it maps): the angle (deg)
    of its rotation, ``translation_mm`` and ``centre_mm`` in RAS, ``matrix_ras`` [4, 4] and, when
    rigid, its Euler angles.
    """

    name = "register_to_reference"

    transform: Literal["rigid", "affine"] = "rigid"
    histogram_bins: int = 32
    """Bins of the Mattes mutual information's joint histogram."""
    shrink_factors: tuple[int, ...] = (4, 2, 1)
    """Shrink factors of the levels on an isotropic grid, each level's voxel size over the finest spacing."""
    smoothing_sigmas_mm: tuple[float, ...] = (2.0, 1.0, 0.0)
    finest_level_mm: float | None = 2.0
    """Skip levels whose voxels (shrink factor x finest spacing) are smaller than this: on 1 mm data
    the 2 mm level is already accurate to about 0.1 mm, and the 1 mm level doubles the run time.
    The coarsest level always runs; ``None`` runs every level."""
    sampling_percentage: float = 0.02
    """Fraction (0, 1] of voxels sampled at random for the metric, at least (see ``min_samples``)."""
    min_samples: int = 20_000
    """Each level samples at least about this many brain voxels: the metric's noise depends on the
    count, and coarse levels or small grids have few voxels."""
    iterations: int = 100
    """At most this many optimiser iterations per level."""
    learning_rate: float = 1.0
    min_step: float = 1e-3
    initializer: Literal["geometry", "moments"] = "geometry"
    interpolation: Literal["linear", "bspline"] = "linear"
    use_brain_mask: bool = True
    """Sample the metric inside the reference's brain mask only."""
    seed: int = 1
    """Seed of the metric's random sampling, >= 1 (SimpleITK reads 0 as "seed from the clock")."""

    def __post_init__(self) -> None:
        if self.seed < 1:
            raise MRIInputError(f"seed must be >= 1 for reproducible sampling, got {self.seed}")
        if self.transform not in ("rigid", "affine"):
            raise MRIInputError(f"transform must be 'rigid' or 'affine', got {self.transform!r}")
        if self.initializer not in _INITIALIZERS:
            raise MRIInputError(f"initializer must be one of {sorted(_INITIALIZERS)}, got {self.initializer!r}")
        if self.interpolation not in _INTERPOLATORS:
            raise MRIInputError(f"interpolation must be one of {sorted(_INTERPOLATORS)}, got {self.interpolation!r}")
        if len(self.shrink_factors) != len(self.smoothing_sigmas_mm) or not self.shrink_factors:
            raise MRIInputError(
                f"shrink_factors {self.shrink_factors} and smoothing_sigmas_mm {self.smoothing_sigmas_mm} "
                "must be non-empty and of equal length"
            )
        if self.finest_level_mm is not None and not self.finest_level_mm > 0:
            raise MRIInputError(f"finest_level_mm must be > 0 mm or None, got {self.finest_level_mm}")
        if not 0.0 < self.sampling_percentage <= 1.0:
            raise MRIInputError(f"sampling_percentage must be in (0, 1], got {self.sampling_percentage}")
        if self.min_samples < 0:
            raise MRIInputError(f"min_samples must be >= 0, got {self.min_samples}")

    def apply(self, volume: Volume) -> tuple[Volume, dict[str, Any]]:
        fixed = to_sitk(require_reference(volume).astype(np.float32), volume.affine)
        brain = volume.brain_mask()
        if not brain.any():
            raise MRIInputError(f"subject {volume.name!r}: brain mask is empty, expected at least one brain voxel")
        fixed_mask = to_sitk(brain.astype(np.uint8), volume.affine) if self.use_brain_mask else None
        levels = self.pyramid(volume.shape, volume.spacing, float(brain.mean()) if self.use_brain_mask else 1.0)
        images = dict(volume.images)
        level_voxels_mm = [[shrink * s for s in volume.spacing] for shrink, _, _ in levels]
        estimates: dict[str, Any] = {}
        for modality, array in volume.images.items():
            if modality == volume.reference:
                continue
            moving = to_sitk(array.astype(np.float32), volume.affine)
            try:
                transform, summary = self._register(fixed, moving, fixed_mask, levels)
            except RuntimeError as error:
                message = str(error).strip().splitlines()[-1]
                raise MRIInputError(
                    f"registering {modality!r} to {volume.reference!r} failed: {message}",
                    path=volume.sources.get(modality),
                ) from error
            resampled = sitk.Resample(
                moving, fixed, transform, getattr(sitk, _INTERPOLATORS[self.interpolation]), 0.0, sitk.sitkFloat32
            )
            # B-spline interpolation overshoots at edges; keep the modality's own intensity range.
            images[modality] = np.clip(from_sitk(resampled)[0], array.min(), array.max()).astype(np.float32)
            estimates[modality] = {
                **summary,
                "level_voxels_mm": level_voxels_mm,
                "transform": _transform_record(transform, self.transform),
            }
        return volume.replace(images=images), estimates

    def pyramid(
        self, shape: tuple[int, ...], spacing_mm: tuple[float, ...], brain_fraction: float
    ) -> list[tuple[int, float, float]]:
        """(shrink factor, smoothing sigma mm, sampling fraction) of each level to run on a grid.

        Level l is meant to have voxels of ``shrink_factors[l]`` x the finest spacing (on 1 mm data:
        4 and 2 mm); ``finest_level_mm`` is compared with that size. SimpleITK shrinks every axis by
        the same factor, so on an anisotropic grid the factor becomes round(shrink / (largest /
        smallest spacing)), at least 1: the thickest axis then exceeds the level's size by at most
        half its own spacing, or stays at its own spacing when that is coarser already (spacing
        (1, 1, 6.5): factors 1 and 1 instead of 4 and 2, which would make 26 and 13 mm voxels).
        Levels then differ by their smoothing only. An isotropic grid keeps ``shrink_factors``.

        Args:
            shape: grid size in voxels.
            spacing_mm: voxel size in mm.
            brain_fraction: fraction (0, 1] of the grid's voxels where the metric is sampled.
        """
        levels = list(zip(self.shrink_factors, self.smoothing_sigmas_mm))
        if self.finest_level_mm is not None:
            finest = min(spacing_mm)
            levels = [level for level in levels if level[0] * finest >= self.finest_level_mm] or levels[:1]
        _, ratio = thick_axis(spacing_mm)
        result = []
        for intended, sigma in levels:
            shrink = max(1, min(intended, math.floor(intended / ratio + 0.5)))
            sampled_voxels = np.prod([-(-n // shrink) for n in shape]) * brain_fraction
            fraction = min(1.0, max(self.sampling_percentage, self.min_samples / sampled_voxels))
            result.append((shrink, sigma, float(fraction)))
        return result

    def _register(
        self,
        fixed: sitk.Image,
        moving: sitk.Image,
        fixed_mask: sitk.Image | None,
        levels: list[tuple[int, float, float]],
    ) -> tuple[sitk.Euler3DTransform | sitk.AffineTransform, dict[str, Any]]:
        """Fit the transform mapping fixed points to moving points; return it and a summary."""
        shrink_factors, sigmas, fractions = zip(*levels)
        initial = sitk.Euler3DTransform() if self.transform == "rigid" else sitk.AffineTransform(3)
        initial = sitk.CenteredTransformInitializer(
            fixed, moving, initial, getattr(sitk.CenteredTransformInitializerFilter, _INITIALIZERS[self.initializer])
        )
        method = sitk.ImageRegistrationMethod()
        method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=self.histogram_bins)
        method.SetMetricSamplingStrategy(method.RANDOM)
        method.SetMetricSamplingPercentagePerLevel(list(fractions), self.seed)
        if fixed_mask is not None:
            method.SetMetricFixedMask(fixed_mask)
        method.SetInterpolator(sitk.sitkLinear)
        # Image gradients at the sampled points only: a full gradient image per level and per image
        # costs more than the optimisation itself on a 240 x 240 x 155 volume.
        method.SetMetricUseFixedImageGradientFilter(False)
        method.SetMetricUseMovingImageGradientFilter(False)
        _set_pyramid_descent(method, self.learning_rate, self.min_step, self.iterations, shrink_factors, sigmas)
        method.SetInitialTransform(initial, inPlace=False)
        transform = method.Execute(fixed, moving)
        # Execute wraps the result in a CompositeTransform holding the single fitted transform.
        fitted = sitk.CompositeTransform(transform).GetNthTransform(0).Downcast()
        summary = {
            "shrink_factors_run": shrink_factors,
            "sampling_fractions_run": fractions,
            "final_metric": method.GetMetricValue(),
            "stop_condition": method.GetOptimizerStopConditionDescription(),
            "iterations_last_level": method.GetOptimizerIteration(),
        }
        return fitted, summary


def _slice_image(array: np.ndarray, spacing: tuple[float, float]) -> sitk.Image:
    """A 2D image of ``array`` [A, B] with pixel size ``spacing`` (mm), origin 0, voxel-axis directions."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.T))
    image.SetSpacing([float(s) for s in spacing])
    return image


def _slice_centre(shape: tuple[int, ...], spacing: tuple[float, float]) -> tuple[float, float]:
    """Centre (mm) of a slice [A, B] in the coordinates of :func:`_slice_image`."""
    return ((shape[0] - 1) / 2 * spacing[0], (shape[1] - 1) / 2 * spacing[1])


def _slice_transform(params: np.ndarray, centre: tuple[float, float]) -> sitk.Euler2DTransform:
    """2D rigid transform (angle in radians, shift in mm) rotating about ``centre`` (mm)."""
    transform = sitk.Euler2DTransform()
    transform.SetCenter([float(c) for c in centre])
    transform.SetParameters([float(p) for p in params])
    return transform


def _resample_slice(
    array: np.ndarray, spacing: tuple[float, float], transform: sitk.Transform, interpolator: int
) -> np.ndarray:
    """``array`` [A, B] seen through ``transform`` on its own grid (zero outside), dtype kept."""
    image = _slice_image(array.astype(np.uint8) if array.dtype == bool else array, spacing)
    return sitk.GetArrayFromImage(sitk.Resample(image, image, transform, interpolator, 0)).T.astype(array.dtype)


def neighbour_means(stack: np.ndarray) -> np.ndarray:
    """[A, B, K] float32: slice k is the mean of slices k - 1 and k + 1 (the one that exists at the ends)."""
    if stack.shape[-1] == 1:
        return stack.astype(np.float32)
    below = np.concatenate([stack[..., 1:2], stack[..., :-1]], axis=-1).astype(np.float32)
    above = np.concatenate([stack[..., 1:], stack[..., -2:-1]], axis=-1).astype(np.float32)
    return 0.5 * (below + above)


def compose_slice_motion(first: np.ndarray, then: np.ndarray, centre: tuple[float, float]) -> np.ndarray:
    """[..., 3] motion (angle rad, shift mm) of ``p -> first(then(p))``, all rotating about ``centre``."""

    def matrix(params: np.ndarray) -> np.ndarray:
        angle, shift = params[..., 0], params[..., 1:]
        cos, sin = np.cos(angle), np.sin(angle)
        rotation = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
        result = np.zeros(params.shape[:-1] + (3, 3))
        result[..., :2, :2] = rotation
        result[..., :2, 2] = np.asarray(centre) + shift - rotation @ np.asarray(centre)
        result[..., 2, 2] = 1.0
        return result

    composed = matrix(first) @ matrix(then)
    rotation = composed[..., :2, :2]
    angle = np.arctan2(rotation[..., 1, 0], rotation[..., 0, 0])
    shift = composed[..., :2, 2] - np.asarray(centre) + rotation @ np.asarray(centre)
    return np.concatenate([angle[..., None], shift], axis=-1)


def slice_motion_size(motion: np.ndarray, shape: tuple[int, int], spacing: tuple[float, float]) -> np.ndarray:
    """[...] largest displacement (mm) over the corners of a slice [A, B] moved by ``motion`` [..., 3]."""
    extent = np.array([(n - 1) * s for n, s in zip(shape, spacing)])
    corners = np.array([[0.0, 0.0], [extent[0], 0.0], [0.0, extent[1]], extent]) - extent / 2
    angle, shift = motion[..., 0, None], motion[..., None, 1:]
    cos, sin = np.cos(angle), np.sin(angle)
    rotated = np.stack([cos * corners[:, 0] - sin * corners[:, 1], sin * corners[:, 0] + cos * corners[:, 1]], -1)
    return np.linalg.norm(rotated - corners + shift, axis=-1).max(axis=-1)


@dataclass(frozen=True)
class CorrectSliceMotion(PreprocessStep):
    """Re-align the slices of a thick-slice stack in-plane (2D rigid) to undo motion between slices.

    Other modalities: slice k is registered to slice k of the (corrected) reference modality.
    The reference itself: slice k is registered to the mean of slices k - 1 and k + 1. A displaced
    slice also displaces its neighbours' targets (by half as much), so each pass moves only the
    slices whose misfit is larger than both neighbours', and passes repeat until no misfit exceeds
    ``tolerance_mm``. The label map and an explicit brain mask follow the reference's corrections.
    Slices with too little brain are left as they are; a fit that does not improve the metric counts
    as no motion.

    Recorded per slice: angle (deg) and shift (mm along the in-plane voxel axes, in increasing axis
    order) of the 2D transform that maps corrected-slice points to source-slice points
    (corrected(p) = source(T(p))), rotating about the slice centre.
    """

    name = "correct_slice_motion"

    modality: str | None = None
    """Modality to correct; ``None`` corrects all of them."""
    axis: int | None = None
    """Slice axis of the [X, Y, Z] arrays (2: axial slices); ``None``: the volume's largest spacing
    (:func:`~mri_nerfstudio.preprocess.rescale.thick_axis`)."""
    metric: Literal["mattes_mi", "correlation"] = "mattes_mi"
    """Metric between a slice and the reference's slice (another contrast: mutual information)."""
    reference_metric: Literal["mattes_mi", "correlation"] = "correlation"
    """Metric between a reference slice and its neighbours' mean (same contrast)."""
    histogram_bins: int = 32
    shrink_factors: tuple[int, ...] = (2, 1)
    smoothing_sigmas_mm: tuple[float, ...] = (2.0, 0.0)
    iterations: int = 100
    learning_rate: float = 1.0
    min_step: float = 1e-3
    min_brain_fraction: float = 0.05
    """Slices with a smaller fraction of their pixels inside the brain mask are skipped."""
    passes: int = 3
    """At most this many passes over the reference's slices."""
    tolerance_mm: float = 1.0
    """Reference slices whose misfit to their neighbours moves no point by more than this stay put
    (neighbouring slices differ anatomically, increasingly so the thicker they are)."""

    def __post_init__(self) -> None:
        if self.axis is not None and self.axis not in (0, 1, 2):
            raise MRIInputError(f"axis must be None, 0, 1 or 2, got {self.axis}")
        for field_name in ("metric", "reference_metric"):
            if getattr(self, field_name) not in ("mattes_mi", "correlation"):
                raise MRIInputError(
                    f"{field_name} must be 'mattes_mi' or 'correlation', got {getattr(self, field_name)!r}"
                )
        if len(self.shrink_factors) != len(self.smoothing_sigmas_mm) or not self.shrink_factors:
            raise MRIInputError(
                f"shrink_factors {self.shrink_factors} and smoothing_sigmas_mm {self.smoothing_sigmas_mm} "
                "must be non-empty and of equal length"
            )

    def apply(self, volume: Volume) -> tuple[Volume, dict[str, Any]]:
        require_reference(volume)
        if self.modality is not None and self.modality not in volume.images:
            raise MRIInputError(f"subject {volume.name!r}: modality {self.modality!r} not in {volume.modalities}")
        selected = volume.modalities if self.modality is None else [self.modality]
        # The reference goes first: it is the target of every other modality.
        order = sorted(selected, key=lambda modality: modality != volume.reference)
        axis = thick_axis(volume.spacing)[0] if self.axis is None else self.axis
        spacing = tuple(s for i, s in enumerate(volume.spacing) if i != axis)
        brain_fraction = np.moveaxis(volume.brain_mask(), axis, -1).mean(axis=(0, 1))
        has_brain = brain_fraction >= self.min_brain_fraction

        images, seg, mask = dict(volume.images), volume.seg, volume.mask
        estimates: dict[str, Any] = {
            "direction": "corrected slice mm -> source slice mm (corrected(p) = source(T(p)))",
            "thick_axis": describe_axis(axis),
            "shift_axes": [i for i in range(3) if i != axis],
        }
        for modality in order:
            stack = np.moveaxis(volume.images[modality], axis, -1)
            if modality == volume.reference:
                motion = self._reference_motion(stack, has_brain, spacing)
                seg = None if seg is None else self._move_labels(seg, motion, spacing, axis)
                mask = None if mask is None else self._move_labels(mask, motion, spacing, axis)
            else:
                targets = np.moveaxis(images[volume.reference], axis, -1)
                min_range = FLAT_SLICE_FRACTION * min(np.ptp(stack), np.ptp(targets))
                motion = np.zeros((stack.shape[-1], 3))
                for k in np.flatnonzero(has_brain):
                    motion[k] = self._fit_slice(targets[..., k], stack[..., k], spacing, self.metric, min_range)
            images[modality] = np.moveaxis(self._move_slices(stack, motion, spacing), -1, axis)
            estimates[modality] = [
                {"slice": k, "skipped": not has_brain[k], "angle_deg": np.degrees(angle), "shift_mm": shift}
                for k, (angle, *shift) in enumerate(motion)
            ]
        return volume.replace(images=images, seg=seg, mask=mask), estimates

    def _reference_motion(self, stack: np.ndarray, has_brain: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
        """[K, 3] motion of the reference's slices, estimated against their neighbours' mean."""
        centre = _slice_centre(stack.shape[:2], spacing)
        motion = np.zeros((stack.shape[-1], 3))
        min_range = FLAT_SLICE_FRACTION * np.ptp(stack)
        current = stack
        for _ in range(self.passes):
            targets = neighbour_means(current)
            misfit = np.zeros_like(motion)
            for k in np.flatnonzero(has_brain):
                misfit[k] = self._fit_slice(targets[..., k], current[..., k], spacing, self.reference_metric, min_range)
            size = slice_motion_size(misfit, stack.shape[:2], spacing)
            neighbours = np.maximum(np.pad(size, 1)[:-2], np.pad(size, 1)[2:])
            moving = (size > neighbours) & (size > self.tolerance_mm)
            if not moving.any():
                break
            motion[moving] = compose_slice_motion(motion[moving], misfit[moving], centre)
            current = self._move_slices(stack, motion, spacing)
        return motion

    def _move_slices(self, stack: np.ndarray, motion: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
        """Resample each slice of ``stack`` [A, B, K] through its motion [K, 3] (linear; nearest for labels)."""
        centre = _slice_centre(stack.shape[:2], spacing)
        interpolator = sitk.sitkLinear if np.issubdtype(stack.dtype, np.floating) else sitk.sitkNearestNeighbor
        result = stack.copy()
        for k in np.flatnonzero(np.any(motion != 0, axis=1)):
            transform = _slice_transform(motion[k], centre)
            result[..., k] = _resample_slice(stack[..., k], spacing, transform, interpolator)
        return result

    def _move_labels(
        self, labels: np.ndarray, motion: np.ndarray, spacing: tuple[float, float], axis: int
    ) -> np.ndarray:
        """:meth:`_move_slices` for a label map or mask [X, Y, Z] sliced along ``axis`` (nearest, dtype kept)."""
        stack = np.moveaxis(labels, axis, -1)
        return np.moveaxis(self._move_slices(stack, motion, spacing), -1, axis)

    def _slice_method(self, metric: str) -> sitk.ImageRegistrationMethod:
        """A registration method with ``metric`` and a linear interpolator."""
        method = sitk.ImageRegistrationMethod()
        if metric == "mattes_mi":
            method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=self.histogram_bins)
        else:
            method.SetMetricAsCorrelation()
        method.SetInterpolator(sitk.sitkLinear)
        return method

    def _fit_slice(
        self, target: np.ndarray, source: np.ndarray, spacing: tuple[float, float], metric: str, min_range: float
    ) -> np.ndarray:
        """[angle rad, shift_a mm, shift_b mm] mapping target points to source points about the slice centre.

        Zero when either slice is (nearly) flat, below ``min_range`` (mutual information needs an
        intensity range for its histogram), or when the fit does not lower the metric (evaluated on
        every pixel) below the identity's.
        """
        if np.ptp(target) <= min_range or np.ptp(source) <= min_range:
            return np.zeros(3)
        fixed = _slice_image(target.astype(np.float32), spacing)
        moving = _slice_image(source.astype(np.float32), spacing)
        centre = _slice_centre(target.shape, spacing)
        method = self._slice_method(metric)
        _set_pyramid_descent(
            method, self.learning_rate, self.min_step, self.iterations, self.shrink_factors, self.smoothing_sigmas_mm
        )
        method.SetInitialTransform(_slice_transform(np.zeros(3), centre), inPlace=False)
        fitted = np.asarray(sitk.CompositeTransform(method.Execute(fixed, moving)).GetNthTransform(0).GetParameters())

        evaluate = self._slice_method(metric)
        evaluate.SetInitialTransform(_slice_transform(fitted, centre))
        metric_fitted = evaluate.MetricEvaluate(fixed, moving)
        evaluate.SetInitialTransform(_slice_transform(np.zeros(3), centre))
        return fitted if metric_fitted < evaluate.MetricEvaluate(fixed, moving) else np.zeros(3)
