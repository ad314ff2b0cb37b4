from __future__ import annotations

import shutil
import socket
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.volume import (
    MODALITIES,
    find_subjects,
    load_default_subject,
    load_subject,
    load_subjects,
    save_nifti,
)


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


def test_missing_reference_names_the_folder_and_what_was_found(subject):
    _file(subject, "t1").unlink()

    with pytest.raises(MRIInputError) as error:
        load_subject(subject)
    message = str(error.value)
    assert str(subject) in message and "'t1'" in message and "t1ce" in message and "flair" in message


def test_modalities_not_present_or_without_the_reference_are_rejected(phantom_subject_dir):
    with pytest.raises(MRIInputError, match="pd"):
        load_subject(phantom_subject_dir, modalities=["t1", "pd"])
    with pytest.raises(MRIInputError, match="reference modality 't1'"):
        load_subject(phantom_subject_dir, modalities=["t2"])


@pytest.mark.parametrize(
    "key, array, expected",
    [
        ("t2", np.ones((8, 9), dtype=np.float32), r"shape \(8, 9\)"),
        ("t2", np.ones((8, 9, 10, 2), dtype=np.float32), r"shape \(8, 9, 10, 2\)"),
        ("t2", np.full((8, 9, 10), np.nan, dtype=np.float32), "non-finite"),
        ("flair", np.zeros((40, 48, 36), dtype=np.float32), "all zero"),
        ("seg", np.full((40, 48, 36), 3, dtype=np.int16), r"seg labels \[3\]"),
    ],
    ids=["2d", "4d", "nan", "all_zero", "seg_labels"],
)
def test_bad_images_are_rejected_naming_the_file(subject, key, array, expected):
    path = _rewrite(subject, key, array, np.eye(4))

    with pytest.raises(MRIInputError, match=expected) as error:
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
