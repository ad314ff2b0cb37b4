from __future__ import annotations

import dataclasses
import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from mri_nerfstudio.cli.phantom import main
from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.phantom import (
    HEAD_LAYERS_MM,
    PhantomConfig,
    euler_transform,
    make_phantom,
    tissue_signals,
    write_brats_root,
    write_brats_subject,
)
from mri_nerfstudio.volume import MODALITIES, load_subject

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


@pytest.fixture(scope="module")
def clean_config(phantom_config_tiny) -> PhantomConfig:
    """No noise, bias, gain spread or misalignment: only anatomy and contrast."""
    return dataclasses.replace(
        phantom_config_tiny,
        noise_std=0.0,
        bias_strength=0.0,
        gain_range=(1.0, 1.0),
        max_rotation_deg=0.0,
        max_translation_mm=0.0,
    )


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_same_seed_same_subject_other_seed_other_subject(phantom_config_tiny):
    first, again, other = (make_phantom(seed, phantom_config_tiny) for seed in (0, 0, 1))

    for modality in MODALITIES:
        np.testing.assert_array_equal(first.images[modality], again.images[modality])
        assert not np.array_equal(first.images[modality], other.images[modality])
    np.testing.assert_array_equal(first.seg, again.seg)
    assert json.dumps(first.truth) == json.dumps(again.truth)
    assert first.truth["tumour"]["centre_ras_mm"] != other.truth["tumour"]["centre_ras_mm"]


def test_seg_has_the_brats_labels_inside_the_brain(phantom_config_tiny):
    phantom = make_phantom(0, phantom_config_tiny)

    assert phantom.seg.dtype == np.int16
    assert set(np.unique(phantom.seg)) == {0, 1, 2, 4}
    assert np.all(phantom.images["t1"][phantom.seg > 0] > 0)
    assert set(np.unique(make_phantom(0, dataclasses.replace(phantom_config_tiny, tumour=False)).seg)) == {0}


def test_signal_equations_give_textbook_contrast():
    t1, t1ce, t2, flair = (tissue_signals(m) for m in MODALITIES)

    assert t1["wm"] > t1["gm"] > t1["csf"]
    assert t2["csf"] > t2["gm"] > t2["wm"]
    assert flair["csf"] < 0.2 * min(flair["wm"], flair["gm"])  # CSF nulled by the inversion
    assert flair["oedema"] > max(flair["wm"], flair["gm"]) and t2["oedema"] > max(t2["wm"], t2["gm"])
    assert t1ce["enhancing"] > 2 * t1["enhancing"]  # gadolinium shortens T1
    assert all(t1ce[name] == t1[name] for name in ("wm", "gm", "csf", "necrosis", "oedema"))


def test_images_show_that_contrast(clean_config):
    phantom = make_phantom(0, clean_config)
    t1, t1ce, t2, flair = (phantom.images[m] for m in MODALITIES)
    normal = (t1 > 0) & (phantom.seg == 0)

    # WM bright on T1 and dark on T2, CSF the reverse: the two are anti-correlated.
    assert np.corrcoef(t1[normal], t2[normal])[0, 1] < -0.5
    # The brightest T2 voxels (mostly CSF, at 4 mm partial volume blurs the rest) are dark on FLAIR.
    csf = normal & (t2 > np.percentile(t2[normal], 99))
    assert np.median(flair[csf]) < 0.5 * np.median(flair[normal])
    assert flair[phantom.seg == 2].mean() > 1.2 * np.median(flair[normal])
    assert t1ce[phantom.seg == 4].mean() > 1.5 * t1[phantom.seg == 4].mean()


def test_thick_slices_average_the_thin_ones(clean_config):
    thin = make_phantom(0, clean_config)
    thick = make_phantom(0, dataclasses.replace(clean_config, slice_thickness_mm=8.0))

    np.testing.assert_array_equal(np.diag(thick.affine), [-4.0, -4.0, 8.0, 1.0])
    assert thick.affine[2, 3] == 2.0  # slab centre: halfway between the two 4 mm slices it averages
    assert thick.images["t1"].shape == (40, 48, 18)
    averaged = thin.images["t1"].reshape(40, 48, 18, 2)
    inside = np.all(averaged > 0, axis=3) & (thick.images["t1"] > 0)
    np.testing.assert_allclose(thick.images["t1"][inside], averaged.mean(axis=3)[inside], rtol=1e-5)
    assert thick.truth["grid"]["spacing_mm"] == [4.0, 4.0, 8.0]


def test_slice_motion_follows_its_stated_convention(clean_config):
    still = make_phantom(0, clean_config)
    moved = make_phantom(0, dataclasses.replace(clean_config, slice_motion_mm=6.0))
    shifts = np.asarray(moved.truth["modalities"]["t2"]["slice_shifts_mm"])

    assert shifts.shape == (36, 2) and np.abs(shifts).max() <= 6.0 and np.abs(shifts).max() > 2.0
    assert not np.any(moved.truth["modalities"]["t1"]["slice_shifts_mm"])  # the reference does not move
    # Undo: motion-free(p) = moved(p - d), i.e. a shift of +d in voxels.
    voxel = np.diag(moved.affine)[:2]
    restored = np.stack(
        [ndimage.shift(moved.images["t2"][:, :, k], d / voxel, order=1) for k, d in enumerate(shifts)], axis=2
    )
    error_before = np.abs(moved.images["t2"] - still.images["t2"]).mean()
    error_after = np.abs(restored - still.images["t2"]).mean()
    assert error_after < 0.5 * error_before


def test_misalignment_truth_aligns_the_written_files_with_simpleitk(clean_config, tmp_path):
    config = dataclasses.replace(clean_config, misalignment={"t2": (8.0, -5.0, 10.0, 6.0, -4.0, 5.0)})
    folder = write_brats_subject(make_phantom(0, config), tmp_path, 0)
    truth = json.loads((folder / "simulated.json").read_text())["modalities"]["t2"]["misalignment"]
    fixed = sitk.ReadImage(str(folder / "BraTS2021_00000_t1.nii.gz"))
    moving = sitk.ReadImage(str(folder / "BraTS2021_00000_t2.nii.gz"))
    lps = truth["lps"]
    transform = sitk.Euler3DTransform(lps["centre_mm"], *lps["rotation_rad"], lps["translation_mm"])

    moving_brain = sitk.Cast(moving > 0, sitk.sitkUInt8)
    brain = sitk.GetArrayFromImage(fixed) > 0

    def dice_after(t: sitk.Transform) -> float:
        return _dice(sitk.GetArrayFromImage(sitk.Resample(moving_brain, fixed, t, sitk.sitkNearestNeighbor)) > 0, brain)

    # Same brain outline once aligned (nearest-neighbour edges at 4 mm cost a few %); clearly worse
    # without the transform, and worse still with it applied the wrong way round.
    assert dice_after(transform) > 0.95
    assert dice_after(sitk.Euler3DTransform()) < 0.9
    assert dice_after(transform.GetInverse()) < dice_after(sitk.Euler3DTransform())
    # The RAS matrix, the RAS parameters and the LPS parameters describe one transform.
    ras = truth["ras"]
    matrix = np.asarray(truth["matrix_ras"])
    from_ras = euler_transform(ras["rotation_deg"], ras["translation_mm"], ras["centre_mm"])
    from_lps = euler_transform(np.degrees(lps["rotation_rad"]), lps["translation_mm"], lps["centre_mm"])
    np.testing.assert_allclose(matrix, from_ras, atol=1e-12)
    np.testing.assert_allclose(LPS @ matrix @ LPS, from_lps, atol=1e-12)
    assert ras["rotation_deg"] == [8.0, -5.0, 10.0]


def test_written_subject_says_it_is_simulated(phantom_subject_dir, phantom_config_tiny):
    truth = json.loads((phantom_subject_dir / "simulated.json").read_text())

    assert truth["simulated"] is True and truth["subject"] == "BraTS2021_00000" and truth["seed"] == 0
    assert truth["config"]["shape"] == [40, 48, 36]
    assert truth["config"] == json.loads(json.dumps(dataclasses.asdict(phantom_config_tiny)))
    for key in (*MODALITIES, "seg"):
        header = nib.load(phantom_subject_dir / f"BraTS2021_00000_{key}.nii.gz").header
        assert b"SIMULATED" in header["descrip"].item()
    assert load_subject(phantom_subject_dir).shape == (40, 48, 36)


def test_writing_is_atomic_and_never_overwrites_real_data(phantom_config_tiny, tmp_path):
    folders = write_brats_root(tmp_path, 1, 5, phantom_config_tiny)
    write_brats_root(tmp_path, 1, 5, phantom_config_tiny)  # a simulated subject may be rewritten

    assert sorted(p.name for p in tmp_path.iterdir()) == ["BraTS2021_00000"]  # no temporary folder left
    assert len(list(folders[0].iterdir())) == 6
    (folders[0] / "simulated.json").unlink()
    with pytest.raises(MRIInputError, match="refusing to overwrite"):
        write_brats_root(tmp_path, 1, 5, phantom_config_tiny)


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"shape": (40, 48)}, "shape"),
        ({"spacing_mm": -1.0}, "spacing_mm"),
        ({"slice_thickness_mm": 6.0}, "slice_thickness_mm"),
        ({"reference": "pd"}, "reference"),
        ({"misalignment": {"t1": (0, 0, 0, 0, 0, 0)}}, "misalignment"),
        ({"tumour_radius_mm": (20.0, 10.0)}, "tumour_radius_mm"),
        ({"head": "yes"}, "head"),
    ],
)
def test_bad_settings_name_the_field(phantom_config_tiny, changes, field):
    with pytest.raises(MRIInputError, match=f"PhantomConfig.{field}"):
        dataclasses.replace(phantom_config_tiny, **changes)


def test_cli_writes_subjects_and_says_they_are_simulated(tmp_path, capsys):
    main(["--out", str(tmp_path), "--n", "2", "--seed", "3", "--shape", "40", "48", "36", "--spacing-mm", "4"])

    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("wrote") and "SIMULATED" in lines[-1]
    assert json.loads((tmp_path / "BraTS2021_00001" / "simulated.json").read_text())["seed"] == 4


@pytest.mark.parametrize("bad", [["--slice-thickness-mm", "6"], ["--n", "0"], ["--out-is-a-file"]])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys, bad):
    out = tmp_path / "out"
    if bad == ["--out-is-a-file"]:
        out.write_text("")
        bad = []
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(out), "--shape", "40", "48", "36", "--spacing-mm", "4", *bad])

    assert exit_info.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_head_phantom_wraps_the_same_brain_in_csf_skull_scalp_and_noisy_air(head_phantom, head_phantom_config):
    stripped = make_phantom(0, dataclasses.replace(head_phantom_config, head=False))
    distance = ndimage.distance_transform_edt(~head_phantom.brain, sampling=4.0)
    skull = (distance > 4.0) & (distance <= 8.0)  # 4 mm voxels: mostly the 2-8 mm skull shell
    scalp = (distance > 8.0) & (distance <= 12.5)
    air = distance > 24.0

    np.testing.assert_array_equal(head_phantom.brain, stripped.brain)
    np.testing.assert_array_equal(head_phantom.seg, stripped.seg)
    assert head_phantom.truth["tumour"] == stripped.truth["tumour"]
    for modality in MODALITIES:
        image = head_phantom.images[modality]
        brain_mean = image[head_phantom.brain].mean()
        assert image[skull].mean() < 0.6 * brain_mean  # cortical bone: dark on every sequence
        assert 0.0 < image[air].mean() < 0.05 * brain_mean and image[air].std() > 0  # noisy air, not constant
        assert np.count_nonzero(image == image.min()) < 10
    for modality in ("t1", "t1ce"):
        assert head_phantom.images[modality][scalp].mean() > head_phantom.images[modality][head_phantom.brain].mean()
    head = head_phantom.truth["head"]
    assert [layer["name"] for layer in head["layers_mm"]] == [name for name, _, _ in HEAD_LAYERS_MM]
    assert head["brain_ml"] == pytest.approx(head_phantom.brain.sum() * 0.064)
    assert stripped.truth["head"] is None
    assert np.array_equal(stripped.brain, stripped.images["t1"] > 0)


def test_head_phantom_is_deterministic(head_phantom, head_phantom_config):
    again = make_phantom(0, head_phantom_config)

    for modality in MODALITIES:
        np.testing.assert_array_equal(again.images[modality], head_phantom.images[modality])
    assert json.dumps(again.truth) == json.dumps(head_phantom.truth)


def test_head_needs_a_grid_that_holds_it(phantom_config_tiny):
    with pytest.raises(MRIInputError, match=r"PhantomConfig.shape: expected with head=True.*at least \(44, 53, 46\)"):
        make_phantom(0, dataclasses.replace(phantom_config_tiny, head=True))


def test_cli_head_writes_whole_heads_and_no_mask_file(tmp_path, capsys):
    main(["--out", str(tmp_path), "--n", "1", "--head", "--shape", "48", "56", "48", "--spacing-mm", "4"])

    folder = tmp_path / "BraTS2021_00000"
    names = sorted(p.name for p in folder.iterdir())
    assert not [n for n in names if "brainmask" in n.lower() or "brain_mask" in n.lower()]
    assert json.loads((folder / "simulated.json").read_text())["head"]["layers_mm"][1]["tissue"] == "bone"
    t1 = nib.load(folder / "BraTS2021_00000_t1.nii.gz").get_fdata()
    assert np.count_nonzero(t1 == t1.min()) < 10  # noisy air everywhere: no constant background
    assert "SIMULATED" in capsys.readouterr().out
