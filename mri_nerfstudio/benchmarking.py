"""What the benchmark scripts share that needs no nerfstudio: the machine they ran on, evenly spaced view indices
and the ``--eval-split`` option (the shipped config they train is :mod:`mri_nerfstudio.nerf.training_config`).

The scripts (``scripts/bench_*.py``, ``scripts/gpu_check.py``) import it like any module of the package, and so
do the tests of the scripts.
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import torch


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else the machine type."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.machine()


def machine_info() -> dict:
    """What the figures depend on: platform, cores, torch, device and the load average at the time of the call."""
    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "load_average": os.getloadavg(),
    }


def evenly_spaced(total: int, count: int) -> list[int]:
    """``count`` indices spread evenly over ``0 .. total - 1`` (all ``total`` of them when ``count`` is larger)."""
    return torch.linspace(0, total - 1, min(count, total)).round().long().tolist()


def add_eval_split_argument(parser: argparse.ArgumentParser) -> None:
    """``--eval-split test|val``: the held-out views a benchmark scores (test unless it chooses settings)."""
    parser.add_argument(
        "--eval-split",
        choices=["test", "val"],
        default="test",
        help="held-out views scored: test (reported figures; 43 of 72 views with the defaults) or val (14: "
        "the views to choose settings on)",
    )
