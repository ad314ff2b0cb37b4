"""The shipped ``mri-mednerf`` config on one subject, as the benchmarks and the tests train it: one recipe.

:func:`shipped_config` copies this machine's method (:func:`this_machines_method`) and points it at the
data, view size, cache, preset (its learning rate follows) and device asked for; :func:`preset_session` and :func:`named_config` are the two ways
several benchmark scripts start from it.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from nerfstudio.engine.trainer import TrainerConfig

from mri_nerfstudio.nerf.method_config import mri_mednerf, mri_mednerf_gpu
from mri_nerfstudio.nerf.session import TrainingSession
from mri_nerfstudio.prepare import DEFAULT_SUBJECT, PrepareConfig, default_cache_dir

CONFIGURATIONS: dict[str, tuple[str, bool]] = {
    "mednerf": ("mednerf", False),
    "fast": ("cpu", True),
    "grid": ("cpu", False),
}
"""The speed benchmark's configurations: name -> (model preset, empty-space skipping)."""


def this_machines_method() -> TrainerConfig:
    """A copy of the shipped method for this machine: ``mri-mednerf-gpu`` where CUDA is available, else
    ``mri-mednerf`` (each with its preset, device and steps)."""
    return copy.deepcopy((mri_mednerf_gpu if torch.cuda.is_available() else mri_mednerf).config)


def shipped_config(
    data: str | Path | None,
    image_size: int,
    cache_dir: Path | None = None,
    *,
    preset: str | None = None,
    device: str | None = None,
    **prepare: Any,
) -> TrainerConfig:
    """A copy of this machine's shipped method (:func:`this_machines_method`), changed only where asked.

    Args:
        data: a subject, BraTS root or volume file; None (or ``"default"``): the embedded MNI152 template.
        image_size: view size in pixels; the training patches (32 x 32 shipped) are made no larger.
        cache_dir: the prepared subjects' cache; None: :func:`~mri_nerfstudio.prepare.default_cache_dir`.
        preset: the model preset (``cpu`` or ``mednerf``; the field's learning rate follows it); None: the
            method's.
        device: ``machine.device_type`` (``cpu`` or ``cuda``); None: the method's (CUDA when visible).
            Mixed precision stays the method's setting (on when CUDA is visible).
        prepare: other :class:`~mri_nerfstudio.prepare.PrepareConfig` fields.
    """
    config = this_machines_method()
    if preset is not None:
        config.pipeline.model.preset = preset
    if device is not None:
        config.machine.device_type = device
    datamanager = config.pipeline.datamanager
    datamanager.patch_size = min(datamanager.patch_size, image_size)
    dataparser = datamanager.dataparser
    dataparser.data = Path(DEFAULT_SUBJECT) if data is None else Path(data)
    dataparser.prepare = PrepareConfig(image_size=image_size, **prepare)
    dataparser.cache_dir = default_cache_dir() if cache_dir is None else Path(cache_dir)
    return config


def named_config(
    name: str, data: str | Path | None, image_size: int, device: str, cache_dir: Path | None = None
) -> TrainerConfig:
    """:func:`shipped_config` for one of :data:`CONFIGURATIONS` on ``device``, with mixed precision on CUDA only."""
    preset, skip_empty_space = CONFIGURATIONS[name]
    config = shipped_config(data, image_size, cache_dir, preset=preset, device=device)
    config.mixed_precision = device == "cuda"
    config.pipeline.model.skip_empty_space = skip_empty_space
    return config


def preset_session(
    preset: str, args: argparse.Namespace, configure: Callable[[TrainerConfig], None] | None = None
) -> TrainingSession:
    """A session of :func:`shipped_config` with ``preset`` on ``args.data`` at ``args.image_size`` px
    (``args.cache_dir``), seeded with ``args.seed``, its runs under ``args.out / "runs"`` and scored on
    ``args.eval_split``; ``configure`` may change the config further before the session is set up."""
    config = shipped_config(args.data, args.image_size, args.cache_dir, preset=preset)
    if configure is not None:
        configure(config)
    torch.manual_seed(args.seed)
    return TrainingSession(config, args.out / "runs", eval_split=args.eval_split)
