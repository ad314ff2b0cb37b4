"""scripts/bench_subjects.py: the subject root of links, paired differences, and a tiny end-to-end run."""

from __future__ import annotations

import json

import bench_subjects
import numpy as np
import pytest
from PIL import Image

from mri_nerfstudio.errors import MRIInputError


def test_subject_root_links_each_scan_and_its_mask_and_changes_nothing(ixi_like_folder, tmp_path):
    before = sorted(p.name for p in ixi_like_folder.iterdir())
    names = bench_subjects.subject_root(ixi_like_folder, 2, tmp_path / "root")
    assert names == ["IXI900", "IXI901"]
    links = sorted((tmp_path / "root" / "IXI901").iterdir())
    assert [p.name for p in links] == ["IXI901-HH-0001_T1.nii.gz", "IXI901-HH-0001_brainmask.nii.gz"]
    assert all(p.is_symlink() for p in links)
    assert bench_subjects.subject_root(ixi_like_folder, 2, tmp_path / "root") == names  # a re-run reuses the links
    assert sorted(p.name for p in ixi_like_folder.iterdir()) == before
    with pytest.raises(MRIInputError, match="--subjects asks for 5"):
        bench_subjects.subject_root(ixi_like_folder, 5, tmp_path / "other")


def test_a_root_of_subject_folders_is_linked_folder_by_folder(phantom_root, tmp_path):
    names = bench_subjects.subject_root(phantom_root, 2, tmp_path / "root")

    assert names == ["BraTS2021_00000", "BraTS2021_00001"]
    assert [(tmp_path / "root" / name).resolve() for name in names] == [phantom_root / name for name in names]
    assert bench_subjects.subject_root(phantom_root, 2, tmp_path / "root") == names  # a re-run reuses the links
    with pytest.raises(MRIInputError, match="subject folders, --subjects asks for 99"):
        bench_subjects.subject_root(phantom_root, 99, tmp_path / "other")


def test_paired_differences_subtract_the_reference_arm_seed_by_seed():
    def run(arm, seed, psnr):
        group = {"psnr": psnr, "ssim": 0.9, "fid": 10.0, "kid": 0.01}
        groups = ("training subjects", "held-out subjects (model)", "held-out subjects (mean code)")
        scores = {name: group for name in groups}
        return {"arm": arm, "seed": seed, "arm_scores": scores}

    runs = [run("shipped", 0, 30.0), run("shipped", 1, 31.0), run("burst", 0, 29.0), run("burst", 1, 31.0),
            run("single", 0, 32.0)]
    differences = bench_subjects.paired_differences(runs, "shipped")
    assert differences["burst"]["seeds"] == [0, 1]
    assert differences["burst"]["training PSNR"] == pytest.approx(-0.5)
    assert differences["burst"]["training PSNR std"] == pytest.approx(np.std([-1.0, 0.0], ddof=1))
    assert differences["single"]["training PSNR"] == pytest.approx(2.0) and differences["single"]["seeds"] == [0]


def test_tiny_run_scores_every_part_and_branches_the_burst_off_the_shipped_run(ixi_like_folder, tmp_path, capsys):
    bench_subjects.main([
        "--data", str(ixi_like_folder), "--subjects", "3", "--held-out", "1", "--image-size", "16", "--steps", "6",
        "--arm-steps", "4", "--seeds", "0", "--arms", "shipped", "adversarial burst", "--fit-steps", "2",
        "--split", "val", "--arm-view-stride", "8", "--out", str(tmp_path),
    ])
    assert "paired differences against 'shipped'" in capsys.readouterr().out
    report = json.loads((tmp_path / "subjects.json").read_text())
    assert report["training_subjects"] == ["IXI900", "IXI901"] and report["held_out_subjects"] == ["IXI902"]
    assert [(run["arm"], run["steps"]) for run in report["runs"]] == [("shipped", 4), ("adversarial burst", 4)]
    assert report["full_run"]["steps"] == 6  # its own run: the arms train for --arm-steps
    full = report["full_scores"]["training subjects"]
    assert full["images"] == 2 * 14 and set(full["per_subject"]) == {"IXI900", "IXI901"}  # val: 14 views each
    assert 0 < full["psnr"] < 60 and np.isfinite(full["fid"]) and "volume_psnr" in full
    for group in ("held-out subjects (model)", "held-out subjects (mean code)"):
        held_out = report["full_scores"][group]
        assert held_out["images"] == 14 and 0 < held_out["psnr"] < 60 and np.isfinite(held_out["kid"])
        assert 0 < held_out["volume_psnr"] < 60
    assert set(report["runs"][0]["arm_scores"]) == {"training subjects", "held-out subjects (model)"}
    fits = report["held_out_fits"]["summary"]
    assert set(fits) == {"fit, 1 view", "fit, 15 views"}  # the starts are scored once, above
    assert report["held_out_fits"]["per_subject"][0]["fit, 15 views"]["views"] == 72 - 15
    assert "held-out (model) PSNR" in report["paired_differences"]["adversarial burst"]
    assert report["full_run"]["view_score_seconds"] < report["full_run"]["score_seconds"]
    assert Image.open(tmp_path / "subjects_IXI902.png").size[0] > 500
