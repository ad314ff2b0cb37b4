"""In-plane bicubic up-sampling and through-plane resampling: values, grids and world positions."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from nilearn.datasets import load_mni152_brain_mask, load_mni152_template
from scipy import ndimage

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.preprocess.rescale import (
    ResampleAnisotropic,
    ResampleThroughPlane,
    UpsampleInPlane,
    interpolate_axis,
    keys_kernel,
    thick_axis,
    upsample_bicubic,
)
from mri_nerfstudio.volume import Volume, load_subject


@pytest.fixture(scope="module")
def brain() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MNI152 T1 at 2 mm, 30 axial slices, even in-plane size: (t1 [98, 116, 30], mask, affine)."""
    template = load_mni152_template(resolution=2)
    t1 = np.asarray(template.dataobj, dtype=np.float32)[:98, :116, 30:60]
    mask = np.asarray(load_mni152_brain_mask(resolution=2).dataobj)[:98, :116, 30:60] > 0
    affine = template.affine @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 30], [0, 0, 0, 1]], dtype=float)
    return t1, mask, affine


def _world(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """[X, Y, Z, 3] RAS mm of every voxel centre."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    return index @ affine[:3, :3].T + affine[:3, 3]


def _centre_of_mass_mm(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return affine[:3, :3] @ np.asarray(ndimage.center_of_mass(array)) + affine[:3, 3]


def test_bicubic_is_the_4x4_cubic_convolution_with_replicated_edges() -> None:
    array = np.random.default_rng(0).random((5, 4, 2)).astype(np.float32)
    factor = 3
    result = upsample_bicubic(array, factor)

    expected = np.zeros_like(result)
    for i in range(result.shape[0]):
        for j in range(result.shape[1]):
            u, v = (i + 0.5) / factor - 0.5, (j + 0.5) / factor - 0.5
            for a in range(int(np.floor(u)) - 1, int(np.floor(u)) + 3):
                for b in range(int(np.floor(v)) - 1, int(np.floor(v)) + 3):
                    neighbour = array[min(max(a, 0), 4), min(max(b, 0), 3)]
                    expected[i, j] += keys_kernel(u - a) * keys_kernel(v - b) * neighbour
    assert result.shape == (15, 12, 2) and result.dtype == np.float32
    np.testing.assert_allclose(result, expected, atol=1e-6)  # float32 rounding of values in [0, 1]


def test_keys_kernel_reproduces_quadratics_and_constants() -> None:
    def quadratic(x, y):
        return 0.3 * x**2 - 2.0 * x * y + y + 1.0

    samples = np.fromfunction(lambda i, j, k: quadratic(i, j), (12, 12, 1))
    coordinate = (np.arange(24) + 0.5) / 2 - 0.5
    expected = quadratic(coordinate[:, None, None], coordinate[None, :, None])
    # Exact away from the replicated edges (a = -0.5 is third-order accurate); float32 values <= 300.
    np.testing.assert_allclose(upsample_bicubic(samples, 2)[4:-4, 4:-4], expected[4:-4, 4:-4], atol=1e-4)
    np.testing.assert_allclose(upsample_bicubic(np.full((3, 3, 2), 7.0), 4), 7.0, rtol=1e-6)


def test_bicubic_beats_linear_and_nearest_inside_the_brain(brain) -> None:
    t1, mask, _ = brain
    low = t1.reshape(49, 2, 58, 2, -1).mean(axis=(1, 3))  # 4 mm in-plane, block mean

    def psnr(estimate: np.ndarray) -> float:
        return float(10 * np.log10(1.0 / np.mean((estimate[mask] - t1[mask]) ** 2)))

    nearest = psnr(np.repeat(np.repeat(low, 2, axis=0), 2, axis=1))
    linear = psnr(ndimage.zoom(low, (2, 2, 1), order=1, grid_mode=True, mode="nearest"))  # same pixel-centred grid
    bicubic = psnr(upsample_bicubic(low, 2))
    assert bicubic > linear + 0.5 > nearest + 1.0


def test_upsample_step_keeps_world_positions(brain) -> None:
    t1, mask, affine = brain
    seg = (t1 > 0.7).astype(np.int16)
    volume = Volume("mni", {"t1": t1}, affine, affine, t1.shape, seg=seg, mask=mask)

    result, record = UpsampleInPlane(factor=2)(volume)

    assert result.shape == (196, 232, 30) and result.spacing == (1.0, 1.0, 2.0)
    assert record["after"]["spacing_mm"] == [1.0, 1.0, 2.0]
    assert result.seg.dtype == np.int16 and result.mask.dtype == bool and result.mask.shape == result.shape
    # A function of world position survives up-sampling exactly where the kernel sees no edge.
    ramp_image = (_world(affine, t1.shape) @ [1.0, 2.0, 0.5]).astype(np.float32)
    ramp = Volume("ramp", {"t1": ramp_image}, affine, affine, t1.shape)
    ramped, _ = UpsampleInPlane(factor=2)(ramp)
    expected = _world(ramped.affine, ramped.shape) @ [1.0, 2.0, 0.5]
    np.testing.assert_allclose(ramped.images["t1"][4:-4, 4:-4], expected[4:-4, 4:-4], atol=1e-3)
    # Landmark: the brain's centre of mass stays within half a (new) voxel.
    shift = _centre_of_mass_mm(result.images["t1"], result.affine) - _centre_of_mass_mm(t1, affine)
    assert np.all(np.abs(shift) < 0.5 * np.asarray(result.spacing))
    np.testing.assert_array_equal(volume.images["t1"], t1)


@pytest.mark.parametrize("order", ["cubic", "linear"])
def test_through_plane_resampling_keeps_world_positions(brain, order) -> None:
    t1, mask, affine = brain
    thick_affine = affine @ np.diag([1.0, 1.0, 3.0, 1.0])  # every third slice: a 6 mm stack
    thick = Volume("mni", {"t1": t1[..., ::3]}, thick_affine, thick_affine, t1[..., ::3].shape, mask=mask[..., ::3])

    result, record = ResampleThroughPlane(target_spacing_mm=2.0, order=order)(thick)

    assert result.shape == (98, 116, 30) and result.spacing == pytest.approx((2.0, 2.0, 2.0))
    assert record["estimates"]["slices_after"] == 30
    # Same physical extent for an integer ratio: the first slab starts where the thick one did.
    np.testing.assert_allclose(result.affine @ [0, 0, -0.5, 1], thick_affine @ [0, 0, -0.5, 1], atol=1e-9)
    ramp_image = _world(thick_affine, thick.shape)[..., 2].astype(np.float32)
    ramp = Volume("ramp", {"t1": ramp_image}, thick_affine, thick_affine, thick.shape)
    ramped, _ = ResampleThroughPlane(target_spacing_mm=2.0, order=order)(ramp)
    expected = _world(ramped.affine, ramped.shape)[..., 2]
    np.testing.assert_allclose(ramped.images["t1"][..., 6:-6], expected[..., 6:-6], atol=1e-3)
    shift = _centre_of_mass_mm(result.images["t1"], result.affine) - _centre_of_mass_mm(t1[..., ::3], thick_affine)
    assert np.all(np.abs(shift) < 0.5 * np.asarray(result.spacing))


def test_through_plane_resampling_of_any_spacing_keeps_the_centre(brain) -> None:
    t1, _, affine = brain
    volume = Volume("mni", {"t1": t1}, affine, affine, t1.shape)
    result, _ = ResampleThroughPlane(target_spacing_mm=3.5, axis=2)(volume)
    assert result.shape[2] == round(30 * 2.0 / 3.5) and result.spacing[2] == pytest.approx(3.5)
    centre_before = affine @ [0, 0, (30 - 1) / 2, 1]
    centre_after = result.affine @ [0, 0, (result.shape[2] - 1) / 2, 1]
    np.testing.assert_allclose(centre_after, centre_before, atol=1e-9)


def test_nearest_interpolation_keeps_labels() -> None:
    labels = np.array([0, 1, 2, 4], dtype=np.int16)[:, None, None]
    result = interpolate_axis(labels, np.array([-0.4, 0.6, 1.4, 2.5, 3.9]), 0, "nearest")
    np.testing.assert_array_equal(result[:, 0, 0], [0, 1, 1, 4, 4])  # index floor(u + 0.5), clipped
    assert result.dtype == np.int16


def test_bad_parameters_raise_input_errors() -> None:
    with pytest.raises(MRIInputError, match="factor"):
        UpsampleInPlane(factor=0)
    with pytest.raises(MRIInputError, match="axes"):
        UpsampleInPlane(axes=(0, 3))
    with pytest.raises(MRIInputError, match="target_spacing_mm"):
        ResampleThroughPlane(target_spacing_mm=0.0)
    with pytest.raises(MRIInputError, match="axis"):
        ResampleThroughPlane(axis=3)
    with pytest.raises(MRIInputError, match="factor"):
        upsample_bicubic(np.zeros((2, 2, 2)), 1.5)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"target_spacing_mm": 0.0}, "target_spacing_mm"),
        ({"target_spacing_mm": -1.0}, "target_spacing_mm"),
        ({"target_spacing_mm": float("nan")}, "target_spacing_mm"),
        ({"min_ratio": 0.5}, "min_ratio"),
        ({"min_ratio": float("inf")}, "min_ratio"),
    ],
)
def test_bad_anisotropic_parameters_raise_input_errors(params, field) -> None:
    with pytest.raises(MRIInputError, match=field):
        ResampleAnisotropic(**params)


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (1.0, 0.0, 1.0), (1.0, float("nan"), 1.0)])
def test_bad_spacing_raises_input_error(spacing) -> None:
    with pytest.raises(MRIInputError, match="spacing_mm"):
        thick_axis(spacing)


# --- Thick slices along any axis ---------------------------------------------------------------

ORIENTATIONS = {0: ("R-L", "sagittal"), 1: ("A-P", "coronal"), 2: ("S-I", "axial")}


@pytest.mark.parametrize(
    ("spacing", "axis", "ratio"),
    [
        ((1.0, 1.0, 5.0), 2, 5.0),  # axial
        ((0.5, 0.5, 6.5), 2, 13.0),
        ((4.0, 1.0, 1.0), 0, 4.0),  # sagittal
        ((0.9, 6.0, 0.9), 1, 6.0 / 0.9),  # coronal
        ((2.0, 2.0, 2.0), 2, 1.0),  # isotropic: the axial convention
        ((3.0, 3.0, 1.0), 1, 3.0),  # equal largest spacings: the last
        ((1.0, 1.0 + 1e-6, 1.0), 2, 1.0),  # equal within rounding of the affine
    ],
)
def test_thick_axis_is_the_largest_spacing(spacing, axis, ratio) -> None:
    found_axis, found_ratio = thick_axis(spacing)
    assert found_axis == axis and found_ratio == pytest.approx(ratio, rel=1e-5)


def _smooth(world: np.ndarray) -> np.ndarray:
    """A smooth positive function of RAS mm [..., 3] (features of 10 - 30 mm)."""
    x, y, z = np.moveaxis(world, -1, 0)
    waves = np.sin(2 * np.pi * x / 18 + 0.3) * np.cos(2 * np.pi * y / 30) + 0.5 * np.sin(2 * np.pi * z / 24 + x / 15)
    return (2.0 + waves).astype(np.float32)


def _thick_volume(axis: int, slab: int = 4) -> tuple[Volume, np.ndarray, np.ndarray]:
    """Slices of ``slab`` mm along ``axis``: the mean of groups of ``slab`` voxels of a 1 mm grid.

    Returns:
        (thick volume with a label map, the fine 1 mm values [X, Y, Z], the fine grid's affine).
    """
    fine_shape = [16, 16, 16]
    fine_shape[axis] = 12 * slab
    fine_affine = np.eye(4)
    fine_affine[:3, 3] = [-20.5, 10.0, 3.0]
    fine = _smooth(_world(fine_affine, tuple(fine_shape)))
    grouped = fine.reshape(fine_shape[:axis] + [12, slab] + fine_shape[axis + 1 :])
    thick = grouped.mean(axis=axis + 1)
    index_map = np.eye(4)  # thick voxel index -> fine voxel index: the centre of its group
    index_map[axis, axis] = slab
    index_map[axis, 3] = (slab - 1) / 2
    affine = fine_affine @ index_map
    seg = (thick > 2.0).astype(np.int16)
    return Volume("thick", {"t1": thick}, affine, affine, thick.shape, seg=seg), fine, fine_affine


@pytest.mark.parametrize("axis", [0, 1, 2], ids=["sagittal", "coronal", "axial"])
def test_thick_slices_are_resampled_along_their_own_axis(axis) -> None:
    thick, fine, fine_affine = _thick_volume(axis)

    result, record = ResampleAnisotropic()(thick)

    estimates = record["estimates"]
    direction, slices = ORIENTATIONS[axis]
    assert estimates["thick_axis"] == {"index": axis, "direction": direction, "slices": slices}
    assert estimates["resampled"] and estimates["ratio"] == pytest.approx(4.0)
    assert estimates["in_plane_factors"] == [1, 1]
    assert (estimates["slices_before"], estimates["slices_after"]) == (12, 48)
    assert result.shape == fine.shape and result.spacing == pytest.approx((1.0, 1.0, 1.0))
    assert estimates["spacing_after_mm"] == pytest.approx([1.0, 1.0, 1.0])
    # The new voxel centres are those of the 1 mm grid the slabs were made from: same centre, same extent.
    np.testing.assert_allclose(result.affine, fine_affine, atol=1e-9)

    def centre_and_corners(volume: Volume) -> np.ndarray:
        """[3, 4] RAS mm of the grid's centre and of the outer corners of its first and last voxels."""
        n = np.array(volume.shape)
        return np.c_[np.array([(n - 1) / 2, np.full(3, -0.5), n - 0.5]), np.ones(3)] @ volume.affine.T

    np.testing.assert_allclose(centre_and_corners(result), centre_and_corners(thick), atol=1e-9)

    # Cubic interpolation of the slabs is closer to the fine values than repeating each slab
    # (measured: 0.3 - 0.5 times the error) or than linear interpolation.
    def rms(estimate: np.ndarray) -> float:
        return float(np.sqrt(np.mean((estimate - fine) ** 2)))

    zoom = [4 if i == axis else 1 for i in range(3)]
    linear = ndimage.zoom(thick.images["t1"], zoom, order=1, grid_mode=True, mode="nearest")
    assert rms(result.images["t1"]) < min(0.6 * rms(np.repeat(thick.images["t1"], 4, axis=axis)), rms(linear))
    # The label map follows by nearest neighbour (each slab's labels, repeated); a volume without a mask keeps
    # none, so the brain-mask step after resampling derives it on the new grid.
    assert result.seg.dtype == np.int16 and result.mask is None
    np.testing.assert_array_equal(result.seg, np.repeat(thick.seg, 4, axis=axis))


def test_sagittal_stack_read_from_a_non_ras_file_is_resampled_along_r(tmp_path) -> None:
    thick, fine, fine_affine = _thick_volume(axis=0)
    # Stored as a sagittal acquisition often is: file axes P, I, L (slices last in the file).
    ras_to_file = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt(("R", "A", "S")), nib.orientations.axcodes2ornt(("P", "I", "L"))
    )
    data = nib.orientations.apply_orientation(thick.images["t1"], ras_to_file)
    file_affine = thick.affine @ nib.orientations.inv_ornt_aff(ras_to_file, thick.shape)
    path = tmp_path / "sagittal_t1.nii.gz"
    nib.save(nib.Nifti1Image(data, file_affine), path)
    assert nib.load(path).header.get_zooms() == pytest.approx((1.0, 1.0, 4.0))

    loaded = load_subject(path)
    assert loaded.spacing == pytest.approx((4.0, 1.0, 1.0))
    result, record = ResampleAnisotropic()(loaded)

    assert record["estimates"]["thick_axis"]["index"] == 0
    assert result.shape == fine.shape
    np.testing.assert_allclose(result.affine, fine_affine, atol=1e-5)
    expected, _ = ResampleAnisotropic()(thick.replace(seg=None))
    np.testing.assert_allclose(result.images["t1"], expected.images["t1"], atol=1e-5)


def test_derived_axes_of_the_explicit_steps_follow_the_slices() -> None:
    sagittal, _, _ = _thick_volume(axis=0)
    upsampled, record = UpsampleInPlane(factor=2)(sagittal)
    assert upsampled.shape == (12, 32, 32) and upsampled.spacing == pytest.approx((4.0, 0.5, 0.5))
    assert record["estimates"]["axes"] == [1, 2] and record["estimates"]["thick_axis"]["index"] == 0
    assert record["params"]["axes"] is None

    coronal, _, _ = _thick_volume(axis=1)
    resampled, record = ResampleThroughPlane(target_spacing_mm=2.0)(coronal)
    assert resampled.shape == (16, 24, 16) and resampled.spacing == pytest.approx((1.0, 2.0, 1.0))
    assert record["estimates"]["thick_axis"] == {"index": 1, "direction": "A-P", "slices": "coronal"}

    explicit, record = UpsampleInPlane(factor=2, axes=(0, 1))(sagittal)  # explicit axes still win
    assert explicit.shape == (24, 32, 16) and record["estimates"]["thick_axis"]["index"] == 2


@pytest.mark.parametrize(
    ("spacing", "factors", "spacing_after"),
    [
        ((2.0, 3.0, 8.0), [2, 3], (1.0, 1.0, 1.0)),  # each in-plane axis its own factor
        ((0.5, 0.5, 6.5), [1, 1], (0.5, 0.5, 1.0)),  # finer than the target: left alone
        ((1.5, 1.5, 5.0), [2, 2], (0.75, 0.75, 1.0)),  # factors round half up
        ((5.0, 0.9, 0.9), [1, 1], (1.0, 0.9, 0.9)),  # sagittal
    ],
)
def test_anisotropic_resampling_factors_and_grid(spacing, factors, spacing_after) -> None:
    shape = (4, 5, 6)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [10.0, -4.0, 7.5]
    image = np.random.default_rng(0).random(shape).astype(np.float32) + 1.0
    volume = Volume("grid", {"t1": image}, affine, affine, shape)

    result, record = ResampleAnisotropic(target_spacing_mm=1.0)(volume)

    axis, _ = thick_axis(spacing)
    in_plane = [i for i in range(3) if i != axis]
    assert record["estimates"]["in_plane_axes"] == in_plane
    assert record["estimates"]["in_plane_factors"] == factors
    expected_shape = list(shape)
    for i, factor in zip(in_plane, factors):
        expected_shape[i] *= factor
    expected_shape[axis] = round(shape[axis] * spacing[axis] / 1.0)
    assert list(result.shape) == expected_shape and result.mask is None
    assert result.spacing == pytest.approx(spacing_after)
    centre = (np.array(shape) - 1) / 2
    np.testing.assert_allclose(
        result.affine @ [*((np.array(result.shape) - 1) / 2), 1], affine @ [*centre, 1], atol=1e-9
    )


@pytest.mark.parametrize(
    ("spacing", "reason"),
    [((1.0, 1.0, 1.0), "ratio 1.00"), ((1.0, 1.0, 2.0), "ratio 2.00"), ((0.3, 0.3, 0.8), "at most 1 mm")],
)
def test_grid_below_the_ratio_or_the_target_passes_unchanged(spacing, reason) -> None:
    affine = np.diag([*spacing, 1.0])
    image = np.random.default_rng(1).random((4, 5, 6)).astype(np.float32) + 1.0
    volume = Volume("grid", {"t1": image}, affine, affine, image.shape)
    step = ResampleAnisotropic()

    result, record = step(volume)

    assert result is volume
    estimates = record["estimates"]
    assert not estimates["resampled"] and estimates["thick_axis"]["index"] == 2
    assert estimates["spacing_before_mm"] == estimates["spacing_after_mm"] == pytest.approx(list(spacing))
    assert estimates["slices_before"] == estimates["slices_after"] == 6
    assert estimates["in_plane_factors"] == [1, 1]
    assert reason in step.describe(estimates)
