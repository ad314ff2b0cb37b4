"""Which files make a subject: the data files a header names (what a cache key must hash), BIDS layouts."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.subject_files import (
    find_subjects,
    input_files,
    select_subjects,
    subject_files,
    subject_name,
)
from mri_nerfstudio.volume import load_subject


def test_input_files_include_the_data_files_of_a_header(tmp_path):
    image = sitk.GetImageFromArray(np.arange(10 * 12 * 9, dtype=np.int16).reshape(9, 12, 10))
    for header in (tmp_path / "mhd" / "scan.mhd", tmp_path / "nrrd" / "scan.nhdr"):
        header.parent.mkdir()
        sitk.WriteImage(image, str(header))  # a header and scan.raw beside it

        files = input_files(header)

        assert files == [header, header.parent / "scan.raw"]
        assert input_files(header, tmp_path / "mask.nii.gz") == [*files, tmp_path / "mask.nii.gz"]
        assert input_files(header.parent) == sorted(files)
    mhd, nrrd = load_subject(tmp_path / "mhd" / "scan.mhd"), load_subject(tmp_path / "nrrd" / "scan.nhdr")
    np.testing.assert_array_equal(mhd.images["t1"], nrrd.images["t1"])


def test_input_files_of_data_file_lists(tmp_path):
    mhd = tmp_path / "list.mhd"
    mhd.write_text("ObjectType = Image\nNDims = 3\nDimSize = 2 2 2\nElementType = MET_SHORT\nElementDataFile = LIST\n"
                   "a.raw\nb.raw\n")
    nhdr = tmp_path / "pattern.nhdr"
    nhdr.write_text("NRRD0004\ntype: short\ndimension: 3\nsizes: 2 2 2\nencoding: raw\ndatafile: s%02d.raw 1 3 1\n")
    local = tmp_path / "local.mhd"
    local.write_text("ObjectType = Image\nElementDataFile = LOCAL\n")

    assert input_files(mhd) == [mhd, tmp_path / "a.raw", tmp_path / "b.raw"]
    assert input_files(nhdr) == [nhdr, *(tmp_path / f"s{i:02d}.raw" for i in (1, 2, 3))]
    assert input_files(local) == [local]


def _bids_dataset(root, phantom_subject_dir):
    """A BIDS dataset of the phantom's images: sub-01 without sessions, sub-02 with two, sidecars, derivatives."""
    files = {
        "sub-01/anat/sub-01_T1w": "t1",
        "sub-01/anat/sub-01_ce-gadolinium_T1w": "t1ce",
        "sub-01/anat/sub-01_FLAIR": "flair",
        "sub-02/ses-1/anat/sub-02_ses-1_T1w": "t1",
        "sub-02/ses-2/anat/sub-02_ses-2_T2w": "t2",
        "derivatives/tool/sub-01/anat/sub-01_desc-preproc_T1w": "t1",
    }
    for stem, key in files.items():
        path = root / f"{stem}.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(phantom_subject_dir / f"{phantom_subject_dir.name}_{key}.nii.gz", path)
        path.with_name(f"{path.name[:-len('.nii.gz')]}.json").write_text('{"RepetitionTime": 2.3}')
    (root / "dataset_description.json").write_text('{"Name": "tiny", "BIDSVersion": "1.8.0"}')
    return root


def test_a_bids_dataset_has_one_subject_per_anat_folder(tmp_path, phantom_subject_dir):
    root = _bids_dataset(tmp_path / "bids", phantom_subject_dir)
    sessions = [root / "sub-02" / "ses-1" / "anat", root / "sub-02" / "ses-2" / "anat"]

    subjects = find_subjects(root)

    assert subjects == [root / "sub-01" / "anat", *sessions]  # derivatives are not subjects
    assert [subject_name(s) for s in subjects] == ["sub-01", "sub-02_ses-1", "sub-02_ses-2"]
    assert find_subjects(root / "sub-02") == sessions
    assert find_subjects(root / "sub-01") == [root / "sub-01" / "anat"]
    assert subject_name(root / "sub-01" / "anat" / "sub-01_T1w.nii.gz") == "sub-01_T1w"


def test_bids_suffixes_and_the_contrast_entity_give_the_roles(tmp_path, phantom_subject_dir):
    anat = _bids_dataset(tmp_path / "bids", phantom_subject_dir) / "sub-01" / "anat"

    roles = subject_files(anat).roles

    assert {role: path.name for role, path in roles.items()} == {
        "t1": "sub-01_T1w.nii.gz",
        "t1ce": "sub-01_ce-gadolinium_T1w.nii.gz",
        "flair": "sub-01_FLAIR.nii.gz",
    }
    volume = load_subject(anat)
    assert volume.name == "sub-01" and volume.modalities == ["t1", "t1ce", "flair"]
    np.testing.assert_array_equal(volume.images["t1ce"], load_subject(phantom_subject_dir).images["t1ce"])


def test_subjects_are_selected_by_count_in_name_order_or_by_name(tmp_path):
    names = ["c", "a", "b"]

    assert select_subjects(names, (), "subjects") == [0, 1, 2]
    assert select_subjects(names, ("2",), "subjects") == [1, 2]  # a and b, kept in the data's order
    assert select_subjects(names, ("c", "a"), "subjects") == [0, 1]
    with pytest.raises(MRIInputError, match=r"train_subjects: 4 requested, expected 1..3") as error:
        select_subjects(names, ("4",), "train_subjects", tmp_path)
    assert str(tmp_path) in str(error.value)
    many = [f"s{i:04d}" for i in range(1251)]  # BraTS 2021's size: the error lists ten, and the count
    with pytest.raises(MRIInputError, match=r"\['x'\] not in the data; its subjects are s0000, .*s0009, \.\.\. \(1251"):
        select_subjects(many, ("x",), "subjects")
