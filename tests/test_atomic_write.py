"""Atomic writes: the temporary file keeps the suffixes, is unique per call and never outlives the write."""

from __future__ import annotations

import json

import pytest

from mri_nerfstudio.atomic_write import write_atomically, write_json


def test_the_temporary_name_is_hidden_keeps_the_suffixes_and_is_unique(tmp_path):
    path, names = tmp_path / "volume.nii.gz", []

    def write(tmp):
        names.append(tmp.name)
        tmp.write_text("x")

    write_atomically(path, write)
    write_atomically(path, write)

    assert names[0] != names[1] and all(n.startswith(".volume.nii.gz.") and n.endswith(".tmp.nii.gz") for n in names)
    assert [p.name for p in tmp_path.iterdir()] == ["volume.nii.gz"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path):
    path = tmp_path / "scores.json"
    path.write_text("old")

    def fail(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomically(path, fail)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["scores.json"]


def test_write_json_indents_ends_with_a_newline_and_makes_the_folder(tmp_path):
    path = tmp_path / "new" / "report.json"
    write_json(path, {"psnr": 30.5, "views": [1, 2]})

    assert path.read_text().endswith("}\n") and json.loads(path.read_text()) == {"psnr": 30.5, "views": [1, 2]}
    assert '\n  "psnr": 30.5' in path.read_text()
    with pytest.raises(ValueError):
        write_json(path, {"psnr": float("nan")}, allow_nan=False)
    assert json.loads(path.read_text())["psnr"] == 30.5
