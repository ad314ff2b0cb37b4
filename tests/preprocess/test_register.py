"""Registration: exact RAS <-> SimpleITK conversion, rigid recovery, slice-motion correction.

Inputs are built from nilearn's MNI152 template at 2 mm (shipped in the wheel), with a second
contrast derived from it (inverted and remapped, T2-like) so that only a multi-modal metric works.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import SimpleITK as sitk
from nilearn.datasets import load_mni152_brain_mask, load_mni152_template
from scipy import ndimage

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.preprocess.register import (
    CorrectSliceMotion,
    RegisterToReference,
    compose_slice_motion,
    from_sitk,
    rotation_angle_deg,
    to_sitk,
    transform_matrix_ras,
)
from mri_nerfstudio.volume import LPS_FROM_RAS, Volume


def t2_like(t1: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Inverted, non-linearly remapped contrast: white matter dark, CSF bright, background 0."""
    return np.where(brain, (1.05 - t1) ** 2, 0.0).astype(np.float32)


@pytest.fixture(scope="module")
def brain() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MNI152 T1 at 2 mm cropped to the brain: (t1 [76, 93, 80] float32, mask bool, affine RAS mm)."""
    template = load_mni152_template(resolution=2)
    t1 = np.asarray(template.dataobj, dtype=np.float32)[11:87, 12:105, :80]
    mask = np.asarray(load_mni152_brain_mask(resolution=2).dataobj)[11:87, 12:105, :80] > 0
    affine = template.affine @ np.array([[1, 0, 0, 11], [0, 1, 0, 12], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    return t1 * mask, mask, affine


def test_sitk_round_trip_is_exact() -> None:
    rng = np.random.default_rng(0)
    array = rng.random((5, 6, 7)).astype(np.float32)
    rotation = np.linalg.qr(rng.normal(size=(3, 3)))[0]  # an oblique orientation, possibly with a flip
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.9, 1.2, 3.0])
    affine[:3, 3] = [-80.0, 12.5, 40.0]

    image = to_sitk(array, affine)
    back, back_affine = from_sitk(image)

    np.testing.assert_array_equal(back, array)
    np.testing.assert_allclose(back_affine, affine, atol=1e-9)
    for index in [(0, 0, 0), (4, 5, 6), (1, 3, 2)]:
        lps = LPS_FROM_RAS @ affine @ np.array([*index, 1.0])
        np.testing.assert_allclose(image.TransformIndexToPhysicalPoint(index), lps[:3], atol=1e-9)
        assert image.GetPixel(*index) == array[index]


def test_to_sitk_rejects_sheared_affine() -> None:
    affine = np.eye(4)
    affine[0, 1] = 0.5
    with pytest.raises(MRIInputError, match="shear"):
        to_sitk(np.zeros((2, 2, 2), dtype=np.float32), affine)


def _misaligned_subject(brain) -> tuple[Volume, sitk.Euler3DTransform]:
    """T1 reference and a T2-like modality moved by a known 6 degree, 6 mm rigid transform."""
    t1, mask, affine = brain
    fixed = to_sitk(t1, affine)
    truth = sitk.Euler3DTransform()
    truth.SetCenter(fixed.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in fixed.GetSize()]))
    axis = np.array([0.8, 0.36, 0.48]) / np.linalg.norm([0.8, 0.36, 0.48])
    truth.SetMatrix(sitk.VersorTransform(axis.tolist(), np.radians(6.0)).GetMatrix())
    truth.SetTranslation((np.array([4.0, -3.0, 3.3]) * 6.0 / np.linalg.norm([4.0, -3.0, 3.3])).tolist())
    moved = sitk.Resample(to_sitk(t2_like(t1, mask), affine), fixed, truth, sitk.sitkLinear, 0.0)
    volume = Volume("mni", {"t1": t1, "t2": from_sitk(moved)[0]}, affine, affine, t1.shape, mask=mask)
    return volume, truth


@pytest.mark.parametrize(("transform", "initializer"), [("rigid", "geometry"), ("affine", "moments")])
def test_rigid_misalignment_is_recovered_within_1mm_and_half_degree(brain, transform, initializer) -> None:
    volume, truth = _misaligned_subject(brain)
    original = copy.deepcopy(volume)

    registered, record = RegisterToReference(transform=transform, initializer=initializer)(volume)

    fitted = record["estimates"]["t2"]["transform"]
    assert fitted["direction"].startswith("fixed") and fitted["type"] == transform
    # resampled(p) = moved(T(p)) = t2(truth(T(p))): truth o T must be the identity.
    residual = transform_matrix_ras(truth) @ np.asarray(fitted["matrix_ras"])
    points = np.c_[np.argwhere(volume.mask), np.ones(volume.mask.sum())] @ volume.affine.T
    displacement = np.linalg.norm(points @ residual.T - points, axis=1)
    assert displacement.max() < 1.0
    assert rotation_angle_deg(residual) < 0.5
    assert abs(fitted["rotation_deg"] - 6.0) < 0.5

    # The resampled image is as close to the clean contrast as resampling with the true inverse gives
    # (what remains is the blur of two linear interpolations).
    t1, mask, affine = brain
    clean = t2_like(t1, mask)
    ideal = sitk.Resample(to_sitk(volume.images["t2"], affine), to_sitk(t1, affine), truth.GetInverse())
    error_ideal = np.abs(from_sitk(ideal)[0] - clean)[mask].mean()
    error_after = np.abs(registered.images["t2"] - clean)[mask].mean()
    assert error_after < 1.05 * error_ideal < 0.5 * np.abs(volume.images["t2"] - clean)[mask].mean()
    np.testing.assert_array_equal(registered.images["t1"], volume.images["t1"])
    json.dumps(record, allow_nan=False)
    for modality in volume.images:
        np.testing.assert_array_equal(volume.images[modality], original.images[modality])


def test_pyramid_skips_levels_finer_than_2mm_and_samples_enough_voxels() -> None:
    brats = (240, 240, 155)
    levels = RegisterToReference(sampling_percentage=0.02, min_samples=20_000).pyramid(brats, (1.0, 1.0, 1.0), 0.15)
    assert [(shrink, sigma) for shrink, sigma, _ in levels] == [(4, 2.0), (2, 1.0)]
    # Brain voxels per level: 60 * 60 * 39 * 0.15 = 21060 and 120 * 120 * 78 * 0.15 = 168480.
    assert [fraction for _, _, fraction in levels] == pytest.approx([20_000 / 21_060, 20_000 / 168_480])
    assert len(RegisterToReference().pyramid(brats, (2.0, 2.0, 2.0), 0.15)) == 3
    assert len(RegisterToReference(finest_level_mm=None).pyramid(brats, (1.0, 1.0, 1.0), 0.15)) == 3
    assert len(RegisterToReference().pyramid(brats, (0.25, 0.25, 0.25), 0.15)) == 1  # the coarsest always runs


@pytest.mark.parametrize(
    ("spacing", "levels"),
    [
        ((1.0, 1.0, 6.5), [(1, 2.0), (1, 1.0)]),  # 4 and 2 mm levels: uniform factors would make 26 and 13 mm
        ((6.5, 1.0, 1.0), [(1, 2.0), (1, 1.0)]),  # sagittal stack: the same
        ((1.0, 1.0, 2.0), [(2, 2.0), (1, 1.0)]),
        ((1.0, 1.0, 1.2), [(3, 2.0), (2, 1.0)]),
        ((2.0, 2.0, 6.0), [(1, 2.0), (1, 1.0), (1, 0.0)]),
    ],
)
def test_pyramid_keeps_the_thick_axis_near_each_levels_voxel_size(spacing, levels) -> None:
    step = RegisterToReference()
    found = step.pyramid((240, 240, 24), spacing, 0.15)
    assert [(shrink, sigma) for shrink, sigma, _ in found] == levels
    finest, coarsest = min(spacing), max(spacing)
    intended = dict(zip(step.smoothing_sigmas_mm, step.shrink_factors))  # sigma -> level's shrink on 1 mm
    for shrink, sigma, fraction in found:
        level_mm = intended[sigma] * finest
        # No axis beyond the level's voxel size by more than half its own spacing, or its own spacing.
        assert shrink * coarsest <= max(level_mm + coarsest / 2, coarsest)
        assert 0.0 < fraction <= 1.0


def test_thick_sagittal_misalignment_is_recovered_within_1mm(brain) -> None:
    """Every third sagittal slice (6 x 2 x 2 mm) of the T1 and of the moved T2-like modality."""
    volume, truth = _misaligned_subject(brain)
    keep = (slice(1, None, 3), slice(None), slice(None))
    affine = volume.affine @ np.array([[3, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    images = {modality: array[keep] for modality, array in volume.images.items()}
    thick = Volume("mni", images, affine, affine, images["t1"].shape, mask=volume.mask[keep])
    assert thick.spacing == pytest.approx((6.0, 2.0, 2.0))

    _, record = RegisterToReference()(thick)

    estimates = record["estimates"]["t2"]
    assert estimates["shrink_factors_run"] == [1, 1, 1]
    assert max(max(voxel) for voxel in estimates["level_voxels_mm"]) == pytest.approx(6.0)
    residual = transform_matrix_ras(truth) @ np.asarray(estimates["transform"]["matrix_ras"])
    points = np.c_[np.argwhere(thick.mask), np.ones(thick.mask.sum())] @ affine.T
    assert np.linalg.norm(points @ residual.T - points, axis=1).max() < 1.0  # measured: 0.12 mm
    assert rotation_angle_deg(residual) < 0.5


def test_registration_rejects_bad_parameters() -> None:
    with pytest.raises(MRIInputError, match="transform"):
        RegisterToReference(transform="bspline")
    with pytest.raises(MRIInputError, match="seed"):
        RegisterToReference(seed=0)


@pytest.fixture(scope="module")
def thick_stack(brain) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every third axial slice (6 mm stack, slices 20 ... 77): (t1, mask, affine)."""
    t1, mask, affine = brain
    keep = slice(20, 80, 3)
    affine = affine @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 3, 20], [0, 0, 0, 1]], dtype=float)
    return t1[..., keep], mask[..., keep], affine


def _shift_slices(stack: np.ndarray, shifts_mm: np.ndarray, spacing_mm: float, order: int = 1) -> np.ndarray:
    """Move the content of slice k by ``shifts_mm[k]`` (mm along the two in-plane axes)."""
    return np.stack(
        [ndimage.shift(stack[..., k], shifts_mm[k] / spacing_mm, order=order) for k in range(stack.shape[-1])],
        axis=-1,
    )


def test_slice_motion_of_a_modality_is_removed(thick_stack) -> None:
    t1, mask, affine = thick_stack
    shifts = np.random.default_rng(1).uniform(-4.0, 4.0, size=(t1.shape[-1], 2))
    clean = t2_like(t1, mask)
    volume = Volume("mni", {"t1": t1, "t2": _shift_slices(clean, shifts, 2.0)}, affine, affine, t1.shape, mask=mask)

    corrected, record = CorrectSliceMotion(modality="t2")(volume)

    slices = record["estimates"]["t2"]
    fitted = np.array([s["shift_mm"] for s in slices])
    checked = ~np.array([s["skipped"] for s in slices])
    assert checked.sum() >= 0.8 * len(slices)
    # Applied: RMS ~3.3 mm per slice; bound: residual RMS below 0.5 mm and every slice within 1 mm.
    residual = np.linalg.norm(fitted[checked] - shifts[checked], axis=1)
    assert np.sqrt(np.mean(residual**2)) < 0.5
    assert residual.max() < 1.0
    assert max(abs(s["angle_deg"]) for s in slices) < 0.5
    error_before = np.abs(volume.images["t2"] - clean)[mask].mean()
    error_after = np.abs(corrected.images["t2"] - clean)[mask].mean()
    assert error_after < error_before / 3
    np.testing.assert_array_equal(corrected.images["t1"], t1)


def test_isolated_slice_motion_of_the_reference_is_removed(thick_stack) -> None:
    t1, mask, affine = thick_stack
    shifts = np.zeros((t1.shape[-1], 2))
    displaced = [5, 11, 16]
    shifts[displaced] = [[3.5, -2.5], [-3.0, -3.0], [2.0, 4.0]]
    seg = (t1 > 0.75).astype(np.int16)  # white matter as a stand-in label map
    volume = Volume(
        "mni",
        {"t1": _shift_slices(t1, shifts, 2.0), "t2": t2_like(t1, mask)},
        affine,
        affine,
        t1.shape,
        seg=_shift_slices(seg, shifts, 2.0, order=0),
        mask=_shift_slices(mask, shifts, 2.0, order=0),
    )

    corrected, record = CorrectSliceMotion(modality="t1")(volume)

    fitted = np.array([s["shift_mm"] for s in record["estimates"]["t1"]])
    residual = np.linalg.norm(fitted - shifts, axis=1)
    # Applied: 4.2 - 4.5 mm on three slices. Bound: those within 0.75 mm; neighbouring slices of a
    # 6 mm stack differ anatomically, so untouched slices may move, by at most 1.5 mm.
    assert residual[displaced].max() < 0.75
    assert residual.max() < 1.5
    assert np.sqrt(np.mean(residual**2)) < 0.4 * np.sqrt(np.mean(np.sum(shifts**2, axis=1)))

    def dice(a: np.ndarray, b: np.ndarray) -> float:
        return 2.0 * np.sum(a & b) / (np.sum(a) + np.sum(b))

    for k in displaced:
        before = dice(volume.seg[..., k] > 0, seg[..., k] > 0)
        assert dice(corrected.seg[..., k] > 0, seg[..., k] > 0) > before + 0.1
    assert corrected.seg.dtype == np.int16 and corrected.mask.dtype == bool


def test_slice_motion_axis_follows_the_slices() -> None:
    image = np.random.default_rng(2).random((5, 8, 8)).astype(np.float32)
    affine = np.diag([6.0, 1.0, 1.0, 1.0])  # sagittal slices; no brain voxel, so no slice is fitted
    volume = Volume("sagittal", {"t1": image}, affine, affine, image.shape, mask=np.zeros(image.shape, dtype=bool))

    _, record = CorrectSliceMotion()(volume)

    estimates = record["estimates"]
    assert estimates["thick_axis"] == {"index": 0, "direction": "R-L", "slices": "sagittal"}
    assert estimates["shift_axes"] == [1, 2] and len(estimates["t1"]) == 5
    assert CorrectSliceMotion(axis=2)(volume)[1]["estimates"]["shift_axes"] == [0, 1]


def test_compose_slice_motion_matches_sitk() -> None:
    centre = (30.0, 40.0)
    first, then = np.array([0.1, 2.0, -1.0]), np.array([-0.05, 0.5, 3.0])
    composed = sitk.CompositeTransform(2)
    for params in (first, then):  # a CompositeTransform applies its last transform first
        transform = sitk.Euler2DTransform()
        transform.SetCenter(centre)
        transform.SetParameters(params.tolist())
        composed.AddTransform(transform)
    result = sitk.Euler2DTransform()
    result.SetCenter(centre)
    result.SetParameters(compose_slice_motion(first, then, centre).tolist())
    for point in [(0.0, 0.0), (55.0, 12.0)]:
        np.testing.assert_allclose(result.TransformPoint(point), composed.TransformPoint(point), atol=1e-9)
