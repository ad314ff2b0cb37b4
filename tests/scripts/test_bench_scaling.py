"""scripts/bench_scaling.py: 1 process against 2, and 1 with their batch, in one run (``--quick``); argument checks."""

from __future__ import annotations

import json

import bench_scaling
import pytest


def test_the_processes_must_divide_the_steps():
    for arguments in (["--processes", "3", "--steps", "1000"], ["--processes", "0"]):
        with pytest.raises(SystemExit):
            bench_scaling.parse_arguments(arguments)
    assert bench_scaling.parse_arguments(["--quick"]).steps == 8


def test_quick_run_trains_both_arms_on_the_same_rays(tmp_path):
    report = bench_scaling.main(["--quick", "--out", str(tmp_path), "--cache-dir", str(tmp_path / "cache")])
    stored = json.loads((tmp_path / "scaling.json").read_text())
    assert stored["summary"].keys() == {"1", "2", "1, 2x batch"}
    one, two, big = ([run for run in report["runs"] if run["arm"] == arm][0] for arm in ("1", "2", "1, 2x batch"))
    assert one["rays"] == two["rays"] == big["rays"]
    assert two["steps_per_process"] == big["steps_per_process"] == one["steps_per_process"] // 2
    assert big["rays_per_batch"] == 2 * one["rays_per_batch"] and big["processes"] == 1
    assert stored["rays_per_second_ratio"] > 0 and all(5 < run["held_out_psnr"] < 60 for run in report["runs"])
    assert "held_out_psnr_difference_same_batch_db" in stored
