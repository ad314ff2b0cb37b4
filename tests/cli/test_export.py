"""mri-export: a trained phantom run back on the input's scanner grid (NIfTI round trip), meshes, bad input."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import trimesh
import yaml

from mri_nerfstudio.cli.export import main as export_main
from mri_nerfstudio.grids import VoxelGrid, brain_level
from mri_nerfstudio.metrics import volume_fidelity
from mri_nerfstudio.nerf.field_sampling import prepared_subjects, reconstruct_in_mask
from mri_nerfstudio.nerf.trained_run import load_mednerf_run
from mri_nerfstudio.uncertainty import blend_spread

SUBJECT = "BraTS2021_00000"


@pytest.fixture(scope="module")
def exported(trained_phantom_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export")
    export_main(["--load-config", str(trained_phantom_run), "--out", str(out)])
    return out / SUBJECT


def test_export_round_trip_on_the_scanner_grid(exported, trained_phantom_run, phantom_subject_dir):
    stored = nib.load(phantom_subject_dir / f"{SUBJECT}_t1.nii.gz")
    image = nib.load(exported / "reconstruction.nii.gz")
    assert image.shape == stored.shape
    assert np.allclose(image.affine, stored.affine) and nib.aff2axcodes(image.affine) == nib.aff2axcodes(stored.affine)
    assert int(image.header["sform_code"]) == int(image.header["qform_code"]) == 1
    exported_volume = np.asarray(image.dataobj)

    # The exported voxels are the field at the preprocessed (canonical) voxels, flipped back to the file's axes.
    run = load_mednerf_run(trained_phantom_run)
    prepared = prepared_subjects(run.pipeline)[0]
    volume = prepared.volume
    mask = volume.brain_mask()
    in_mask = reconstruct_in_mask(run.model, prepared, 0)
    assert np.allclose(np.where(volume.to_scanner_space(mask), exported_volume, 0), volume.to_scanner_space(in_mask),
                       atol=1e-5)

    # Volume PSNR against the input, in the input's own orientation, beside the best constant estimate (the mean
    # intensity inside the mask; equalised intensities are near uniform: 10.7 dB, SSIM 0.26). 200 CPU steps land
    # between 11.6 and 12.4 dB, SSIM 0.49 to 0.54, depending on the machine and the worker timing.
    reference, mask_scanner = volume.to_scanner_space(volume.images["t1"]), volume.to_scanner_space(mask)
    scores = volume_fidelity(exported_volume, reference, mask_scanner)
    constant = volume_fidelity(np.full_like(reference, reference[mask_scanner].mean()), reference, mask_scanner)
    summary = json.loads((exported / "export.json").read_text())
    assert summary["volume_psnr"] == pytest.approx(scores["volume_psnr"], abs=1e-6)
    assert scores["volume_psnr"] > constant["volume_psnr"] + 0.5
    assert scores["volume_ssim"] > constant["volume_ssim"] + 0.15


def test_exported_meshes_lie_inside_the_input_volume(exported, phantom_subject_dir):
    summary = json.loads((exported / "export.json").read_text())
    assert set(summary["meshes"]) >= {"brain", "tumour"}
    assert 0.0 < summary["brain_level"] < 1.0 and summary["brain_dice"] > 0.8
    # The level is read from the reconstruction alone (the exported volume), the mask only scores it.
    estimate = np.asarray(nib.load(exported / "reconstruction.nii.gz").dataobj)
    assert summary["brain_level"] == brain_level(estimate)
    stored = nib.load(phantom_subject_dir / f"{SUBJECT}_t1.nii.gz")
    lower, upper = VoxelGrid(stored.shape, stored.affine).ras_bounds()
    for name, files in summary["meshes"].items():
        assert files == [f"{name}.ply", f"{name}.stl"]
        for file in files:
            mesh = trimesh.load(exported / file)
            assert len(mesh.faces) > 100, file
            assert (mesh.bounds[0] >= lower - 1e-3).all() and (mesh.bounds[1] <= upper + 1e-3).all(), file
    brain, tumour = trimesh.load(exported / "brain.ply"), trimesh.load(exported / "tumour.ply")
    assert brain.volume > tumour.volume > 0
    assert brain.contains(tumour.vertices[::10]).mean() > 0.9  # the tumour sits in the brain


def test_isotropic_export_is_finer_with_the_same_orientation(trained_phantom_run, phantom_subject_dir, tmp_path):
    export_main(["--load-config", str(trained_phantom_run), "--out", str(tmp_path), "--subject", SUBJECT,
                 "--grid", "isotropic", "--spacing-mm", "2", "--no-meshes"])
    stored = nib.load(phantom_subject_dir / f"{SUBJECT}_t1.nii.gz")
    image = nib.load(tmp_path / SUBJECT / "reconstruction.nii.gz")
    assert image.shape == tuple(2 * s for s in stored.shape)
    assert np.allclose(image.header.get_zooms(), 2.0) and nib.aff2axcodes(image.affine) == nib.aff2axcodes(stored.affine)
    summary = json.loads((tmp_path / SUBJECT / "export.json").read_text())
    assert summary["meshes"] == {} and summary["volume_psnr"] > 10.0


def test_the_uncertainty_map_lies_beside_the_reconstruction_on_its_grid(exported):
    volume = nib.load(exported / "reconstruction.nii.gz")
    image = nib.load(exported / "uncertainty.nii.gz")
    assert image.shape == volume.shape and np.allclose(image.affine, volume.affine)
    # Without an ensemble, the blend term of the exported estimate: 0 where it is black, largest between tissues.
    np.testing.assert_allclose(np.asarray(image.dataobj), blend_spread(np.asarray(volume.dataobj)), atol=1e-6)
    summary = json.loads((exported / "export.json").read_text())["uncertainty"]
    assert summary["file"] == "uncertainty.nii.gz" and summary["terms"] == ["blend"] and summary["members"] == []
    assert -1.0 <= summary["spearman"] <= 1.0 and len(summary["deciles"]) == 10


def test_an_ensemble_of_short_fits_adds_its_spread_to_the_uncertainty(trained_phantom_run, tmp_path, capsys):
    export_main(["--load-config", str(trained_phantom_run), "--out", str(tmp_path), "--no-meshes",
                 "--uncertainty-members", "2", "--uncertainty-steps", "30"])
    assert "uncertainty.nii.gz (blend + ensemble) ranks the error" in capsys.readouterr().out
    estimate = np.asarray(nib.load(tmp_path / SUBJECT / "reconstruction.nii.gz").dataobj)
    uncertainty = np.asarray(nib.load(tmp_path / SUBJECT / "uncertainty.nii.gz").dataobj)
    blend = blend_spread(estimate)
    assert (uncertainty >= blend - 1e-6).all() and (uncertainty - blend).max() > 0.05  # the variances add
    summary = json.loads((tmp_path / SUBJECT / "export.json").read_text())["uncertainty"]
    assert summary["terms"] == ["blend", "ensemble"]
    members = summary["members"]
    assert [member["seed"] for member in members] == [1, 2] and all(m["steps"] == 30 for m in members)
    training_views = set(range(0, 72, 5))
    assert all(len(m["views"]) == 12 and set(m["views"]) <= training_views for m in members)


def test_the_tv_grid_estimator_fits_the_training_views(exported, trained_phantom_run, tmp_path, capsys):
    export_main(["--load-config", str(trained_phantom_run), "--out", str(tmp_path), "--estimator", "tv-grid"])
    assert "fitting the tv grid to 15 training views" in capsys.readouterr().out
    field, grid = (nib.load(folder / "reconstruction.nii.gz") for folder in (exported, tmp_path / SUBJECT))
    assert grid.shape == field.shape and np.allclose(grid.affine, field.affine)
    summary = json.loads((tmp_path / SUBJECT / "export.json").read_text())
    assert summary["estimator"] == "tv-grid" and summary["tv_grid"]["train_views"] == list(range(0, 72, 5))
    assert (tmp_path / SUBJECT / "brain.ply").is_file() and summary["uncertainty"]["terms"] == ["blend"]
    # From the same 15 views, well above the best constant (10.7 dB, SSIM 0.26: see the round trip above).
    run = load_mednerf_run(trained_phantom_run)
    volume = prepared_subjects(run.pipeline)[0].volume
    reference, mask = volume.to_scanner_space(volume.images["t1"]), volume.to_scanner_space(volume.brain_mask())
    constant = volume_fidelity(np.full_like(reference, reference[mask].mean()), reference, mask)
    assert summary["volume_psnr"] > constant["volume_psnr"] + 0.5
    assert summary["volume_ssim"] > constant["volume_ssim"] + 0.15


def test_export_rejects_bad_input(trained_phantom_run, tmp_path, capsys):
    def error_of(*args: str) -> str:
        with pytest.raises(SystemExit) as exit_info:
            export_main(["--out", str(tmp_path / "out"), *args])
        assert exit_info.value.code == 2
        return capsys.readouterr().err

    assert "is not in this run; its subjects: BraTS2021_00000" in error_of(
        "--load-config", str(trained_phantom_run), "--subject", "BraTS2021_99999")
    assert "--grid must be" in error_of("--load-config", str(trained_phantom_run), "--grid", "oblique")
    assert "--estimator must be one of field, tv-grid, got 'sart'" in error_of(
        "--load-config", str(trained_phantom_run), "--estimator", "sart")
    assert "use it with --estimator field" in error_of(
        "--load-config", str(trained_phantom_run), "--estimator", "tv-grid", "--uncertainty-members", "2")
    assert "--uncertainty-members must be 0" in error_of(
        "--load-config", str(trained_phantom_run), "--uncertainty-members", "-1")
    assert "view fraction must be in (0, 1]" in error_of(
        "--load-config", str(trained_phantom_run), "--uncertainty-members", "2", "--uncertainty-view-fraction", "0")

    config = yaml.load(trained_phantom_run.read_text(), Loader=yaml.Loader)
    other = copy.deepcopy(config)
    from nerfstudio.configs.method_configs import method_configs

    other.method_name = "nerfacto"
    other.pipeline.model = copy.deepcopy(method_configs["nerfacto"].pipeline.model)
    (tmp_path / "nerfacto.yml").write_text(yaml.dump(other), "utf8")
    assert "'nerfacto'" in (message := error_of("--load-config", str(tmp_path / "nerfacto.yml")))
    assert "is not an mri-mednerf run" in message

    untrained = copy.deepcopy(config)
    untrained.timestamp = "never-trained"
    untrained.save_config()
    assert "no checkpoint in" in error_of("--load-config", str(untrained.get_base_dir() / "config.yml"))
    assert "no such config file" in error_of("--load-config", str(tmp_path / "missing.yml"))
    assert not (tmp_path / "out").exists()
