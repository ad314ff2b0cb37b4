"""The prepared-subject cache: outputs, instant re-runs, atomicity, untouched inputs, the CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from mri_nerfstudio import head_pose
from mri_nerfstudio import prepare as prepare_module
from mri_nerfstudio.cli.prepare import main as prepare_main
from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.phantom import PhantomConfig, write_brats_root
from mri_nerfstudio.prepare import (
    PrepareConfig,
    PreparedSubject,
    cache_key,
    load_prepared,
    load_volume,
    prepare_subject,
    prepare_subjects,
    preprocessing_pipeline,
    render_subject_views,
)
from mri_nerfstudio.subject_files import input_files
from mri_nerfstudio.volume import read_image, save_nifti

SMALL = PrepareConfig(image_size=24)


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def prepared(phantom_subject_dir, tmp_path_factory):
    return prepare_subject(phantom_subject_dir, tmp_path_factory.mktemp("cache"), SMALL)


def test_prepared_subject_outputs(prepared):
    assert prepared.images.shape == (72, 24, 24)
    assert prepared.images.dtype == np.float32
    assert 0.0 <= prepared.images.min() and prepared.images.max() <= 1.0
    assert prepared.images.max() > 0.1, "views must show the brain"
    folder = prepared.directory
    for name in ["manifest.json", "cameras.json", "provenance.json", "views.npy", "preprocessed_t1.nii.gz",
                 "preprocessed_mask.nii.gz", "preprocessed_seg.nii.gz"]:
        assert (folder / name).is_file(), name
    pngs = sorted((folder / "views").glob("view_*.png"))
    assert len(pngs) == 72
    png = np.asarray(Image.open(pngs[0]), dtype=np.float32) / 255
    np.testing.assert_allclose(png, prepared.images[0], atol=1 / 255)
    cameras = json.loads((folder / "cameras.json").read_text())
    assert len(cameras["frames"]) == 72
    assert "world_from_ras" in cameras["normalization"]
    steps = [record["step"] for record in json.loads((folder / "provenance.json").read_text())]
    assert steps, "provenance must record the preprocessing steps"
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")], "no temporary folder left behind"


def test_rerun_is_served_from_cache(prepared, phantom_subject_dir, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("a cached subject must not be rendered again")

    monkeypatch.setattr(prepare_module.views, "render_views", fail)
    again = prepare_subject(phantom_subject_dir, prepared.directory.parent, SMALL)
    assert again.directory == prepared.directory
    np.testing.assert_array_equal(again.images, prepared.images)
    for modality in prepared.volume.modalities:
        np.testing.assert_allclose(again.volume.images[modality], prepared.volume.images[modality])
    np.testing.assert_allclose(again.volume.affine, prepared.volume.affine)
    np.testing.assert_allclose(again.cameras.c2w, prepared.cameras.c2w)


def test_stages_run_one_by_one_give_the_prepared_subject(phantom_subject_dir, tmp_path):
    # The stage functions are what prepare_subject runs (benchmarks time them one by one): same
    # inputs, same code, so the views agree up to float reassociation. Registration is left out
    # to keep the test fast; the step list is checked in the next test.
    config = PrepareConfig(image_size=24, register=False)
    prepared = prepare_subject(phantom_subject_dir, tmp_path, config)
    volume = load_volume(phantom_subject_dir, config)
    records = []
    for step in preprocessing_pipeline(config).steps:
        volume, record = step(volume)
        records.append(record)
    assert prepared.provenance[0]["step"] == "load" and records == prepared.provenance[1:]
    images, cameras, normalization = render_subject_views(volume, config)
    assert images.dtype == np.float32
    np.testing.assert_allclose(images, prepared.images, atol=1e-6)
    np.testing.assert_allclose(cameras.c2w, prepared.cameras.c2w)
    np.testing.assert_allclose(normalization.world_from_ras(), prepared.normalization.world_from_ras())


def test_preprocessing_pipeline_follows_the_settings():
    def names(config: PrepareConfig) -> list[str]:
        return [step.name for step in preprocessing_pipeline(config).steps]

    assert names(PrepareConfig()) == [
        "resample_anisotropic", "brain_mask", "register_to_reference", "normalize_percentiles", "equalize_histogram"
    ]
    assert names(PrepareConfig(register=False, equalize=False)) == [
        "resample_anisotropic", "brain_mask", "normalize_percentiles"
    ]
    assert "upsample_in_plane" in names(PrepareConfig(upsample_factor=2))
    assert "resample_through_plane" in names(PrepareConfig(slice_spacing_mm=2.0))
    assert names(PrepareConfig(correct_slice_motion=True))[:2] == ["correct_slice_motion", "resample_anisotropic"]


def test_cache_key_follows_inputs_and_settings(phantom_subject_dir, phantom_root):
    key = cache_key(phantom_subject_dir, SMALL)
    assert key == cache_key(phantom_subject_dir, PrepareConfig(image_size=24))
    assert key != cache_key(phantom_subject_dir, PrepareConfig(image_size=32))
    assert key != cache_key(phantom_subject_dir, PrepareConfig(image_size=24, view_mode="mip"))
    other = sorted(p for p in phantom_root.iterdir() if p.is_dir())[1]
    assert key != cache_key(other, SMALL)


def test_crash_while_writing_leaves_nothing_half_done(phantom_subject_dir, tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare_module.np, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        prepare_subject(phantom_subject_dir, tmp_path, SMALL)
    assert list(tmp_path.iterdir()) == []


def test_inputs_are_never_modified(phantom_root, tmp_path):
    subjects = sorted(p for p in phantom_root.iterdir() if p.is_dir())
    before = {s.name: _digest(s) for s in subjects}
    prepare_subjects(phantom_root, tmp_path, SMALL)
    assert {s.name: _digest(s) for s in subjects} == before


def test_shards_split_the_subjects(phantom_root, tmp_path):
    first = prepare_subjects(phantom_root, tmp_path, SMALL, shard=(0, 2))
    second = prepare_subjects(phantom_root, tmp_path, SMALL, shard=(1, 2))
    assert len(first) == len(second) == 1
    assert first[0].name != second[0].name
    with pytest.raises(MRIInputError, match="shard"):
        prepare_subjects(phantom_root, tmp_path, SMALL, shard=(2, 2))


def test_only_the_chosen_subjects_are_prepared(phantom_root, tmp_path):
    (chosen,) = prepare_subjects(phantom_root, tmp_path, SMALL, subjects=("BraTS2021_00001",))

    assert chosen.name == "BraTS2021_00001"
    assert [p.name for p in tmp_path.iterdir()] == [chosen.directory.name]  # the other subject is not prepared
    assert [s.name for s in prepare_subjects(phantom_root, tmp_path, SMALL, subjects=("1",))] == ["BraTS2021_00000"]
    with pytest.raises(MRIInputError, match=r"subjects: \['BraTS2021_00009'\] not in the data") as error:
        prepare_subjects(phantom_root, tmp_path, SMALL, subjects=("BraTS2021_00009",))
    assert str(phantom_root) in str(error.value)


def test_load_prepared_rejects_other_formats(prepared, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    manifest = json.loads((prepared.directory / "manifest.json").read_text())
    manifest["format"] = 999
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MRIInputError, match="manifest.json"):
        load_prepared(copy)


def test_bad_settings_are_refused():
    with pytest.raises(MRIInputError, match="view_mode"):
        PrepareConfig(view_mode="xray")
    with pytest.raises(MRIInputError, match="image_size"):
        PrepareConfig(image_size=2)
    with pytest.raises(MRIInputError, match="skull_strip"):
        PrepareConfig(skull_strip="maybe")
    with pytest.raises(MRIInputError, match="label_convention"):
        PrepareConfig(label_convention="brats1999")
    with pytest.raises(MRIInputError, match="target_spacing_mm"):
        PrepareConfig(target_spacing_mm=0.0)


def test_cli_prepares_and_reports(phantom_subject_dir, tmp_path, capsys):
    prepare_main(["--data", str(phantom_subject_dir), "--out", str(tmp_path), "--image-size", "24"])
    out = capsys.readouterr().out
    assert "72 views 24x24" in out
    assert len(list(tmp_path.glob("*/manifest.json"))) == 1


@pytest.mark.parametrize("make_data", ["missing", "empty"])
def test_cli_bad_data_is_one_line_exit_2(tmp_path, capsys, make_data):
    data = tmp_path / "data"
    if make_data == "empty":
        data.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        prepare_main(["--data", str(data), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and str(data) in err


def _mask_record(prepared) -> dict:
    return next(record for record in prepared.provenance if record["step"] == "brain_mask")["estimates"]


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def test_a_z_scored_subject_keeps_its_whole_brain(phantom_subject_dir, tmp_path):
    # z-scored with the brain's mean and std, as BraTS 2013 is: the brain is half negative, the background
    # one negative constant. The brain mask must be the brain, not the voxels above zero.
    subject = tmp_path / "data" / phantom_subject_dir.name
    subject.mkdir(parents=True)
    for source in sorted(phantom_subject_dir.glob("*.nii.gz")):
        image = nib.load(source)
        data = image.get_fdata(dtype=np.float32)
        if not source.name.endswith("_seg.nii.gz"):
            brain = data[data > 0]
            data = (data - brain.mean()) / brain.std()
        save_nifti(data, image.affine, subject / source.name)
    prepared = prepare_subject(subject, tmp_path / "cache", PrepareConfig(image_size=24, register=False))

    record = _mask_record(prepared)
    assert "skull-stripped" in record["decision"]
    truth = load_volume(phantom_subject_dir, SMALL).images["t1"] > 0  # the phantom is 0 outside its brain
    z_scored = load_volume(subject, SMALL).images["t1"]
    assert np.count_nonzero(z_scored > 0) < 0.7 * np.count_nonzero(truth)
    assert _dice(prepared.volume.mask, truth) >= 0.99
    assert record["brain_ml"] == pytest.approx(np.count_nonzero(prepared.volume.mask) * 64 / 1000)


def test_a_given_mask_file_wins_and_is_recorded(phantom_subject_dir, tmp_path):
    subject = Path(shutil.copytree(phantom_subject_dir, tmp_path / phantom_subject_dir.name))
    t1 = nib.load(next(subject.glob("*_t1.nii.gz")))
    box = np.zeros(t1.shape, dtype=np.uint8)
    box[10:30, 12:36, 8:28] = 1
    save_nifti(box, t1.affine, subject / "given_brainmask.nii.gz")

    prepared = prepare_subject(subject, tmp_path / "cache", PrepareConfig(image_size=24, register=False))

    record = _mask_record(prepared)
    assert record["decision"].startswith("given") and "given_brainmask.nii.gz" in record["decision"]
    assert np.count_nonzero(prepared.volume.mask) == box.sum()
    load = prepared.provenance[0]
    assert load["step"] == "load" and load["estimates"]["mask"]["file"].endswith("given_brainmask.nii.gz")


def test_one_mask_for_several_subjects_or_the_template_is_refused(phantom_root, phantom_subject_dir, tmp_path):
    mask = next(phantom_subject_dir.glob("*_t1.nii.gz"))
    with pytest.raises(MRIInputError, match="cannot be the brain mask of 2 subjects"):
        prepare_subjects(phantom_root, tmp_path, PrepareConfig(image_size=24, mask=mask))
    with pytest.raises(MRIInputError, match="MNI152 template has its own brain mask"):
        prepare_subjects(None, tmp_path, PrepareConfig(image_size=24, mask=mask))


def test_a_mhd_whose_raw_changes_is_prepared_again(phantom_subject_dir, tmp_path):
    t1 = read_image(next(phantom_subject_dir.glob("*_t1.nii.gz")))
    header = tmp_path / "scan.mhd"

    def write(scale: float) -> None:
        image = sitk.GetImageFromArray(np.ascontiguousarray(t1.get_fdata(dtype=np.float32).T) * scale)
        image.SetSpacing([4.0, 4.0, 4.0])
        sitk.WriteImage(image, str(header), useCompression=False)

    write(1.0)
    config = PrepareConfig(image_size=24, register=False)
    first = prepare_subject(header, tmp_path / "cache", config)
    raw = tmp_path / "scan.raw"
    assert raw in input_files(header)
    header_bytes = header.read_bytes()
    write(2.0)  # new voxel values, the same header
    assert header.read_bytes() == header_bytes
    second = prepare_subject(header, tmp_path / "cache", config)
    assert second.directory != first.directory


def test_cli_prints_the_mask_decision(phantom_subject_dir, tmp_path, capsys):
    prepare_main(["--data", str(phantom_subject_dir), "--out", str(tmp_path), "--image-size", "24", "--no-register"])
    out = capsys.readouterr().out
    assert "brain mask" in out and " ml" in out and "skull-stripped" in out


def test_cli_skull_strip_is_checked(phantom_subject_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        prepare_main(["--data", str(phantom_subject_dir), "--out", str(tmp_path), "--skull-strip", "maybe"])
    assert exit_info.value.code == 2


def test_a_whole_head_scan_is_prepared_from_its_brain(head_phantom_config, tmp_path, capsys):
    # mri-phantom --head writes a whole-head subject (skull, scalp, noisy air); mri-prepare extracts the brain,
    # says so, and the views, the scene's scale and the mask describe the brain, not the head.
    from mri_nerfstudio.cli.phantom import main as phantom_main
    from mri_nerfstudio.phantom import make_phantom

    shape = [str(n) for n in head_phantom_config.shape]
    phantom_main(["--out", str(tmp_path / "heads"), "--n", "1", "--head", "--shape", *shape, "--spacing-mm", "4"])
    subject = tmp_path / "heads" / "BraTS2021_00000"
    config = ["--image-size", "24", "--modalities", "t1", "--no-register"]
    prepare_main(["--data", str(subject), "--out", str(tmp_path / "cache"), *config])
    out = capsys.readouterr().out
    assert "brain mask auto: whole head, brain extracted" in out

    prepared = load_prepared(next((tmp_path / "cache").glob("BraTS2021_00000-*")))
    written = nib.load(subject / "BraTS2021_00000_t1.nii.gz")
    brain = make_phantom(0, head_phantom_config).brain.astype(np.uint8)
    truth = nib.as_closest_canonical(nib.Nifti1Image(brain, written.affine)).get_fdata() > 0
    record = _mask_record(prepared)
    assert record["decision"] == "auto: whole head, brain extracted"
    assert _dice(prepared.volume.mask, truth) >= 0.9
    assert record["share_of_foreground"] < 0.6  # the head around the brain (3,600 ml here) is left out
    assert record["brain_ml"] == pytest.approx(np.count_nonzero(truth) * 64 / 1000, rel=0.15)
    assert prepared.normalization.radius_mm < 105  # the brain's bounding radius (96 mm), not the head's (119 mm)


def test_cli_a_glob_that_matches_nothing_is_one_line_exit_2(phantom_subject_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        prepare_main(["--data", str(phantom_subject_dir), "--out", str(tmp_path), "--modality", "t1=*MPRAGE*"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "t1=*MPRAGE*" in err and str(phantom_subject_dir) in err


def test_mri_prepare_corrects_slice_motion_when_asked(tmp_path):
    """A 2 mm phantom in 6 mm axial slices whose T2 slices moved in-plane (each component up to 4 mm): with
    --correct-slice-motion the fitted shifts undo the applied ones and the T2 is close to a motion-free twin's.
    T1 and T2 only, without registration or resampling: this is about the one step."""
    grid = dict(shape=(80, 96, 72), spacing_mm=2.0, slice_thickness_mm=6.0)
    still_config = PhantomConfig(max_rotation_deg=0.0, max_translation_mm=0.0, **grid)
    moved = write_brats_root(tmp_path / "moved", 1, 0, dataclasses.replace(still_config, slice_motion_mm=4.0))[0]
    still = write_brats_root(tmp_path / "still", 1, 0, still_config)[0]
    settings = PrepareConfig(
        image_size=24, n_views=8, step_deg=45.0, modalities=("t1", "t2"), register=False, resample_anisotropic=False
    )
    flags = ["--image-size", "24", "--n-views", "8", "--step-deg", "45", "--modalities", "t1", "t2", "--no-register"]
    flags += ["--no-resample-anisotropic", "--correct-slice-motion"]
    prepare_main(["--data", str(moved), "--out", str(tmp_path / "corrected"), *flags])
    corrected = load_prepared(next((tmp_path / "corrected").glob("BraTS2021_00000-*")))
    uncorrected = prepare_subject(moved, tmp_path / "uncorrected", settings)
    motion_free = prepare_subject(still, tmp_path / "motion_free", settings)

    assert corrected.config == dataclasses.replace(settings, correct_slice_motion=True)
    assert [record["step"] for record in corrected.provenance][:2] == ["load", "correct_slice_motion"]
    assert "correct_slice_motion" not in [record["step"] for record in uncorrected.provenance]
    # The phantom's slice k shows at p what the motion-free one shows at p + d_k (RAS mm); the step records the
    # shift that maps corrected points to source points, so it should find -d_k.
    applied = np.asarray(json.loads((moved / "simulated.json").read_text())["modalities"]["t2"]["slice_shifts_mm"])
    slices = corrected.provenance[1]["estimates"]["t2"]
    fitted = np.array([s["shift_mm"] for s in slices])
    checked = ~np.array([s["skipped"] for s in slices])
    assert checked.sum() >= 0.8 * len(slices)
    residual = np.linalg.norm(fitted + applied, axis=1)[checked]
    # Applied: RMS 3.3 mm per slice. Measured: residual RMS 0.3 mm, worst slice 1.3 mm.
    assert np.sqrt(np.mean(residual**2)) < 0.6 and residual.max() < 2.0
    mask = motion_free.volume.brain_mask()

    def t2_error(prepared: PreparedSubject) -> float:
        return float(np.abs(prepared.volume.images["t2"] - motion_free.volume.images["t2"])[mask].mean())

    assert t2_error(corrected) < 0.6 * t2_error(uncorrected)  # measured: 0.064 against 0.147


def test_align_head_shows_a_tilted_head_as_the_straight_one(tilted_template_folder, template_tilt_deg, tmp_path):
    # The MNI152 template pitched 20 degrees in the scanner: aligned to the template's own pose, its views are
    # the straight template's; left in scanner axes, they are not.
    config = PrepareConfig(image_size=32, register=False, align_head=True)
    straight = prepare_subject(None, tmp_path, config)
    aligned = prepare_subject(tilted_template_folder, tmp_path, config)
    in_scanner_axes = prepare_subject(tilted_template_folder, tmp_path, dataclasses.replace(config, align_head=False))

    def psnr(a: np.ndarray, b: np.ndarray) -> float:
        return float(10 * np.log10(1.0 / np.mean((a - b) ** 2)))

    assert psnr(aligned.images, straight.images) > 33.0  # 38.5 dB when written
    assert psnr(in_scanner_axes.images, straight.images) < psnr(aligned.images, straight.images) - 10.0  # 19.2 dB
    record = aligned.provenance[-1]
    assert record["step"] == "align_head"
    assert record["estimates"]["pitch_deg"] == pytest.approx(-template_tilt_deg, abs=2.0)
    # the rotation is on disk, and the volume stays in scanner space
    reloaded = load_prepared(aligned.directory)
    assert reloaded.normalization == aligned.normalization
    stored = nib.load(tilted_template_folder / "tilted_t1.nii.gz").affine
    np.testing.assert_allclose(reloaded.volume.affine, stored, atol=1e-4)
    assert not np.allclose(reloaded.normalization.rotation, np.eye(3))


def test_cli_align_head_prints_the_tilt_or_one_line_naming_the_subject(tilted_template_folder, tmp_path, capsys,
                                                                        monkeypatch):
    arguments = ["--data", str(tilted_template_folder), "--image-size", "16", "--no-register", "--align-head"]
    prepare_main([*arguments, "--out", str(tmp_path / "a")])
    assert re.search(r"tilted: head tilted (19|20|21)\.\d degrees from MNI152 \(pitch -", capsys.readouterr().out)
    monkeypatch.setattr(head_pose, "MAX_ROTATION_DEG", 5.0)  # as if the fit had turned the brain implausibly far
    with pytest.raises(SystemExit) as exit_info:
        prepare_main([*arguments, "--out", str(tmp_path / "b")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(tilted_template_folder) in err and "align-head off" in err
