"""Planes through volumes in scanner millimetres (slices.py) and ``mri-slices`` on a trained run."""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from mri_nerfstudio.cli.export import main as export_main
from mri_nerfstudio.cli.slices import field_on_plane
from mri_nerfstudio.cli.slices import main as slices_main
from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.grids import VoxelGrid
from mri_nerfstudio.nerf.field_sampling import prepared_subjects
from mri_nerfstudio.nerf.trained_run import load_mednerf_run
from mri_nerfstudio.slices import anatomical_plane, oblique_plane, plane_points, sample_volume_on_plane

SUBJECT = "BraTS2021_00000"
RAS_AFFINE = np.array([[2.0, 0, 0, -20.0], [0, 2.0, 0, -30.0], [0, 0, 4.0, -12.0], [0, 0, 0, 1]])
"""Voxel -> RAS mm of a 20 x 24 x 7 test grid: 2 mm in-plane, 4 mm slices."""


def _bounds(shape: tuple[int, int, int], affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return VoxelGrid(shape, affine).ras_bounds()


def test_an_axial_plane_at_z_samples_the_volumes_slice_at_z_in_any_storage_order():
    volume = np.random.default_rng(0).random((20, 24, 7)).astype(np.float32)
    k = 4
    z = float((RAS_AFFINE @ [0, 0, k, 1])[2])  # 4 mm
    plane = anatomical_plane("axial", z, _bounds(volume.shape, RAS_AFFINE), pixel_mm=2.0)
    assert plane.shape == (24, 20) and plane.label == "axial z=+4.0mm"
    # Radiological display: column j runs from the patient's right (x largest) to the left, row i from
    # anterior (y largest) to posterior.
    expected = volume[::-1, ::-1, k].T
    np.testing.assert_allclose(sample_volume_on_plane(volume, RAS_AFFINE, plane), expected, atol=1e-6)
    np.testing.assert_allclose(sample_volume_on_plane(volume, RAS_AFFINE, plane, order=0), expected)
    # The same voxels stored left-posterior-superior (x and y flipped on disk) give the same image.
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:2, 3] = [19, 23]
    stored_lps = volume[::-1, ::-1, :].copy()
    np.testing.assert_allclose(sample_volume_on_plane(stored_lps, RAS_AFFINE @ flip, plane), expected, atol=1e-6)


@pytest.mark.parametrize(("name", "axis"), [("axial", 2), ("coronal", 1), ("sagittal", 0)])
def test_anatomical_planes_lie_at_their_position_across_the_whole_volume(name, axis):
    bounds = _bounds((20, 24, 7), RAS_AFFINE)
    plane = anatomical_plane(name, 1.5, bounds, pixel_mm=1.0)
    points = plane_points(plane)
    np.testing.assert_allclose(points[..., axis], 1.5)
    for other in {0, 1, 2} - {axis}:  # the image spans the volume's extent along the two other axes
        assert points[..., other].min() == pytest.approx(bounds[0][other] + 0.5)  # half a pixel in
        assert points[..., other].max() == pytest.approx(bounds[1][other] - 0.5)
    assert plane.rows[2] <= 0 and (name != "axial" or plane.rows[1] < 0)  # superior (axial: anterior) on top


def test_an_oblique_plane_is_the_hand_computed_rotation_of_the_axial_plane():
    # Axial tilted 30 degrees about x: the normal leans anterior. Rodrigues about -x by 30 degrees leaves the
    # column axis (-1, 0, 0) and turns the row axis (0, -1, 0) to (0, -cos 30, sin 30).
    tilt = math.radians(30)
    normal = (0.0, math.sin(tilt), math.cos(tilt))
    plane = oblique_plane(normal, 5.0, _bounds((20, 24, 7), RAS_AFFINE), pixel_mm=1.0)
    np.testing.assert_allclose(plane.columns, [-1.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(plane.rows, [0.0, -math.cos(tilt), math.sin(tilt)], atol=1e-12)
    np.testing.assert_allclose(plane_points(plane) @ np.asarray(normal), 5.0)
    # The normal is normalised, and its sign only flips the offset: the axial plane again.
    axial = anatomical_plane("axial", 4.0, _bounds((20, 24, 7), RAS_AFFINE), pixel_mm=2.0)
    for flipped in (oblique_plane((0, 0, 3.0), 4.0, _bounds((20, 24, 7), RAS_AFFINE), 2.0),
                    oblique_plane((0, 0, -1.0), -4.0, _bounds((20, 24, 7), RAS_AFFINE), 2.0)):
        np.testing.assert_allclose(plane_points(flipped), plane_points(axial), atol=1e-9)


def test_a_tilted_plane_through_a_rotated_grid_reads_a_linear_volume_exactly():
    """Trilinear sampling reproduces a function linear in RAS mm wherever the plane is inside the grid."""
    angle = math.radians(20)
    rotation = np.array([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([1.5, 1.5, 3.0])
    affine[:3, 3] = [-10.0, -12.0, -15.0]
    index = np.stack(np.meshgrid(*[np.arange(n) for n in (16, 18, 11)], indexing="ij"), axis=-1)
    ras = index @ affine[:3, :3].T + affine[:3, 3]
    gradient = np.array([0.3, -0.2, 0.5])
    volume = (ras @ gradient + 7.0).astype(np.float32)
    plane = oblique_plane((0.2, -0.3, 0.9), 0.0, _bounds(volume.shape, affine), pixel_mm=1.0)
    sampled = sample_volume_on_plane(volume, affine, plane)
    points = plane_points(plane)
    voxels = points @ np.linalg.inv(affine)[:3, :3].T + np.linalg.inv(affine)[:3, 3]
    inside = ((voxels >= 0) & (voxels <= np.array(volume.shape) - 1)).all(axis=-1)
    assert inside.sum() > 100
    np.testing.assert_allclose(sampled[inside], points[inside] @ gradient + 7.0, atol=1e-3)
    assert (sampled[~(((voxels >= -1) & (voxels <= np.array(volume.shape))).all(axis=-1))] == 0).all()


def test_bad_planes_are_refused():
    bounds = _bounds((20, 24, 7), RAS_AFFINE)
    with pytest.raises(MRIInputError, match="misses the volume: along the normal .* spans -14.0 to \\+14.0 mm"):
        anatomical_plane("axial", 40.0, bounds, 1.0)
    with pytest.raises(MRIInputError, match="--plane must be one of"):
        anatomical_plane("transverse", 0.0, bounds, 1.0)
    with pytest.raises(MRIInputError, match="--normal must be three finite numbers"):
        oblique_plane((0.0, 0.0, 0.0), 0.0, bounds, 1.0)
    with pytest.raises(MRIInputError, match="--pixel-mm must be a positive"):
        anatomical_plane("axial", 0.0, bounds, 0.0)


def _voxel_centre_z(image: nib.Nifti1Image) -> float:
    """z (RAS mm) of the middle voxel slice across z of an axis-aligned NIfTI (whichever array axis runs along z)."""
    axis = int(np.argmax(np.abs(image.affine[2, :3])))
    index = [0, 0, 0]
    index[axis] = image.shape[axis] // 2
    return float((image.affine @ [*index, 1])[2])


def test_field_planes_agree_with_the_exported_nifti(trained_phantom_run, tmp_path):
    export_main(["--load-config", str(trained_phantom_run), "--out", str(tmp_path), "--no-meshes"])
    exported = nib.load(tmp_path / SUBJECT / "reconstruction.nii.gz")
    run = load_mednerf_run(trained_phantom_run)
    prepared = prepared_subjects(run.pipeline)[0]
    bounds = VoxelGrid(exported.shape, exported.affine).ras_bounds()
    # A plane through voxel centres: its pixels are the NIfTI's voxels, so the two agree to float precision.
    axial = anatomical_plane("axial", _voxel_centre_z(exported), bounds, pixel_mm=4.0)
    from_nifti = sample_volume_on_plane(np.asarray(exported.dataobj), exported.affine, axial)
    from_field = field_on_plane(run.model, prepared, 0, axial)
    assert from_field.max() > 0.3  # the plane crosses the brain
    np.testing.assert_allclose(from_field, from_nifti, atol=1e-5)
    # Between voxel centres (an oblique plane, finer pixels) the NIfTI is the field interpolated.
    oblique = oblique_plane((0.2, 0.3, 1.0), 0.0, bounds, pixel_mm=2.0)
    difference = field_on_plane(run.model, prepared, 0, oblique) - sample_volume_on_plane(
        np.asarray(exported.dataobj), exported.affine, oblique
    )
    assert np.abs(difference).mean() < 0.01  # 0.002 measured


def test_mri_slices_writes_montages_and_plane_scores(trained_phantom_run, tmp_path):
    slices_main(["--load-config", str(trained_phantom_run), "--out", str(tmp_path), "--plane", "coronal"])
    summary = json.loads((tmp_path / SUBJECT / "slices.json").read_text())
    assert [plane["label"][:8] for plane in summary["planes"]] == ["coronal "] * 3  # through the brain by default
    middle = summary["planes"][1]
    assert middle["normal"] == [0.0, 1.0, 0.0] and middle["mask_pixels"] > 500 and middle["psnr"] > 10.0
    assert summary["uncertainty"] == "blend term of the field" and 0.0 < middle["mean_uncertainty"] < 0.16
    montage = Image.open(tmp_path / SUBJECT / "slices.png")
    assert montage.size == (1200, 3 * 300)  # a 300 px row of field, input, difference and uncertainty per plane

    # Two oblique planes near the middle coronal plane's centre (the phantom's RAS origin is off the brain).
    normal = np.array([0.0, 0.5, 0.87])
    offset = round(float(np.dot(normal / np.linalg.norm(normal), middle["centre_ras_mm"])))
    slices_main(["--load-config", str(trained_phantom_run), "--out", str(tmp_path / "oblique"), "--plane", "oblique",
                 "--normal", "0", "0.5", "0.87", "--offset-mm", str(offset - 4), str(offset + 8)])
    oblique = json.loads((tmp_path / "oblique" / SUBJECT / "slices.json").read_text())["planes"]
    assert [plane["offset_mm"] for plane in oblique] == [offset - 4, offset + 8]
    assert all(plane["mask_pixels"] > 100 for plane in oblique)
    assert np.linalg.norm(oblique[0]["normal"]) == pytest.approx(1.0)
    assert Image.open(tmp_path / "oblique" / SUBJECT / "slices.png").size == (1200, 2 * 300)


def test_mri_slices_shows_the_exported_uncertainty_map(trained_phantom_run, tmp_path):
    export_main(["--load-config", str(trained_phantom_run), "--out", str(tmp_path / "export"), "--no-meshes"])
    image = nib.load(tmp_path / "export" / SUBJECT / "uncertainty.nii.gz")
    doubled = nib.Nifti1Image(2.0 * np.asarray(image.dataobj), image.affine)  # unlike the blend term computed here
    nib.save(doubled, tmp_path / "export" / SUBJECT / "uncertainty.nii.gz")
    arguments = ["--load-config", str(trained_phantom_run), "--plane", "coronal"]
    slices_main([*arguments, "--out", str(tmp_path / "computed")])
    slices_main([*arguments, "--out", str(tmp_path / "shown"), "--uncertainty", str(tmp_path / "export")])
    summary = json.loads((tmp_path / "shown" / SUBJECT / "slices.json").read_text())
    assert summary["uncertainty"] == str(tmp_path / "export" / SUBJECT)
    plane, blend = summary["planes"][1], json.loads((tmp_path / "computed" / SUBJECT / "slices.json").read_text())
    assert plane["mean_uncertainty"] == pytest.approx(2 * blend["planes"][1]["mean_uncertainty"], rel=0.05)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--plane", "diagonal"], "--plane must be one of axial, coronal, sagittal, oblique; got 'diagonal'"),
        (["--plane", "oblique"], "--plane oblique needs --normal X Y Z"),
        (["--plane", "oblique", "--normal", "0", "0", "0"], "--normal must be three finite numbers"),
        (["--plane", "axial", "--normal", "0", "0", "1"], "use --plane oblique, not axial"),
        (["--plane", "oblique", "--normal", "0", "0", "1", "--positions", "3"], "takes --offset-mm"),
        (["--plane", "sagittal", "--positions", "900"], "plane sagittal x=+900.0mm misses the volume"),
        (["--subject", "BraTS2021_99999"], "is not in this run; its subjects: BraTS2021_00000"),
        (["--uncertainty", "/nonexistent"], "no uncertainty.nii.gz for BraTS2021_00000"),
    ],
)
def test_mri_slices_bad_arguments_give_one_line_errors(trained_phantom_run, tmp_path, capsys, arguments, message):
    with pytest.raises(SystemExit) as exit_info:
        slices_main(["--load-config", str(trained_phantom_run), "--out", str(tmp_path / "out"), *arguments])
    assert exit_info.value.code == 2
    printed = capsys.readouterr().err
    assert "Traceback" not in printed
    last = printed.strip().splitlines()[-1]  # after one line per warning (e.g. torch's DataLoader)
    assert last.startswith("error: ") and message in last
    assert not (tmp_path / "out").exists()
