from __future__ import annotations

import hashlib
import json
import shutil
import socket
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.subject_files import MODALITIES, ROLES, find_subjects, input_files
from mri_nerfstudio.volume import load_default_subject, load_subject, load_subjects, save_nifti


@pytest.fixture
def subject(phantom_subject_dir: Path, tmp_path: Path) -> Path:
    """A writable copy of the first phantom subject."""
    return Path(shutil.copytree(phantom_subject_dir, tmp_path / phantom_subject_dir.name))


def _file(folder: Path, key: str) -> Path:
    return folder / f"{folder.name}_{key}.nii.gz"


def _rewrite(folder: Path, key: str, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path = _file(folder, key)
    save_nifti(array, nib.load(path).affine if affine is None else affine, path)
    return path


def test_loads_a_brats_subject_onto_the_canonical_grid(phantom_subject_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the phantom's modalities share one grid: nothing to resample
        volume = load_subject(phantom_subject_dir)

    assert volume.name == "BraTS2021_00000"
    assert volume.modalities == list(MODALITIES)
    assert volume.reference == "t1" and volume.mask is None
    assert volume.shape == (40, 48, 36) and volume.spacing == (4.0, 4.0, 4.0)
    # The file is LPS-ish (X and Y flipped): canonical RAS has a positive diagonal.
    assert np.all(np.diag(volume.affine)[:3] > 0)
    assert all(image.dtype == np.float32 and image.shape == volume.shape for image in volume.images.values())
    assert volume.seg.dtype == np.int16 and set(np.unique(volume.seg)) <= {0, 1, 2, 4}
    assert volume.sources["seg"] == str(_file(phantom_subject_dir, "seg"))
    loading = volume.loading
    assert loading["format"] == "folder" and loading["files"] == volume.sources
    assert loading["reference"] == {"requested": "t1", "used": "t1", "note": None}
    assert loading["label_convention"]["convention"] == "brats2021" and loading["label_convention"]["from"] == "naming"
    assert loading["mask"] is None and loading["dicom_series"] is None and loading["notes"] == []
    json.dumps(loading)  # JSON-ready


def test_loads_a_subset_of_modalities_with_another_reference(phantom_subject_dir):
    volume = load_subject(phantom_subject_dir, modalities=["flair", "t2"], reference="t2")

    assert volume.modalities == ["t2", "flair"]  # always in MODALITIES (encoder channel) order
    assert volume.reference == "t2"
    assert volume.seg is not None
    assert set(volume.sources) == {"t2", "flair", "seg"}


def test_finds_and_loads_every_subject_of_a_brats_root(phantom_root):
    subjects = find_subjects(phantom_root)

    assert [p.name for p in subjects] == ["BraTS2021_00000", "BraTS2021_00001"]
    assert [v.name for v in load_subjects(phantom_root, modalities=["t1"])] == ["BraTS2021_00000", "BraTS2021_00001"]
    assert find_subjects(subjects[0]) == [subjects[0]]


def test_a_single_file_is_a_subject_with_one_modality(phantom_subject_dir):
    path = _file(phantom_subject_dir, "t2")

    volume = load_subject(path, reference="t2")

    assert find_subjects(path) == [path]
    assert volume.name == "BraTS2021_00000_t2"
    assert volume.modalities == ["t2"] and volume.seg is None
    np.testing.assert_array_equal(volume.images["t2"], load_subject(path.parent).images["t2"])


@pytest.mark.parametrize(
    "linear",
    [
        np.array([[0.0, 0.0, -2.5], [1.5, 0.0, 0.0], [0.0, -3.0, 0.0]]),  # permuted and flipped axes
        np.diag([1.2, 0.8, 2.0]) @ np.array([[0.8, -0.6, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0]]).T,  # oblique
    ],
    ids=["permuted", "oblique"],
)
def test_nrrd_and_mha_load_like_the_same_nifti(tmp_path, linear):
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = [10.0, -20.0, 30.0]
    data = np.random.default_rng(0).uniform(1.0, 2.0, size=(6, 7, 8)).astype(np.float32)
    save_nifti(data, affine, tmp_path / "scan.nii.gz")
    # The same voxels and geometry in SimpleITK's LPS convention.
    lps = np.diag([-1.0, -1.0, 1.0]) @ affine[:3]
    spacing = np.linalg.norm(lps[:, :3], axis=0)
    image = sitk.GetImageFromArray(data.transpose(2, 1, 0))
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps[:, :3] / spacing).flatten().tolist())
    image.SetOrigin(lps[:, 3].tolist())
    for suffix in (".nrrd", ".mha"):
        sitk.WriteImage(image, str(tmp_path / f"scan{suffix}"))

    nifti = load_subject(tmp_path / "scan.nii.gz")
    for suffix in (".nrrd", ".mha"):
        other = load_subject(tmp_path / f"scan{suffix}")
        np.testing.assert_array_equal(other.images["t1"], nifti.images["t1"])
        # NIfTI stores the affine (sform) in float32: agreement to float32 precision of ~30 mm values.
        np.testing.assert_allclose(other.affine, nifti.affine, atol=1e-5)
        np.testing.assert_allclose(other.scanner_affine, affine, atol=1e-5)
        assert other.scanner_shape == (6, 7, 8)


def test_freesurfer_mgz_loads_like_the_same_nifti(tmp_path):
    affine = np.array([[-1.0, 0, 0, 128], [0, 0, 1.0, -128], [0, -1.0, 0, 128], [0, 0, 0, 1]])  # FreeSurfer's LIA
    data = np.random.default_rng(0).uniform(1.0, 2.0, size=(6, 7, 8)).astype(np.float32)
    save_nifti(data, affine, tmp_path / "T1.nii.gz")
    nib.save(nib.MGHImage(data, affine), tmp_path / "T1.mgz")

    mgz, nifti = load_subject(tmp_path / "T1.mgz"), load_subject(tmp_path / "T1.nii.gz")

    assert find_subjects(tmp_path / "T1.mgz") == [tmp_path / "T1.mgz"] and mgz.name == "T1"
    np.testing.assert_array_equal(mgz.images["t1"], nifti.images["t1"])
    np.testing.assert_allclose(mgz.scanner_affine, affine, atol=1e-5)


def test_scanner_space_round_trips_exactly_to_the_file(phantom_subject_dir):
    volume = load_subject(phantom_subject_dir)

    for key in ("t1", "seg"):
        on_disk = nib.load(_file(phantom_subject_dir, key))
        array = volume.seg if key == "seg" else volume.images[key]
        np.testing.assert_array_equal(volume.to_scanner_space(array), on_disk.get_fdata(dtype=np.float32))
    np.testing.assert_array_equal(volume.scanner_affine, on_disk.affine)
    np.testing.assert_array_equal(volume.scanner_space_affine(), on_disk.affine)
    assert volume.scanner_shape == on_disk.shape


def test_save_nifti_round_trips_and_leaves_no_temporary_file(tmp_path):
    affine = np.array([[-2.0, 0, 0, 5], [0, 3.0, 0, -7], [0, 0, 1.5, 9], [0, 0, 0, 1]])
    labels = np.arange(60, dtype=np.int16).reshape(3, 4, 5)

    path = save_nifti(labels, affine, tmp_path / "sub" / "labels.nii.gz", description="SIMULATED test")

    image = nib.load(path)
    assert image.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asarray(image.dataobj), labels)
    np.testing.assert_array_equal(image.affine, affine)
    assert image.header["descrip"].item() == b"SIMULATED test"
    assert [p.name for p in path.parent.iterdir()] == ["labels.nii.gz"]


def test_trailing_singleton_4d_is_squeezed(subject):
    before = load_subject(subject).images["t2"]
    _rewrite(subject, "t2", nib.load(_file(subject, "t2")).get_fdata(dtype=np.float32)[..., None])

    np.testing.assert_array_equal(load_subject(subject).images["t2"], before)


def test_a_grid_mismatch_is_resampled_with_a_warning(subject):
    t1 = load_subject(subject, modalities=["t1"]).images["t1"]
    reference = nib.load(_file(subject, "t1"))
    # Every other voxel along X and Y: same field of view, twice the spacing.
    coarse = reference.slicer[::2, ::2, :]
    path = _rewrite(subject, "t1ce", coarse.get_fdata(dtype=np.float32), coarse.affine)

    with pytest.warns(UserWarning, match=path.name):
        volume = load_subject(subject)

    assert volume.images["t1ce"].shape == t1.shape
    brain = t1 > 0
    # Same anatomy in T1ce contrast (T1-like): a wrong placement (flip, offset) would decorrelate.
    assert np.corrcoef(volume.images["t1ce"][brain], t1[brain])[0, 1] > 0.5


@pytest.mark.parametrize("kind", ["missing", "empty", "no_images", "unknown_type"])
def test_bad_paths_are_named(tmp_path, kind):
    path = tmp_path / "data"
    if kind == "empty":
        path.mkdir()
    elif kind == "no_images":
        (path / "sub").mkdir(parents=True)
        (path / "sub" / "notes.txt").write_text("not an image")
    elif kind == "unknown_type":
        path = tmp_path / "scan.png"
        path.write_bytes(b"\x89PNG")

    with pytest.raises(MRIInputError) as error:
        find_subjects(path)
    assert str(path) in str(error.value)
    if kind in ("missing", "unknown_type"):
        with pytest.raises(MRIInputError, match=str(path.name)):
            load_subject(path)


def test_a_missing_reference_falls_back_with_a_note(subject):
    _file(subject, "t1").unlink()

    volume = load_subject(subject)

    assert volume.reference == "t1ce" and volume.modalities == ["t1ce", "t2", "flair"]
    assert volume.loading["reference"] == {
        "requested": "t1",
        "used": "t1ce",
        "note": "t1 not found; reference falls back to t1ce",
    }
    assert "t1 not found; reference falls back to t1ce" in volume.loading["notes"]
    # Among the modalities asked for: the first present of t1, t1ce, t2, flair.
    assert load_subject(subject, modalities=["flair", "t2"]).reference == "t2"
    with pytest.raises(MRIInputError, match=r"modalities \['t1'\] not found") as error:
        load_subject(subject, modalities=["t1", "t2"])  # asked for, absent: still an error
    assert str(subject) in str(error.value) and "t1ce" in str(error.value)


def test_a_folder_without_any_modality_names_what_it_expects(subject):
    for key in MODALITIES:
        _file(subject, key).unlink()

    with pytest.raises(MRIInputError, match="no modality image found") as error:
        load_subject(subject)
    assert str(subject) in str(error.value) and "--modality NAME=GLOB" in str(error.value)


def test_modalities_not_present_or_without_the_reference_are_rejected(phantom_subject_dir):
    with pytest.raises(MRIInputError, match="pd"):
        load_subject(phantom_subject_dir, modalities=["t1", "pd"])
    with pytest.raises(MRIInputError, match="reference modality 't1'"):
        load_subject(phantom_subject_dir, modalities=["t2"])


@pytest.mark.parametrize(
    "key, array, expected",
    [
        ("t2", np.ones((8, 9), dtype=np.float32), r"shape \(8, 9\)"),
        ("t2", np.ones((8, 9, 10, 2), dtype=np.float32), r"shape \(8, 9, 10, 2\): 2 volumes in one file"),
        ("t2", np.full((8, 9, 10), np.nan, dtype=np.float32), "all NaN"),
        ("t2", np.full((8, 9, 10), np.inf, dtype=np.float32), "non-finite"),
        ("flair", np.zeros((40, 48, 36), dtype=np.float32), "all zero"),
        ("seg", np.full((40, 48, 36), 3, dtype=np.int16), r"seg labels \[3\] are not brats2021 labels"),
        ("seg", np.full((40, 48, 36), 5, dtype=np.int16), r"seg labels \[5\] are not brats2021 labels"),
    ],
    ids=["2d", "4d", "all_nan", "inf", "all_zero", "seg_label_3_in_brats2021", "seg_label_5"],
)
def test_bad_images_are_rejected_naming_the_file(subject, key, array, expected):
    path = _rewrite(subject, key, array, np.eye(4))

    with pytest.raises(MRIInputError, match=expected) as error:
        load_subject(subject)
    assert str(path) in str(error.value)


def test_nan_voxels_are_background_with_a_note_naming_the_file(subject, phantom_subject_dir):
    path = _file(subject, "t2")
    data = nib.load(path).get_fdata(dtype=np.float32)
    outside = data == 0  # SPM writes NaN where a resampled image has no data
    _rewrite(subject, "t2", np.where(outside, np.nan, data).astype(np.float32))

    volume = load_subject(subject)

    np.testing.assert_array_equal(volume.images["t2"], load_subject(phantom_subject_dir).images["t2"])
    note = next(n for n in volume.loading["notes"] if "NaN" in n)
    assert path.name in note and f"{int(outside.sum())} NaN voxels" in note and "read as 0" in note


def test_a_singular_affine_is_rejected_naming_the_file(subject):
    path = _file(subject, "t1")
    image = nib.load(path)
    header = image.header.copy()  # an all-zero sform that the header says to use
    header.set_qform(None, code=0)
    for row in ("srow_x", "srow_y", "srow_z"):
        header[row] = 0.0
    header["sform_code"] = 1
    nib.save(nib.Nifti1Image(image.get_fdata(dtype=np.float32), None, header), path)

    with pytest.raises(MRIInputError, match="affine .* is singular or not finite") as error:
        load_subject(subject)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("damage", ["random_bytes", "truncated"])
def test_corrupt_gzip_is_rejected_naming_the_file(subject, damage):
    path = _file(subject, "t1ce")
    content = path.read_bytes()
    path.write_bytes(np.random.default_rng(0).bytes(2000) if damage == "random_bytes" else content[: len(content) // 2])

    with pytest.raises(MRIInputError, match="cannot read image") as error:
        load_subject(subject)
    assert str(path) in str(error.value)


def test_default_subject_is_the_shipped_mni152_template_offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the default subject must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)

    volume = load_default_subject(resolution_mm=2)

    assert volume.name == "MNI152" and volume.modalities == ["t1"]
    assert volume.shape == (99, 117, 95) and volume.spacing == (2.0, 2.0, 2.0)
    assert volume.mask.dtype == bool and 0.1 < volume.mask.mean() < 0.5
    assert not volume.images["t1"][~volume.mask].any()  # skull-stripped
    assert volume.sources["t1"].startswith("nilearn:MNI152")
    with pytest.raises(MRIInputError, match="resolution_mm"):
        load_default_subject(resolution_mm=0)


# --- Real-world names, label conventions, DICOM, brain masks ----------------------------------------

BRATS2023_SUFFIXES = {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f", "seg": "seg"}


def _renamed_copy(source: Path, folder: Path, names: dict[str, str]) -> Path:
    """A copy of the phantom subject ``source`` in ``folder``, its ``<subject>_<key>.nii.gz`` files renamed to
    ``names[key]`` (keys not in ``names`` are left out)."""
    folder.mkdir(parents=True)
    for key, name in names.items():
        shutil.copyfile(_file(source, key), folder / name)
    return folder


def _digests(paths: list[Path]) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def _write_seg(path: Path, seg: np.ndarray) -> Path:
    return save_nifti(seg.astype(np.int16), nib.load(path).affine, path)


def test_brats2023_names_load_and_their_label_3_becomes_enhancing(phantom_subject_dir, tmp_path):
    subject = _renamed_copy(
        phantom_subject_dir,
        tmp_path / "BraTS-GLI-00000-000",
        {key: f"BraTS-GLI-00000-000-{suffix}.nii.gz" for key, suffix in BRATS2023_SUFFIXES.items()},
    )
    seg_path = subject / "BraTS-GLI-00000-000-seg.nii.gz"
    seg_2021 = nib.load(seg_path).get_fdata()
    assert 4 in seg_2021  # the phantom has an enhancing rim
    _write_seg(seg_path, np.where(seg_2021 == 4, 3, seg_2021))  # 2023: enhancing tumour is 3
    before = _digests(input_files(subject))

    volume = load_subject(subject)

    original = load_subject(phantom_subject_dir)
    assert volume.modalities == list(MODALITIES) and volume.reference == "t1"
    np.testing.assert_array_equal(volume.seg, original.seg)  # 3 -> 4: the same internal labels as the 2021 files
    for key in MODALITIES:
        np.testing.assert_array_equal(volume.images[key], original.images[key])
    convention = volume.loading["label_convention"]
    assert convention["convention"] == "brats2023" and convention["from"] == "naming"
    assert convention["mapping"] == {"0": 0, "1": 1, "2": 2, "3": 4}
    assert volume.loading["files"]["t1ce"] == str(subject / "BraTS-GLI-00000-000-t1c.nii.gz")
    assert _digests(input_files(subject)) == before  # inputs are never modified


def test_plain_names_load_case_insensitively(phantom_subject_dir, tmp_path):
    names = {"t1": "T1.nii.gz", "t1ce": "t1c.nii.gz", "t2": "T2.nii.gz", "flair": "FLAIR.nii.gz", "seg": "seg.nii.gz"}
    subject = _renamed_copy(phantom_subject_dir, tmp_path / "patient01", names)

    volume = load_subject(subject)

    assert volume.modalities == list(MODALITIES)
    assert {key: Path(path).name for key, path in volume.sources.items()} == names
    # No name says which challenge: {0, 1, 2, 4} can only be the 2021 convention.
    assert volume.loading["label_convention"]["from"] == "values"
    assert volume.loading["label_convention"]["convention"] == "brats2021"


def test_a_suffix_is_a_whole_token(phantom_subject_dir, tmp_path):
    names = {"t1ce": "scan_t1ce.nii.gz", "flair": "scan-t2f.nii.gz"}
    subject = _renamed_copy(phantom_subject_dir, tmp_path / "patient", names)

    volume = load_subject(subject, reference="t1ce")

    assert volume.modalities == ["t1ce", "flair"]  # neither t1 nor t2


def test_modality_globs_name_the_files_the_names_do_not(phantom_subject_dir, tmp_path):
    names = {"t1": "sub01_MPRAGE_1mm.nii.gz", "flair": "sub01_FLAIR_reg.nii.gz", "t2": "sub01_T2.nii.gz"}
    subject = _renamed_copy(phantom_subject_dir, tmp_path / "sub01", names)

    volume = load_subject(subject, modality_globs=["t1=*MPRAGE*", "flair=*FLAIR*.nii.gz"])

    assert volume.modalities == ["t1", "t2", "flair"]
    assert {key: Path(path).name for key, path in volume.sources.items()} == names
    assert load_subject(subject, reference="t2").modalities == ["t2"]  # without the globs only T2 is recognised


@pytest.mark.parametrize(
    "entry, expected",
    [
        ("t1=*mprage*", r"t1=\*mprage\* matches no file name in this folder \(fnmatch, case-sensitive\)"),
        ("t1=sub01_*", r"t1=sub01_\* matches 2 files \(sub01_MPRAGE.nii.gz, sub01_T2.nii.gz\)"),
        ("t1", r"--modality 't1': expected NAME=GLOB with NAME one of t1, t1ce, t2, flair, seg, mask"),
        ("pd=*PD*", r"--modality 'pd=\*PD\*': expected NAME=GLOB"),
        ("t1=", r"--modality 't1=': expected NAME=GLOB"),
    ],
    ids=["no_match", "several_matches", "no_equals", "unknown_name", "empty_glob"],
)
def test_bad_modality_globs_are_named(phantom_subject_dir, tmp_path, entry, expected):
    names = {"t1": "sub01_MPRAGE.nii.gz", "t2": "sub01_T2.nii.gz"}
    subject = _renamed_copy(phantom_subject_dir, tmp_path / "sub01", names)

    with pytest.raises(MRIInputError, match=expected) as error:
        load_subject(subject, modality_globs=[entry])
    if "match" in expected:
        assert str(subject) in str(error.value)


def test_a_brats2013_subject_keeps_its_four_tumour_labels(phantom_subject_dir, tmp_path):
    subject = _renamed_copy(
        phantom_subject_dir, tmp_path / "BraTS2013_HG_0001", {key: f"BraTS2013_HG_0001_{key}.nii.gz" for key in ROLES}
    )
    seg_path = subject / "BraTS2013_HG_0001_seg.nii.gz"
    seg = nib.load(seg_path).get_fdata()
    seg[(seg == 2) & (np.indices(seg.shape)[0] % 2 == 0)] = 3  # some non-enhancing tumour
    _write_seg(seg_path, seg)

    volume = load_subject(subject)

    assert set(np.unique(volume.seg)) == {0, 1, 2, 3, 4}
    np.testing.assert_array_equal(volume.to_scanner_space(volume.seg), seg)
    assert volume.loading["label_convention"]["convention"] == "brats2013"
    assert volume.loading["label_convention"]["from"] == "naming"


def test_label_values_decide_when_the_names_do_not_and_ambiguity_is_refused(phantom_subject_dir, tmp_path):
    subject = _renamed_copy(phantom_subject_dir, tmp_path / "patient", {"t1": "t1.nii.gz", "seg": "seg.nii.gz"})
    seg_path = subject / "seg.nii.gz"
    seg = nib.load(seg_path).get_fdata()

    _write_seg(seg_path, np.where(seg == 2, 3, seg))  # {0, 1, 3, 4}: 3 and 4 together only in 2013
    assert load_subject(subject).loading["label_convention"]["convention"] == "brats2013"

    _write_seg(seg_path, np.where(seg == 4, 3, seg))  # {0, 1, 2, 3}: 2023 enhancing or 2013 non-enhancing?
    with pytest.raises(MRIInputError, match=r"seg labels \[0, 1, 2, 3\] are ambiguous.*--label-convention") as error:
        load_subject(subject)
    assert str(seg_path) in str(error.value)
    volume = load_subject(subject, label_convention="brats2023")
    assert set(np.unique(volume.seg)) == {0, 1, 2, 4}
    assert volume.loading["label_convention"]["from"] == "argument"
    assert set(np.unique(load_subject(subject, label_convention="brats2013").seg)) == {0, 1, 2, 3}

    _write_seg(seg_path, seg)  # the 2021 labels, read as 2023 ones
    expected = r"seg labels \[4\] are not brats2023 labels; expected values in \[0, 1, 2, 3\]"
    with pytest.raises(MRIInputError, match=expected):
        load_subject(subject, label_convention="brats2023")
    with pytest.raises(MRIInputError, match="label_convention: expected one of"):
        load_subject(subject, label_convention="brats2019")


def test_fractional_seg_values_are_refused(phantom_subject_dir, tmp_path):
    subject = _renamed_copy(phantom_subject_dir, tmp_path / "patient", {"t1": "t1.nii.gz", "seg": "seg.nii.gz"})
    seg_path = subject / "seg.nii.gz"
    seg = nib.load(seg_path).get_fdata(dtype=np.float32)
    save_nifti(np.where(seg == 1, np.float32(0.5), seg), nib.load(seg_path).affine, seg_path)

    with pytest.raises(MRIInputError, match=r"seg labels \[0, 0.5, 2, 4\] fit no label convention") as error:
        load_subject(subject)
    assert str(seg_path) in str(error.value) and "brats2021 [0, 1, 2, 4]" in str(error.value)


# DICOM series are written slice by slice with SimpleITK, with the tags a scanner writes.

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def _write_dicom_series(
    folder: Path,
    data: np.ndarray,
    affine: np.ndarray,
    uid: str,
    description: str,
    prefix: str = "",
    suffix: str = ".dcm",
) -> Path:
    """``data`` (int16 [X, Y, Z] with voxel -> RAS mm ``affine``) as one DICOM file per Z slice in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    lps = np.diag([-1.0, -1.0, 1.0]) @ affine[:3]
    spacing = np.linalg.norm(lps[:, :3], axis=0)
    direction = lps[:, :3] / spacing
    image = sitk.GetImageFromArray(data.astype(np.int16).transpose(2, 1, 0))
    image.SetSpacing(spacing.tolist())
    image.SetDirection(direction.flatten().tolist())
    image.SetOrigin(lps[:, 3].tolist())
    writer = sitk.ImageFileWriter()
    writer.SetImageIO("GDCMImageIO")  # DICOM whatever the file name
    writer.KeepOriginalImageUIDOn()
    orientation = "\\".join(f"{v:.10f}" for v in (*direction[:, 0], *direction[:, 1]))
    for k in range(data.shape[2]):
        slice_image = image[:, :, k]
        tags = {
            "0008|0016": MR_IMAGE_STORAGE,
            "0008|0018": f"{uid}.{k + 1}",
            "0008|0060": "MR",
            "0008|103e": description,
            "0020|000d": "1.2.826.0.1.3680043.2.1125.9",
            "0020|000e": uid,
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))),
            "0020|0037": orientation,
            "0018|0050": f"{spacing[2]:.6f}",
            "0028|0030": f"{spacing[1]:.6f}\\{spacing[0]:.6f}",  # row spacing (along Y), column spacing (X)
        }
        for tag, value in tags.items():
            slice_image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{prefix}{k:03d}{suffix}"))
        writer.Execute(slice_image)
    return folder


def _scan(shape=(10, 12, 9), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 1000, size=shape).astype(np.int16)


def _affine(linear, offset=(10.0, -20.0, 30.0)) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = offset
    return affine


@pytest.mark.parametrize(
    "linear",
    [
        np.diag([-1.5, -1.5, 3.0]),  # axial, stored LPS-like
        np.array([[0.0, 0.0, -2.5], [1.5, 0.0, 0.0], [0.0, -3.0, 0.0]]),  # sagittal slices: permuted axes
        np.array([[0.8, -0.6, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0]])
        @ np.array([[1.0, 0.0, 0.0], [0.0, 0.96, -0.28], [0.0, 0.28, 0.96]])
        @ np.diag([1.2, 0.8, 2.0]),  # oblique: rotated about two axes
    ],
    ids=["axial", "sagittal", "oblique"],
)
@pytest.mark.parametrize("suffix", [".dcm", ""], ids=["dcm", "extensionless"])
def test_a_dicom_series_loads_like_the_nifti_it_came_from(tmp_path, linear, suffix):
    affine, data = _affine(linear), _scan()
    nifti = save_nifti(data, affine, tmp_path / "scan.nii.gz")
    uid = "1.2.826.0.1.3680043.2.1125.1"
    series = _write_dicom_series(tmp_path / "MR_T1", data, affine, uid, "T1 MPRAGE", prefix="IM", suffix=suffix)

    volume = load_subject(series)

    expected = load_subject(nifti)
    assert find_subjects(series) == [series]
    assert volume.name == "MR_T1" and volume.modalities == ["t1"] and volume.reference == "t1"
    np.testing.assert_array_equal(volume.images["t1"], expected.images["t1"])
    np.testing.assert_allclose(volume.affine, expected.affine, atol=1e-3)
    np.testing.assert_allclose(volume.scanner_affine, affine, atol=1e-3)
    assert volume.loading["format"] == "dicom" and volume.sources == {"t1": str(series)}
    assert volume.loading["dicom_series"] == {"uid": uid, "description": "T1 MPRAGE", "slices": 9}


def test_a_dicom_folder_with_a_brain_mask_beside_the_series(tmp_path):
    affine, data = _affine(np.diag([-1.5, -1.5, 3.0])), _scan()
    series = _write_dicom_series(tmp_path / "MR", data, affine, "1.2.3.4", "T1")
    brain = np.zeros(data.shape, dtype=np.uint8)
    brain[2:8, 3:9, 2:7] = 1
    mask_path = save_nifti(brain, affine, series / "brainmask.nii.gz")

    volume = load_subject(series, modality_globs=["t2=*T2*"])

    assert find_subjects(series) == [series] and volume.modalities == ["t1"]
    np.testing.assert_array_equal(volume.to_scanner_space(volume.mask), brain.astype(bool))
    assert volume.sources["mask"] == str(mask_path)
    assert "--modality t2=*T2* not used: a DICOM folder is one series, loaded as t1" in volume.loading["notes"]
    with pytest.raises(MRIInputError, match="a single DICOM file; expected the folder"):
        find_subjects(series / "000.dcm")


def test_a_root_of_dicom_folders_is_several_subjects(tmp_path):
    for index in range(2):
        _write_dicom_series(tmp_path / "root" / f"patient{index}", _scan(seed=index), _affine(np.eye(3)),
                            f"1.2.3.{index}", "T2")

    subjects = find_subjects(tmp_path / "root")

    assert [p.name for p in subjects] == ["patient0", "patient1"]
    volumes = load_subjects(tmp_path / "root", reference="t2")
    assert [v.modalities for v in volumes] == [["t2"], ["t2"]]


def test_two_series_in_one_folder_are_listed_and_series_picks_one(tmp_path):
    folder = tmp_path / "study"
    first, second = _scan(seed=1), _scan(shape=(10, 12, 7), seed=2)
    _write_dicom_series(folder, first, _affine(np.eye(3)), "1.2.3.100", "T1 axial", prefix="a")
    _write_dicom_series(folder, second, _affine(np.eye(3)), "1.2.3.200", "FLAIR axial", prefix="b")

    with pytest.raises(MRIInputError, match="2 DICOM series in one folder") as error:
        load_subject(folder)
    message = str(error.value)
    assert str(folder) in message and "--series" in message
    assert "1.2.3.100 ('T1 axial', 9 slices)" in message and "1.2.3.200 ('FLAIR axial', 7 slices)" in message

    volume = load_subject(folder, series="1.2.3.200", reference="flair")
    np.testing.assert_array_equal(volume.images["flair"], second)  # RAS-aligned grid: stored order
    assert volume.loading["dicom_series"]["uid"] == "1.2.3.200"
    with pytest.raises(MRIInputError, match=r"series '9.9' is not in this folder; series present: 1.2.3.100"):
        load_subject(folder, series="9.9")


def test_series_is_refused_for_a_folder_of_image_files(phantom_subject_dir):
    with pytest.raises(MRIInputError, match="--series only for a DICOM folder"):
        load_subject(phantom_subject_dir, series="1.2.3")


# Brain masks.


def _write_mask(path: Path, source: Path, array: np.ndarray | None = None) -> Path:
    """A mask file on the grid of ``source`` (default: ``source > 0``)."""
    image = nib.load(source)
    return save_nifti((image.get_fdata() > 0 if array is None else array).astype(np.uint8), image.affine, path)


def test_a_brain_mask_file_in_the_folder_is_the_mask(subject):
    mask_path = _write_mask(subject / "BraTS2021_00000_brain_mask_t1.nii.gz", _file(subject, "t1"))

    volume = load_subject(subject)

    # Never a modality image, though its last token is t1.
    assert volume.modalities == list(MODALITIES) and volume.sources["t1"] == str(_file(subject, "t1"))
    assert volume.mask.dtype == bool
    np.testing.assert_array_equal(volume.mask, volume.images["t1"] > 0)
    assert volume.sources["mask"] == str(mask_path)
    assert volume.loading["mask"] == {"file": str(mask_path), "from": "file name"}
    assert load_subject(subject, use_mask_files=False).mask is None
    assert mask_path in input_files(subject)


def test_a_mask_glob_and_a_mask_argument(subject, tmp_path):
    bet = _write_mask(subject / "t1_bet.nii.gz", _file(subject, "t1"))
    given = _write_mask(tmp_path / "given.nii.gz", _file(subject, "t1"))

    assert load_subject(subject, modality_globs=["mask=*_bet.nii.gz"]).sources["mask"] == str(bet)
    volume = load_subject(subject, mask=given)
    assert volume.loading["mask"] == {"file": str(given), "from": "argument"}
    assert input_files(subject, given)[-1] == given


def test_several_mask_files_are_named(subject):
    for name in ("brainmask.nii.gz", "BrainMask_v2.nii.gz"):
        _write_mask(subject / name, _file(subject, "t1"))

    with pytest.raises(MRIInputError, match="2 brain-mask files") as error:
        load_subject(subject)
    assert "brainmask.nii.gz" in str(error.value) and "BrainMask_v2.nii.gz" in str(error.value)


def test_a_mask_on_another_grid_is_refused_naming_both_grids(subject, tmp_path):
    coarse = nib.load(_file(subject, "t1")).slicer[::2, ::2, :]
    path = save_nifti((coarse.get_fdata() > 0).astype(np.uint8), coarse.affine, tmp_path / "coarse_mask.nii.gz")

    expected = r"mask grid \(20, 24, 36\) with affine .* differs from the grid \(40, 48, 36\) with affine"
    with pytest.raises(MRIInputError, match=expected) as error:
        load_subject(subject, mask=path)
    assert str(path) in str(error.value) and str(_file(subject, "t1")) in str(error.value)
    # Found in the subject folder, it is refused too (not silently resampled).
    found = Path(shutil.copy(path, subject / "brain_mask.nii.gz"))
    with pytest.raises(MRIInputError, match=expected) as error:
        load_subject(subject)
    assert str(found) in str(error.value)


@pytest.mark.parametrize(
    "values, expected",
    [(0, "mask is empty; expected brain voxels"), (255, r"mask values \[255.0\] are not 0 or 1.*--no-mask-files")],
    ids=["empty", "not_binary"],
)
def test_an_empty_or_non_binary_mask_is_refused(subject, values, expected):
    t1 = nib.load(_file(subject, "t1")).get_fdata()
    path = _write_mask(subject / "brainmask.nii.gz", _file(subject, "t1"), np.where(t1 > 0, values, 0))

    with pytest.raises(MRIInputError, match=expected) as error:
        load_subject(subject)
    assert str(path) in str(error.value)


def test_a_freesurfer_mri_folder_says_how_to_skip_its_brainmask_mgz(tmp_path, subject):
    t1 = nib.load(_file(subject, "t1"))
    folder = tmp_path / "mri"  # FreeSurfer's: brainmask.mgz is the skull-stripped T1, not a binary mask
    folder.mkdir()
    nib.save(nib.MGHImage(t1.get_fdata(dtype=np.float32), t1.affine), folder / "T1.mgz")
    nib.save(nib.MGHImage(t1.get_fdata(dtype=np.float32) * 0.9, t1.affine), folder / "brainmask.mgz")

    with pytest.raises(MRIInputError, match="--no-mask-files"):
        load_subject(folder)
    volume = load_subject(folder, use_mask_files=False)
    assert volume.modalities == ["t1"] and volume.mask is None and volume.name == "mri"
