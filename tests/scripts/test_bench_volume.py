"""scripts/bench_volume.py: view counts on the orbit, the 15-view goal, and a tiny end-to-end run (``--quick``)."""

from __future__ import annotations

import json
import math

import bench_volume
import numpy as np
import pytest

from mri_nerfstudio.prepare import PrepareConfig
from mri_nerfstudio.view_split import orbit_view_split
from mri_nerfstudio.views import make_orbit_cameras


def test_view_counts_are_every_nth_view_of_the_orbit():
    assert {n: bench_volume.train_every(n) for n in (1, 4, 8, 15, 36, 72)} == {1: 72, 4: 18, 8: 9, 15: 5, 36: 2, 72: 1}
    for count in (0, 5, 10, 73):
        with pytest.raises(SystemExit, match="--views"):
            bench_volume.train_every(count)


def test_all_72_views_are_the_even_views_of_a_144_view_orbit():
    """The field needs held-out views: with all 72 it trains on the even views of an orbit at 2.5 degrees."""
    assert bench_volume.field_orbit(15) == (72, 5.0, 5)
    n_views, step_deg, every = bench_volume.field_orbit(72)
    split = orbit_view_split(PrepareConfig(n_views=n_views, step_deg=step_deg), every)
    dense = make_orbit_cameras(n_views=n_views, step_deg=step_deg)
    np.testing.assert_allclose(dense.c2w[list(split.train)], make_orbit_cameras().c2w, atol=1e-6)
    assert split.test and all(view % 2 == 1 for view in split.test)


def _row(arm: str, psnr: float, held_out: float | None = None) -> dict:
    return {"arm": arm, "views": 15, "volume_psnr": psnr, "volume_ssim": 0.5, "held_out_psnr": held_out}


def test_goal_compares_the_better_field_arm_with_the_best_classical_arm():
    rows = [
        _row("field free", 16.0, 35.0), _row("field tied", 17.5, 34.8),
        _row("fbp", 15.0), _row("sart", 16.2), _row("tv grid", 16.4, 36.0),
    ]  # fmt: skip
    goal = bench_volume.goal(rows)
    assert (goal["field_arm"], goal["best_classical_arm"], goal["met"]) == ("field tied", "tv grid", True)
    assert goal["margin_db"] == pytest.approx(1.1)
    assert goal["tied_minus_free_volume_psnr_db"] == pytest.approx(1.5)
    assert goal["tied_minus_free_held_out_psnr_db"] == pytest.approx(-0.2)
    assert bench_volume.goal([{**row, "views": 4} for row in rows]) is None


def test_quick_run_scores_every_arm(tmp_path):
    out = tmp_path / "bench"
    bench_volume.main(
        ["--quick", "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--runs-dir", str(tmp_path / "runs")]
    )
    report = json.loads((out / "volume.json").read_text())
    assert {"command", "date", "wall_seconds", "machine", "load_average_at_end", "settings", "subjects"} <= set(report)
    assert len(report["machine"]["load_average"]) == 3
    (subject,) = report["subjects"]
    assert subject["subject"] == "MNI152" and subject["mask_voxels"] > 0
    assert [(row["arm"], row["views"]) for row in subject["rows"]] == [(arm, 15) for arm in bench_volume.ARMS]
    for row in subject["rows"]:
        assert math.isfinite(row["volume_psnr"]) and 0.0 < row["volume_psnr"] < 60.0, row
        assert -1.0 <= row["volume_ssim"] <= 1.0, row
        if row["arm"] in ("field free", "field tied", "tv grid"):
            assert math.isfinite(row["held_out_psnr"]) and 0.0 < row["held_out_psnr"] < 80.0, row
            assert len(row["runs"]) == 1 and row["runs"][0]["seed"] == 0
        else:
            assert row["held_out_psnr"] is None
    assert set(subject["goal_at_15_views"]) >= {"field_arm", "best_classical_arm", "margin_db", "met"}
    assert (out / "volume_15views.png").stat().st_size > 0
    assert not list(out.glob("*.tmp*"))
