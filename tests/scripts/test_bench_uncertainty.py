"""scripts/bench_uncertainty.py: a tiny end-to-end run (``--quick``) writes its table's JSON and figure."""

from __future__ import annotations

import json

import bench_uncertainty
import numpy as np
import pytest
from PIL import Image


def test_the_calibrated_weight_makes_each_decile_a_gaussian_spread():
    # Errors half again as large as sqrt(2 / pi) * sigma at the shipped weight: the weight grows by 1.5 ** 2.
    deciles = [{"uncertainty": u, "abs_error": 1.5 * np.sqrt(2 / np.pi) * u} for u in np.linspace(0.02, 0.15, 10)]
    fitted = bench_uncertainty.calibrated_blend_weight(deciles)
    assert fitted == pytest.approx(2.25 * bench_uncertainty.BLEND_WEIGHT)


def test_quick_run_scores_every_arm_on_the_test_subjects(tmp_path, capsys):
    report = bench_uncertainty.main(["--quick", "--out", str(tmp_path), "--cache-dir", str(tmp_path / "cache")])
    assert "blend + ensemble" in capsys.readouterr().out
    stored = json.loads((tmp_path / "uncertainty.json").read_text())
    assert stored["test_summary"].keys() == report["test_summary"].keys() == set(bench_uncertainty.ARMS)
    for arm in bench_uncertainty.ARMS:
        assert -1.0 <= stored["test_summary"][arm]["spearman"] <= 1.0
        assert len(stored["test_summary"][arm]["deciles"]) == 10
    # The oracle (the true error, smoothed) ranks the error better than any map made without it.
    assert stored["test_summary"]["oracle"]["spearman"] > stored["test_summary"]["ensemble"]["spearman"]
    assert stored["calibrated_blend_weight"] > 0
    assert stored["seconds_per_subject"]["ensemble"] > 0
    assert Image.open(tmp_path / "uncertainty.png").size[0] > 1000


def test_conditional_run_scores_the_population_term_on_held_out_subjects(ixi_like_folder, tmp_path):
    report = bench_uncertainty.main([
        "--conditional", "--ixi", str(ixi_like_folder), "--training-subjects", "2", "--held-out", "2",
        "--validation", "1", "--image-size", "16", "--steps", "4", "--fit-steps", "2", "--out", str(tmp_path),
    ])
    stored = json.loads((tmp_path / "uncertainty_conditional.json").read_text())
    assert stored["validation_subjects"] == ["IXI902"] and [row["subject"] for row in stored["subjects"]] == [
        "IXI902", "IXI903"]
    assert set(report["test_summary"]) == set(bench_uncertainty.CONDITIONAL_ARMS)
    for arm in bench_uncertainty.CONDITIONAL_ARMS:
        assert -1.0 <= stored["test_summary"][arm]["spearman"] <= 1.0
    row = stored["subjects"][1]
    assert row["seconds"]["population"] > 0 and 0 < row["volume_psnr"] < 60
    # The combined map is never below either of its terms.
    deciles = row["arms"]["blend + population"]["deciles"]
    assert deciles[-1]["uncertainty"] >= row["arms"]["population"]["deciles"][-1]["uncertainty"] - 1e-6
    assert Image.open(tmp_path / "uncertainty_conditional.png").size[0] > 500
    with pytest.raises(SystemExit):
        bench_uncertainty.parse_arguments(["--conditional", "--held-out", "2", "--validation", "2"])
