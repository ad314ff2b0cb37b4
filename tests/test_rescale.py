"""In-plane bicubic up-sampling and through-plane resampling: values, grids and world positions."""

from __future__ import annotations

import numpy as np
import pytest
from nilearn.datasets import load_mni152_brain_mask, load_mni152_template
from scipy import ndimage

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.preprocess.rescale import (
    ResampleThroughPlane,
    UpsampleInPlane,
    interpolate_axis,
    keys_kernel,
    upsample_bicubic,
)
from mri_nerfstudio.volume import Volume


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
    with pytest.raises(MRIInputError, match="target_spacing_mm"):
        ResampleThroughPlane(target_spacing_mm=0.0)
    with pytest.raises(MRIInputError, match="factor"):
        upsample_bicubic(np.zeros((2, 2, 2)), 1.5)
