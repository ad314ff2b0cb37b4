"""scripts/gpu_check.py: loss windows and the noise-based verdict; the CPU-vs-CUDA comparison itself on a GPU."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import gpu_check
import pytest
import torch


def _run(psnr: float, losses: list[float]) -> dict:
    return {"psnr": psnr, "losses": losses}


def test_loss_windows_average_consecutive_steps():
    assert gpu_check.loss_windows([1.0, 3.0, 2.0, 4.0, 5.0], window=2) == [2.0, 3.0, 5.0]


def test_verdict_tolerates_the_seed_to_seed_noise_and_not_more():
    cpu, other_seed = _run(30.0, [0.1] * 40), _run(29.0, [0.12] * 40)  # noise: 1 dB, 20 % of the loss
    close = gpu_check.compare(cpu, other_seed, _run(31.5, [0.13] * 40), window=20, psnr_floor=0.5, loss_floor=0.15)
    assert close["ok"] and close["psnr_tolerance_db"] == 2.0
    far = gpu_check.compare(cpu, other_seed, _run(27.0, [0.1] * 40), window=20, psnr_floor=0.5, loss_floor=0.15)
    assert not far["ok"]
    diverged = gpu_check.compare(cpu, other_seed, _run(30.0, [0.1] * 20 + [0.2] * 20), 20, 0.5, 0.15)
    assert not diverged["ok"] and diverged["loss_window_relative_difference"][1] == pytest.approx(1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: compares the CPU and CUDA code paths")
def test_cuda_and_cpu_reach_the_same_quality(tmp_path):
    # The embedded template, not a phantom: GPU machines may lack SimpleITK, which phantoms and preparation
    # need; there $MRI_NERFSTUDIO_CACHE holds the template prepared elsewhere at 32 px (BENCHMARKS.md).
    cache = Path(os.environ["MRI_NERFSTUDIO_CACHE"]) if os.environ.get("MRI_NERFSTUDIO_CACHE") else tmp_path / "cache"
    args = argparse.Namespace(
        data="default", config="fast", image_size=32, steps=100, window=20, eval_views=8,
        psnr_floor_db=0.5, loss_floor=0.15, out=tmp_path, cache_dir=cache,
    )  # fmt: skip
    cpu, other_seed, cuda = (gpu_check.train_and_score(args, d, s) for d, s in (("cpu", 0), ("cpu", 1), ("cuda", 0)))
    verdict = gpu_check.compare(cpu, other_seed, cuda, args.window, args.psnr_floor_db, args.loss_floor)
    assert cuda["psnr"] > 20.0 and verdict["ok"], (cpu["psnr"], other_seed["psnr"], cuda["psnr"], verdict)
