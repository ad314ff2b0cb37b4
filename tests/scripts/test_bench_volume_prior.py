"""scripts/bench_volume_prior.py: held-out subjects of a tiny model, each arm's volume scored, and the grid ceiling."""

from __future__ import annotations

import json

import bench_volume_prior
import numpy as np
import pytest
from bench_subjects import subject_root

from mri_nerfstudio.metrics import volume_fidelity
from mri_nerfstudio.prepare import PrepareConfig, prepare_subjects


def test_tiny_run_scores_every_arm_on_each_held_out_subject(ixi_like_folder, tmp_path, capsys):
    report = bench_volume_prior.main([
        "--data", str(ixi_like_folder), "--training-subjects", "2", "--held-out", "2", "--image-size", "16",
        "--steps", "4", "--fit-steps", "2", "--tv-steps", "2", "--out", str(tmp_path),
    ])
    assert "prior fit - tv grid" in capsys.readouterr().out
    stored = json.loads((tmp_path / "volume_prior.json").read_text())
    assert [row["subject"] for row in stored["per_subject"]] == ["IXI902", "IXI903"]
    assert stored["training_subjects"] == ["IXI900", "IXI901"] and len(stored["train_views"]) == 15
    for row in stored["per_subject"]:
        assert set(row["arms"]) == set(bench_volume_prior.ARMS)
        for scores in row["arms"].values():
            assert 0 < scores["volume_psnr"] < 80 and -1 <= scores["volume_ssim"] <= 1
    summary = report["summary"]
    arms = [row["arms"] for row in stored["per_subject"]]
    margins = [a["prior fit"]["volume_psnr"] - a["tv grid"]["volume_psnr"] for a in arms]
    assert summary["prior_fit_minus_tv_grid_db"] == pytest.approx(np.mean(margins))
    # The truth read back through a grid beats every estimate made from a few steps on 16 px views.
    for arm in ("mean subject", "prior fit", "tv grid"):
        assert summary["grid ceiling"]["volume_psnr"] > summary[arm]["volume_psnr"]


def test_the_grid_ceiling_rises_with_the_grid_resolution(ixi_like_folder, tmp_path):
    (name,) = subject_root(ixi_like_folder, 1, tmp_path / "root")
    (prepared,) = prepare_subjects(tmp_path / "root" / name, tmp_path / "cache", PrepareConfig(image_size=16))
    reference, mask = prepared.volume.images[prepared.volume.reference], prepared.volume.brain_mask()
    coarse, fine = (
        volume_fidelity(bench_volume_prior.grid_ceiling(prepared, size), reference, mask)["volume_psnr"]
        for size in (9, 65)
    )
    assert fine > coarse + 1.0
