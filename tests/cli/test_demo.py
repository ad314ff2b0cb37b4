"""mri-demo end to end at a tiny size: prepare, ns-train, ns-eval, ns-render, summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mri_nerfstudio.cli.demo import comparison_caveat, main, read_scores, score_table
from mri_nerfstudio.errors import MRIInputError

MRI_DEMO = Path(sys.executable).parent / "mri-demo"


def test_score_table_compares_with_the_reference():
    scores = {"psnr": 30.0, "psnr_std": 1.0, "ssim": 0.5, "ssim_std": 0.1, "fid": 100.0, "kid": 0.2, "volume_psnr": 20.0}
    psnr, ssim, fid, kid, volume_psnr = score_table(scores).splitlines()[1:]
    assert "30.000 +- 1.000" in psnr and "25.010" in psnr and psnr.endswith(" better")
    assert ssim.endswith("NOT better")
    assert "160.120" in fid and fid.endswith(" better")  # lower is better
    assert kid.endswith("NOT better")
    assert "20.000" in volume_psnr


def test_the_comparison_says_it_is_not_like_for_like():
    caveat = comparison_caveat({"psnr": 30.0, "fid": 50.0, "num_test_views": 43.0})
    assert caveat.startswith("NOT a like-for-like comparison")
    assert "noise-free template" in caveat and "scored on 43 test views" in caveat
    assert "FID and KID over 43 images" in caveat and "real BraTS 2021 patients" in caveat
    # A JSON from before the split (no view counts) still gets the caveat, without a count.
    assert "scored on its test views" in comparison_caveat({"psnr": 30.0})


def test_unreadable_scores_name_the_file(tmp_path):
    path = tmp_path / "eval.json"
    path.write_text("{}")
    with pytest.raises(MRIInputError, match="eval.json.*'results'"):
        read_scores(path)


def test_bad_settings_exit_with_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--out", str(tmp_path), "--iterations", "0"])
    assert exited.value.code == 2
    expected = ["error: --iterations must be >= 1 and --image-size >= 8, got 0, 128"]
    assert capsys.readouterr().err.strip().splitlines() == expected


@pytest.mark.slow
def test_demo_trains_evaluates_renders_and_reports(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    command = [str(MRI_DEMO), "--out", str(tmp_path / "demo"), "--image-size", "24", "--iterations", "30"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    (run,) = (tmp_path / "demo" / "runs" / "MNI152" / "mri-mednerf").iterdir()
    scores = json.loads((run / "eval.json").read_text())["results"]
    assert 10.0 < scores["psnr"] < 60.0 and 0.0 < scores["ssim"] <= 1.0
    for output in ("rgb", "gt-rgb", "volume"):
        assert len(list((run / "renders" / "test" / output).glob("*.png"))) == 43
    assert scores["num_test_views"] == 43 and scores["num_val_views"] == 14 and scores["num_train_views"] == 15
    assert f"{scores['psnr']:.3f} +- {scores['psnr_std']:.3f}" in result.stdout
    assert "evaluating on the 43 test views" in result.stdout
    assert "NOT a like-for-like comparison" in result.stdout and "scored on 43 test views" in result.stdout
    assert f"config:      {run / 'config.yml'}" in result.stdout
