"""Which files make a subject: the data files a header names (what a cache key must hash)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from mri_nerfstudio.subject_files import input_files
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
