"""scripts/bench_speed.py's helpers: scoring steps, first point reaching a PSNR, speed-ups, the comparison rows."""

from __future__ import annotations

import bench_speed
import pytest


def _curve(points: list[tuple[int, float, float]]) -> list[dict]:
    """(step, seconds, psnr) -> scored points (CPU seconds = 2 x wall: two busy threads)."""
    return [{"step": s, "train_seconds": t, "cpu_seconds": 2 * t, "psnr": p} for s, t, p in points]


def test_geometric_steps_start_at_zero_grow_and_end_at_the_budget():
    steps = bench_speed.geometric_steps(100, growth=1.5)
    assert steps[:4] == [0, 1, 2, 3] and steps[-1] == 100
    assert all(b > a for a, b in zip(steps, steps[1:])) and len(steps) < 15
    with pytest.raises(ValueError, match="growth"):
        bench_speed.geometric_steps(10, growth=1.0)


def test_first_reaching_skips_the_untrained_field():
    curve = _curve([(0, 0.0, 26.0), (1, 0.5, 20.0), (5, 2.0, 25.5), (9, 4.0, 31.0)])
    assert bench_speed.first_reaching(curve, 25.0)["step"] == 5
    assert bench_speed.first_reaching(curve, 30.0)["step"] == 9
    assert bench_speed.first_reaching(curve, 35.0) is None


def test_comparison_gives_speedups_at_each_target_and_at_the_references_best():
    reference = {"curve": _curve([(0, 0.0, 10.0), (10, 40.0, 14.0), (20, 80.0, 16.0)])}
    fast = {"curve": _curve([(0, 0.0, 12.0), (2, 0.8, 16.5), (50, 20.0, 31.0)])}
    rows = bench_speed.comparison(reference, fast, targets=[25.0, 30.0], matched_psnr=16.0)
    by_target = {row["target"]: row for row in rows}
    assert by_target["25 dB"]["reference"] is None and by_target["25 dB"]["wall_speedup"] is None
    assert by_target["30 dB"]["fast"]["step"] == 50
    matched = rows[-1]
    assert matched["target"].startswith("16.00 dB")
    assert matched["wall_speedup"] == pytest.approx(100.0) and matched["step_ratio"] == pytest.approx(10.0)
    assert "not reached" in bench_speed.table(
        [
            {"name": n, "parameters": 1, "steps": 2, "iterations_per_second": 1.0, "render_rays_per_second": 10.0,
             "best_psnr": 16.0, "peak_cuda_bytes": None}
            for n in ("mednerf", "fast")
        ],
        rows,
        device="cpu",
    )  # fmt: skip
