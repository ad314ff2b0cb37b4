"""Brain masks derived from a scan: head foreground, skull-stripped or not, and brain extraction.

A prepared subject needs a brain mask. BraTS-like scans are already skull-stripped: the brain is the
scan's foreground, whatever the background value (0, or a negative constant after z-scoring). A
whole-head scan (skull, scalp, face, neck) needs its brain extracted: :func:`extract_brain` registers
the MNI152 template shipped inside nilearn (no download) onto the scan with SimpleITK, carries the
template's brain mask over, and refines it by the scan's own intensities near the mask's boundary.
:func:`derive_brain_mask` chooses between the two (``skull_strip="auto"``: :func:`is_skull_stripped`);
:class:`ExtractBrainMask` is the preprocessing step.

Every array is [X, Y, Z] with an ``affine`` [4, 4] mapping voxel indices to RAS mm (any orientation,
thick slices included). The brain extraction works on a working grid of about
:data:`WORKING_SPACING_MM` isotropic voxels and brings its mask back to the input grid.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar, Literal

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.lazy_import import lazy_module
from mri_nerfstudio.preprocess import PreprocessStep, require_reference
from mri_nerfstudio.preprocess.field_of_view import (
    brain_cut_by_field_of_view,
    brain_outside_modalities,
    describe_cuts,
)
from mri_nerfstudio.preprocess.register import from_sitk, to_sitk
from mri_nerfstudio.volume import LPS_FROM_RAS, Volume

sitk = lazy_module("SimpleITK", "to extract the brain from a whole-head scan")

SkullStrip = Literal["auto", "on", "off"]
SKULL_STRIP_CHOICES: tuple[str, ...] = ("auto", "on", "off")

WORKING_SPACING_MM = 2.0
"""Voxel size of the grid the brain extraction works on."""
FOREGROUND_SMOOTHING_MM = 2.0
"""Gaussian sigma applied before thresholding a noisy background."""
CONSTANT_BACKGROUND_SHARE = 0.2
"""A scan whose minimum value covers at least this share of the grid exactly has a constant background."""
STRIPPED_MAX_FOREGROUND_ML = 2500.0
"""A foreground up to this volume is a brain (adult brains: 1,000-2,000 ml); a whole head is ~4,000 ml and more."""
EXPECTED_BRAIN_ML: tuple[float, float] = (800.0, 2000.0)
"""Brain volumes outside this range are suspicious and warned about."""

TEMPLATE_LAYERS: tuple[tuple[float, float], ...] = ((8.0, 0.15), (6.0, 0.8), (10.0, 0.0))
"""Synthetic layers around the template brain, inside out: (thickness mm, T1 level on the template's
[0, 1] scale): CSF and skull (dark), the scalp (fat, bright), then air (0)."""
TEMPLATE_SKULL_BASE_Z_MM = -20.0
"""MNI z below which the synthetic layers are left out of the registration metric (face, skull base, neck)."""
INITIAL_SCALES: tuple[float, ...] = (0.85, 0.95)
"""Starting isotropic scales from the template to the scan (the MNI152 brain, 1,883 ml, is larger than
most); the best start by mutual information wins (one start can stall with the brain on the scalp)."""
REGISTRATION_ITERATIONS = 100
"""Gradient descent iterations per pyramid level."""
REGISTRATION_SAMPLING = 0.15
"""Share of the metric region's voxels sampled (randomly, fixed seed) per iteration on the 4 and 2 mm levels..."""
COARSE_SAMPLING = 0.5
"""... and on the coarse 8 mm level, which has few voxels."""
SCALP_AT_VERTEX_MM = 12.0
"""Initial guess of the distance from the top of the head to the top of the brain."""
INITIAL_SLAB_MM = 60.0
"""The top slab of the head (and of the template brain) whose centroids align at the start."""
REFINE_INWARD_MM = 4.0
"""The registered mask's boundary may move in by this much to follow the scan's own brain edge (CSF
between brain and skull, wider in atrophied brains, is left out)..."""
REFINE_OUTWARD_MM = 2.0
"""... and out by this much."""
REFINE_PROBE_MM = 4.0
"""The brain level is measured this deep inside the registered boundary, the dark level this far outside it."""
REFINE_LEVEL = 0.15
"""Brain/non-brain threshold between the dark band outside the mask (0) and the brain near its edge (1)."""
REFINE_OPENING_MM = 2.0
"""Radius of the opening that cuts thin bridges from the brain to bright tissue outside it."""
REFINE_CLOSING_MM = 6.0
"""Radius of the closing that puts sulcal CSF at the surface back into the brain."""

EXTRACTION_METHOD = "mni152-affine-registration+intensity-refinement"


# --- Geometry helpers --------------------------------------------------------------------------


def voxel_volume_ml(affine: np.ndarray) -> float:
    """Volume of one voxel of ``affine`` [4, 4] in ml (|det| of its 3 x 3 part, mm^3 / 1000)."""
    return float(abs(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3]))) / 1000.0


def spacing_of(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size [3] in mm along each array axis of ``affine`` [4, 4]."""
    sizes = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
    return (float(sizes[0]), float(sizes[1]), float(sizes[2]))


def ball(radius_mm: float, spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """bool structuring element [2 a + 1, 2 b + 1, 2 c + 1]: the voxels (of ``spacing_mm``) whose centre
    is within ``radius_mm`` of the central one."""
    half = [int(radius_mm // s) for s in spacing_mm]
    grids = np.meshgrid(*(np.arange(-h, h + 1) * s for h, s in zip(half, spacing_mm)), indexing="ij")
    return sum(g**2 for g in grids) <= radius_mm**2 + 1e-6


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask.copy()
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == np.argmax(sizes)


def _fill(mask: np.ndarray, in_plane: tuple[int, ...]) -> np.ndarray:
    """``mask`` plus the parts of its complement that do not reach the grid's faces across the axes
    ``in_plane`` (connectivity: faces, within the planes those axes span)."""
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1, 1, 1] = True
    for axis in in_plane:
        index = [1, 1, 1]
        for offset in (0, 2):
            index[axis] = offset
            structure[tuple(index)] = True
    labels, _ = ndimage.label(~mask, structure=structure)
    outside = np.zeros(labels.max() + 1, dtype=bool)
    for axis in in_plane:
        outside[np.take(labels, 0, axis=axis)] = True
        outside[np.take(labels, -1, axis=axis)] = True
    outside[0] = False
    return mask | ~outside[labels]


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` [X, Y, Z] with its enclosed holes filled in 3D, then slice by slice along each axis.

    The slice-wise pass also fills cavities that open to the outside only through another slice
    (the ear canals, the mouth, a ventricle touching a cut at the edge of the field of view).
    """
    filled = _fill(np.asarray(mask, dtype=bool), (0, 1, 2))
    for normal in range(3):
        filled = _fill(filled, tuple(axis for axis in range(3) if axis != normal))
    return filled


# --- Foreground and the skull-stripped decision ------------------------------------------------


def constant_background(image: np.ndarray) -> tuple[float, float]:
    """The scan's minimum value and the share of voxels exactly equal to it.

    A skull-stripped scan (and many scanners' air after thresholding) has one exact background
    value over much of the grid: 0, or a negative constant once z-scored.

    Returns:
        (background value, share of the grid in [0, 1]).
    """
    minimum = float(np.min(image))
    return minimum, float(np.count_nonzero(image == minimum)) / image.size


def head_foreground(image: np.ndarray, spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """The head (or the brain, for a skull-stripped scan) without the air around it.

    With a constant background (:func:`constant_background` covers at least
    :data:`CONSTANT_BACKGROUND_SHARE` of the grid) every voxel above it is a candidate; otherwise the
    image is smoothed (:data:`FOREGROUND_SMOOTHING_MM`) and thresholded by Otsu's method on its
    log intensities (robust to a bias field and to noisy air). Then the largest connected component
    is kept and its holes are filled (:func:`fill_holes`).

    Args:
        image: [X, Y, Z] intensities, any range (negative values allowed).
        spacing_mm: voxel size along X, Y, Z in mm.

    Returns:
        bool [X, Y, Z]; all False for a constant image.
    """
    image = np.asarray(image, dtype=np.float32)
    background, share = constant_background(image)
    if share >= 1.0:
        return np.zeros(image.shape, dtype=bool)
    sigma = [FOREGROUND_SMOOTHING_MM / s for s in spacing_mm]
    smoothed = ndimage.gaussian_filter(image - background, sigma)
    # log compresses the bright tail (fat, vessels) so that the threshold falls between air and tissue
    log = np.log1p(np.maximum(smoothed, 0.0) / max(float(np.percentile(smoothed, 99)), 1e-12) * 1000.0)
    tissue = fill_holes(_largest_component(log > threshold_otsu(log)))
    if share < CONSTANT_BACKGROUND_SHARE:
        return tissue
    # A constant background gives the exact edge: every voxel above it near the thresholded tissue
    # (not the noise specks some scanners leave in an otherwise zeroed air).
    steps = max(1, round(2.0 * FOREGROUND_SMOOTHING_MM / min(spacing_mm)))
    near = ndimage.binary_dilation(tissue, iterations=steps)
    return fill_holes(_largest_component(near & (image > background)))


def is_skull_stripped(
    image: np.ndarray, spacing_mm: tuple[float, float, float], foreground: np.ndarray | None = None
) -> tuple[bool, dict[str, Any]]:
    """Whether the scan is already skull-stripped, decided from the scan alone.

    A stripped scan has one exactly constant background value over a large share of the grid
    (at least :data:`CONSTANT_BACKGROUND_SHARE`) and a brain-sized foreground (at most
    :data:`STRIPPED_MAX_FOREGROUND_ML`). A whole head has a larger foreground (~4,000 ml and
    more) even where its air is exactly 0; noisy air has no constant background.

    Args:
        image: [X, Y, Z] intensities.
        spacing_mm: voxel size along X, Y, Z in mm.
        foreground: :func:`head_foreground` of ``image`` when already computed.

    Returns:
        (decision, evidence): ``background_value``, ``background_share``, ``constant_background``,
        ``foreground_ml`` and the two thresholds used.
    """
    background, share = constant_background(image)
    if foreground is None:
        foreground = head_foreground(image, spacing_mm)
    foreground_ml = float(np.count_nonzero(foreground)) * float(np.prod(spacing_mm)) / 1000.0
    constant = share >= CONSTANT_BACKGROUND_SHARE
    stripped = constant and 0.0 < foreground_ml <= STRIPPED_MAX_FOREGROUND_ML
    return stripped, {
        "background_value": background,
        "background_share": share,
        "constant_background": constant,
        "foreground_ml": foreground_ml,
        "min_background_share": CONSTANT_BACKGROUND_SHARE,
        "max_stripped_foreground_ml": STRIPPED_MAX_FOREGROUND_ML,
    }


# --- Brain extraction --------------------------------------------------------------------------


def _array_of(image: "sitk.Image") -> np.ndarray:
    """Voxels [X, Y, Z] of a SimpleITK image (:func:`from_sitk` without the affine)."""
    return from_sitk(image)[0]


def _affine_of(image: "sitk.Image") -> np.ndarray:
    """[4, 4] voxel index -> RAS mm of a SimpleITK image."""
    return from_sitk(image)[1]


def working_grid(image: np.ndarray, affine: np.ndarray, spacing_mm: float = WORKING_SPACING_MM) -> "sitk.Image":
    """``image`` resampled to ``spacing_mm`` isotropic voxels over the same field of view (same axes).

    Finer axes are smoothed first (Gaussian, sigma = half the down-sampling step) so the result is
    not aliased; coarser axes (thick slices) are interpolated linearly.
    """
    source = to_sitk(np.asarray(image, dtype=np.float32), affine)
    spacing = np.asarray(source.GetSpacing())
    sigma_mm = np.where(spacing < spacing_mm, 0.5 * np.sqrt(np.maximum(spacing_mm**2 - spacing**2, 0.0)), 0.0)
    if np.any(sigma_mm > 0):
        smoothed = ndimage.gaussian_filter(np.asarray(image, dtype=np.float32), sigma_mm / spacing)
        source = to_sitk(smoothed, affine)
    size = [max(2, int(round(n * s / spacing_mm))) for n, s in zip(source.GetSize(), spacing)]
    # keep the field of view's centre where it is
    centre_index = (np.asarray(source.GetSize()) - 1) / 2.0
    centre = np.asarray(source.TransformContinuousIndexToPhysicalPoint(centre_index.tolist()))
    direction = np.asarray(source.GetDirection()).reshape(3, 3)
    origin = centre - direction @ ((np.asarray(size) - 1) / 2.0 * spacing_mm)
    return sitk.Resample(
        source, size, sitk.Transform(), sitk.sitkLinear, origin.tolist(), [spacing_mm] * 3,
        source.GetDirection(), float(np.min(image)), sitk.sitkFloat32,
    )


@dataclass(frozen=True)
class _Template:
    """The registration's fixed side, on nilearn's 2 mm MNI152 grid (SimpleITK images, LPS)."""

    head: "sitk.Image"
    """float32: the skull-stripped T1 template wrapped in a synthetic T1 head (see :func:`_template`)."""
    brain: "sitk.Image"
    """uint8: the MNI152 brain mask (1,883 ml)."""
    metric_region: "sitk.Image"
    """uint8: where the registration metric is computed."""


@lru_cache(maxsize=1)
def _template() -> _Template:
    """nilearn's 2 mm MNI152 T1 template (skull-stripped) inside a synthetic head (no download).

    The template has nothing around the brain, while a whole-head scan has CSF and skull (dark in a
    T1) and then the scalp (bright fat). A registration of the bare brain readily stretches it over
    the skull onto the scalp; so the template is given the layers a T1 shows:
    :data:`TEMPLATE_LAYERS`, by distance from the brain mask. The metric region is the brain and,
    above the skull base, those layers (lower down, the face and neck do not follow such a model).
    """
    # nilearn takes seconds to import and only the brain extraction needs it.
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_template

    template = load_mni152_template(resolution=2)
    mask = load_mni152_brain_mask(resolution=2)
    brain = np.asarray(mask.dataobj) > 0
    head = np.asarray(template.dataobj, dtype=np.float32).copy()
    spacing = spacing_of(mask.affine)
    distance = ndimage.distance_transform_edt(~brain, sampling=spacing)
    outer = 0.0
    for thickness_mm, level in TEMPLATE_LAYERS:
        layer = (distance > outer) & (distance <= outer + thickness_mm)
        head[layer] = level
        outer += thickness_mm
    z_mm = mask.affine[2, 2] * np.arange(brain.shape[2]) + mask.affine[2, 3]  # the MNI grid is axis-aligned
    above_skull_base = (z_mm > TEMPLATE_SKULL_BASE_Z_MM)[None, None, :]
    region = brain | ((distance <= outer) & above_skull_base)
    return _Template(
        head=to_sitk(head, template.affine),
        brain=to_sitk(brain.astype(np.uint8), mask.affine),
        metric_region=to_sitk(region.astype(np.uint8), mask.affine),
    )


def _physical_points(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """[N, 3] RAS mm of the voxels of ``mask``."""
    return np.argwhere(mask) @ affine[:3, :3].T + affine[:3, 3]


def _top_slab_centroid(points: np.ndarray, depth_mm: float) -> np.ndarray:
    """[3] centroid (RAS mm) of the points within ``depth_mm`` of the highest one; z is that top."""
    top = points[:, 2].max()
    slab = points[points[:, 2] >= top - depth_mm]
    return np.array([slab[:, 0].mean(), slab[:, 1].mean(), top])


def _registration(
    template: _Template, transform: "sitk.Transform", shrink: tuple[int, ...], sampling: float
) -> "sitk.ImageRegistrationMethod":
    """Mattes mutual information within the template's metric region, regular-step gradient descent,
    a pyramid of ``shrink`` factors (Gaussian sigma = shrink mm), ``transform`` optimised in place."""
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(sampling, 1)
    method.SetMetricFixedMask(template.metric_region)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=1e-3, numberOfIterations=REGISTRATION_ITERATIONS, relaxationFactor=0.6
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(shrink))
    method.SetSmoothingSigmasPerLevel([float(f) if f > 1 else 0.0 for f in shrink])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(transform, inPlace=True)
    return method


def register_template(work: "sitk.Image", head: np.ndarray) -> "sitk.Transform":
    """Affine transform from MNI152 mm to the scan's mm that aligns the template brain with the scan's brain.

    The template (:func:`_template`: a synthetic T1 head around the MNI152 brain) starts with the top
    of its brain :data:`SCALP_AT_VERTEX_MM` below the top of the head, centred on the head's top slab
    (a scan's centre of mass is low: it includes the neck), at each of :data:`INITIAL_SCALES`. Each
    start is aligned coarsely (similarity transform, 8 mm voxels); the best one by mutual information
    is refined with an affine transform on the 4 and 2 mm grids.

    Args:
        work: the scan on the working grid.
        head: bool [X, Y, Z] head foreground on ``work``'s grid.

    Returns:
        A SimpleITK transform mapping template (LPS) points to scan (LPS) points.
    """
    template = _template()
    template_points = _physical_points(_array_of(template.brain) > 0, _affine_of(template.brain))
    head_points = _physical_points(head, _affine_of(work))
    template_centre = _top_slab_centroid(template_points, INITIAL_SLAB_MM - SCALP_AT_VERTEX_MM)
    head_centre = _top_slab_centroid(head_points, INITIAL_SLAB_MM)
    head_centre[2] -= SCALP_AT_VERTEX_MM

    best, best_value = None, np.inf
    for scale in INITIAL_SCALES:
        start = sitk.Similarity3DTransform()
        start.SetCenter((LPS_FROM_RAS[:3, :3] @ template_centre).tolist())
        start.SetTranslation((LPS_FROM_RAS[:3, :3] @ (head_centre - template_centre)).tolist())
        start.SetScale(scale)
        method = _registration(template, start, shrink=(4,), sampling=COARSE_SAMPLING)
        method.Execute(template.head, work)
        if method.GetMetricValue() < best_value:
            best, best_value = start, method.GetMetricValue()
    transform = sitk.AffineTransform(3)
    transform.SetCenter(best.GetCenter())
    transform.SetMatrix(best.GetMatrix())
    transform.SetTranslation(best.GetTranslation())
    _registration(template, transform, shrink=(2, 1), sampling=REGISTRATION_SAMPLING).Execute(template.head, work)
    return transform


def refine_mask(
    image: np.ndarray, registered: np.ndarray, spacing_mm: tuple[float, float, float]
) -> np.ndarray:
    """Move the registered mask's boundary to the scan's own brain edge: in by up to
    :data:`REFINE_INWARD_MM`, out by up to :data:`REFINE_OUTWARD_MM`.

    The brain level is the median intensity within :data:`REFINE_PROBE_MM` inside the registered
    boundary, the dark level the median within as much outside it (CSF and skull in a T1). Within the
    band, voxels above ``dark + REFINE_LEVEL (brain - dark)`` are brain; then an opening cuts thin
    bridges to bright tissue outside, only what connects to the band's inner side is kept, and a
    closing and hole filling put sulcal CSF back. Where the edge is not brighter than its outside
    (another contrast), the registered mask is returned unchanged.

    Args:
        image: [X, Y, Z] scan intensities.
        registered: bool [X, Y, Z] the template's brain mask carried onto the scan.
        spacing_mm: voxel size in mm.

    Returns:
        bool [X, Y, Z].
    """
    # The morphology treats the grid's edge as background: where the field of view cuts the brain it
    # would shave the mask off the cut by the largest radius (6 mm). Padded with the edge's own values,
    # the cut tissue runs on past the edge instead, and the mask reaches it.
    largest_mm = max(REFINE_PROBE_MM, REFINE_INWARD_MM, REFINE_OUTWARD_MM, REFINE_OPENING_MM, REFINE_CLOSING_MM)
    pad = int(np.ceil(largest_mm / min(spacing_mm))) + 1
    inside = (slice(pad, -pad),) * 3
    image, registered = np.pad(image, pad, mode="edge"), np.pad(registered, pad, mode="edge")
    probe = ball(REFINE_PROBE_MM, spacing_mm)
    brain_level = float(np.median(image[registered & ~ndimage.binary_erosion(registered, probe)]))
    dark_level = float(np.median(image[ndimage.binary_dilation(registered, probe) & ~registered]))
    if not brain_level > dark_level:
        return registered[inside]
    inner = ndimage.binary_erosion(registered, ball(REFINE_INWARD_MM, spacing_mm))
    outer = ndimage.binary_dilation(registered, ball(REFINE_OUTWARD_MM, spacing_mm))
    threshold = dark_level + REFINE_LEVEL * (brain_level - dark_level)
    candidate = inner | (outer & (image > threshold))
    candidate = ndimage.binary_opening(candidate, ball(REFINE_OPENING_MM, spacing_mm)) | inner
    labels, _ = ndimage.label(candidate)
    core_labels = np.unique(labels[inner])
    candidate = np.isin(labels, core_labels[core_labels > 0])
    closed = ndimage.binary_closing(candidate, ball(REFINE_CLOSING_MM, spacing_mm), border_value=0)
    return fill_holes(closed & outer)[inside]


def template_brain_on(work: "sitk.Image", head: np.ndarray) -> np.ndarray:
    """The MNI152 brain mask registered onto the scan (:func:`register_template`), bool [X, Y, Z] on
    ``work``'s grid (linear interpolation > 0.5, within the head)."""
    transform = register_template(work, head)
    carried = sitk.Resample(
        sitk.Cast(_template().brain, sitk.sitkFloat32), work, transform.GetInverse(), sitk.sitkLinear, 0.0
    )
    return (_array_of(carried) > 0.5) & head


def extract_brain(image: np.ndarray, affine: np.ndarray, refine: bool = True) -> np.ndarray:
    """Brain mask of a whole-head scan (skull, scalp, face, neck).

    On a :data:`WORKING_SPACING_MM` grid (:func:`working_grid`): the head foreground, the MNI152
    brain mask registered onto the scan (:func:`template_brain_on`), refined by the scan's
    intensities (:func:`refine_mask`); the mask is then brought back to the input grid (linear, > 0.5).

    Args:
        image: [X, Y, Z] intensities (T1-weighted works best: the template is a T1 and the refinement
            expects a brain brighter than the CSF and skull around it; it leaves the registered mask as
            it is otherwise).
        affine: [4, 4] voxel index -> RAS mm.
        refine: False keeps the registered template mask as it is.

    Returns:
        bool [X, Y, Z] on the input grid.
    """
    work = working_grid(image, affine)
    work_array = _array_of(work)
    spacing = (WORKING_SPACING_MM,) * 3
    head = head_foreground(work_array, spacing)
    if not head.any():
        return np.zeros(np.shape(image), dtype=bool)
    brain = template_brain_on(work, head)
    if refine:
        brain = refine_mask(work_array, brain, spacing)
    back = sitk.Resample(
        to_sitk(brain.astype(np.float32), _affine_of(work)),
        to_sitk(np.zeros(np.shape(image), np.uint8), affine),
        sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32,
    )
    return _array_of(back) > 0.5


# --- The mask a subject gets -------------------------------------------------------------------


def derive_brain_mask(
    image: np.ndarray, affine: np.ndarray, skull_strip: SkullStrip = "auto"
) -> tuple[np.ndarray, dict[str, Any]]:
    """The brain mask of a scan, and a record of how it was found.

    Args:
        image: [X, Y, Z] intensities of the reference modality.
        affine: [4, 4] voxel index -> RAS mm.
        skull_strip: ``"off"``: the head foreground (the brain, for a skull-stripped scan);
            ``"on"``: :func:`extract_brain`; ``"auto"``: :func:`is_skull_stripped` decides.

    Returns:
        (bool [X, Y, Z] mask, record): ``decision``, ``method``, ``brain_ml``, ``foreground_ml``,
        ``share_of_foreground`` (mask voxels / foreground voxels) and, for ``"auto"``, ``evidence``.
    """
    if skull_strip not in SKULL_STRIP_CHOICES:
        raise MRIInputError(f"skull_strip: expected one of {list(SKULL_STRIP_CHOICES)}, got {skull_strip!r}")
    spacing = spacing_of(affine)
    foreground = head_foreground(image, spacing)
    record: dict[str, Any] = {}
    if skull_strip == "auto":
        stripped, record["evidence"] = is_skull_stripped(image, spacing, foreground)
        extract = not stripped
        record["decision"] = "auto: whole head, brain extracted" if extract else "auto: already skull-stripped"
    else:
        extract = skull_strip == "on"
        record["decision"] = "on: brain extracted" if extract else "off: foreground"
    mask = extract_brain(image, affine) if extract else foreground
    record["method"] = EXTRACTION_METHOD if extract else "foreground (threshold, largest component, holes filled)"
    return mask, {**record, **mask_volumes(mask, foreground, affine)}


def mask_volumes(mask: np.ndarray, foreground: np.ndarray, affine: np.ndarray) -> dict[str, float]:
    """``brain_ml``, ``foreground_ml`` and ``share_of_foreground`` (mask voxels / foreground voxels)."""
    voxel_ml = voxel_volume_ml(affine)
    brain, head = int(np.count_nonzero(mask)), int(np.count_nonzero(foreground))
    return {
        "brain_ml": brain * voxel_ml,
        "foreground_ml": head * voxel_ml,
        "share_of_foreground": brain / head if head else 0.0,
    }


def field_of_view_checks(volume: Volume, mask: np.ndarray, reference_file: str) -> dict[str, dict[str, float]]:
    """``cut_by_field_of_view`` (the sides where the reference's field of view cuts the brain off) and
    ``brain_outside_modality`` (the other modalities at 0 on part of the brain), each warned about, naming the
    file (:mod:`~mri_nerfstudio.preprocess.field_of_view`)."""
    cuts = brain_cut_by_field_of_view(mask, volume.affine)
    if cuts:
        warnings.warn(
            f"{reference_file}: the brain is cut off by the field of view on the {describe_cuts(cuts)}: its "
            "reconstruction ends flat there",
            stacklevel=3,
        )
    others = {modality: array for modality, array in volume.images.items() if modality != volume.reference}
    uncovered = brain_outside_modalities(others, mask)
    for modality, share in uncovered.items():
        modality_file = volume.sources.get(modality, f"subject {volume.name!r}")
        warnings.warn(
            f"{modality_file}: {modality} is 0 on {share:.0%} of the brain: the brain lies partly outside its "
            f"field of view (or it was skull-stripped with a smaller mask), and the slice encoder sees no "
            f"{modality} there",
            stacklevel=3,
        )
    return {"cut_by_field_of_view": cuts, "brain_outside_modality": uncovered}


@dataclass(frozen=True)
class ExtractBrainMask(PreprocessStep):
    """Set the volume's brain mask: keep a given one, else derive it from the reference modality.

    A given mask (``volume.mask``; its file in ``volume.sources["mask"]``) is kept, and must not be
    empty. Otherwise :func:`derive_brain_mask` runs on the reference modality. Either way the
    estimates hold the decision, the method, the brain and foreground volumes and the sides on which the
    field of view cuts the brain off (:func:`~mri_nerfstudio.preprocess.field_of_view.brain_cut_by_field_of_view`)
    and the other modalities that leave part of the brain at 0
    (:func:`~mri_nerfstudio.preprocess.field_of_view.brain_outside_modalities`). A brain outside
    :data:`EXPECTED_BRAIN_ML`, cut off, or not covered by a modality is warned about, naming the file.
    """

    name: ClassVar[str] = "brain_mask"

    skull_strip: SkullStrip = "auto"
    """``auto``: decide from the scan; ``on``: extract the brain; ``off``: the scan's foreground is the brain."""

    def __post_init__(self) -> None:
        if self.skull_strip not in SKULL_STRIP_CHOICES:
            raise MRIInputError(
                f"skull_strip: expected one of {list(SKULL_STRIP_CHOICES)}, got {self.skull_strip!r}"
            )

    def apply(self, volume: Volume) -> tuple[Volume, dict[str, Any]]:
        image = require_reference(volume)
        if volume.mask is not None:
            mask_file = volume.sources.get("mask", "a mask given in memory")
            mask = np.asarray(volume.mask, dtype=bool)
            if not mask.any():
                raise MRIInputError("brain mask is empty; expected at least one brain voxel", mask_file)
            foreground = head_foreground(image, volume.spacing)
            estimates = {
                "decision": f"given: {mask_file}",
                "method": "given",
                **mask_volumes(mask, foreground, volume.affine),
            }
        else:
            mask, estimates = derive_brain_mask(image, volume.affine, self.skull_strip)
        reference_file = volume.sources.get(volume.reference, f"subject {volume.name!r}")
        low, high = EXPECTED_BRAIN_ML
        if not low <= estimates["brain_ml"] <= high:
            warnings.warn(
                f"{reference_file}: brain mask of {estimates['brain_ml']:.0f} ml ({estimates['decision']}); "
                f"expected {low:.0f} to {high:.0f} ml for an adult brain",
                stacklevel=2,
            )
        estimates.update(field_of_view_checks(volume, mask, reference_file))
        return volume.replace(mask=mask), estimates

    def describe(self, estimates: dict[str, Any]) -> str:
        method = "" if estimates["method"] == "given" else f" ({estimates['method']})"
        return (
            f"brain mask {estimates['decision']}{method}: {estimates['brain_ml']:.0f} ml, "
            f"{estimates['share_of_foreground']:.0%} of the {estimates['foreground_ml']:.0f} ml foreground"
        )
