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
