"""nerfstudio's own :class:`Trainer`, driven one step at a time in this process.

What it is for: training in this process, without ``ns-train``. Its users are

- ``mri-export --uncertainty-members N``: the ensemble's short fits
  (:func:`~mri_nerfstudio.nerf.ensemble.train_ensemble`);
- :func:`~mri_nerfstudio.nerf.distributed.train_and_record`, the per-rank training of the multi-process
  tests and ``scripts/bench_scaling.py``;
- the benchmarks (``scripts/bench_*.py``, ``scripts/gpu_check.py``) and the tests (``tests/conftest.py``'s
  trained run and most tests of ``mri_nerfstudio/nerf``).

It stays in the package, beside the Trainer glue, because ``mri-export`` needs it. They all need what
``ns-train`` does (the same optimizers, schedulers, gradient scaler and training callbacks, e.g. the
density-noise decay) but with held-out scores taken between steps and without a viewer or writer.
:class:`TrainingSession` is that: ``Trainer.train_iteration`` wrapped with the callbacks the Trainer would
run around it, and the Trainer's own checkpoint save and resume. Its held-out views are the test split by
default (what benchmarks report); ``eval_split="val"`` scores the val split instead, the one to choose
settings on (:mod:`mri_nerfstudio.view_split`).
"""

from __future__ import annotations

import copy
import random
import time
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
from nerfstudio.engine.callbacks import TrainingCallbackLocation
from nerfstudio.engine.trainer import Trainer, TrainerConfig

from mri_nerfstudio.errors import MRIInputError


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's generators, as ``ns-train`` does before it sets up a Trainer."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class TrainingSession:
    """A :class:`Trainer` set up from ``config`` (a copy; ``vis`` is forced to ``tensorboard``: no viewer).

    Args:
        config: e.g. ``mri_mednerf.config`` with its fields changed.
        output_dir: where the Trainer creates its run folder (only :meth:`save_checkpoint` writes there).
        load_dir: a checkpoint folder (``.../nerfstudio_models``) to resume from: its latest checkpoint
            is loaded as ``ns-train --load-dir`` does (pipeline, optimizers, schedulers, gradient scaler)
            and steps continue from the one after it.
        eval_split: the views of the eval dataset, which :meth:`evaluate` scores: ``test`` (what
            ``ns-eval`` reports) or ``val`` (what ``ns-train`` evaluates, to choose settings on).
        local_rank, world_size: this process in a torch.distributed process group (initialised by the
            caller, e.g. :func:`~mri_nerfstudio.nerf.distributed.distributed_worker`); the defaults: none.
    """

    def __init__(
        self,
        config: TrainerConfig,
        output_dir: Path,
        load_dir: Path | None = None,
        eval_split: Literal["test", "val"] = "test",
        local_rank: int = 0,
        world_size: int = 1,
    ):
        if eval_split not in ("test", "val"):
            raise MRIInputError(f"eval_split must be 'test' or 'val', got {eval_split!r}")
        config = copy.deepcopy(config)
        config.vis = "tensorboard"
        config.output_dir = Path(output_dir)
        config.load_dir = None if load_dir is None else Path(load_dir)
        config.set_timestamp()
        self.trainer: Trainer = config.setup(local_rank=local_rank, world_size=world_size)
        self.trainer.setup(test_mode=eval_split)
        self.step_count = self.trainer._start_step
        self.train_seconds = 0.0

    @property
    def pipeline(self):
        return self.trainer.pipeline

    def step(self) -> dict[str, float]:
        """One training iteration, as ``ns-train`` runs it. Returns the loss terms as floats."""
        step = self.step_count
        self.pipeline.train()
        start = time.perf_counter()
        for callback in self.trainer.callbacks:
            callback.run_callback_at_location(step, location=TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
        _, loss_dict, _ = self.trainer.train_iteration(step)
        for callback in self.trainer.callbacks:
            callback.run_callback_at_location(step, location=TrainingCallbackLocation.AFTER_TRAIN_ITERATION)
        if self.trainer.device.startswith("cuda"):
            torch.cuda.synchronize()
        self.train_seconds += time.perf_counter() - start
        self.step_count += 1
        return {name: float(value) for name, value in loss_dict.items()}

    def save_checkpoint(self) -> Path:
        """The Trainer's checkpoint of the last step taken; returns the checkpoint folder (for ``load_dir``)."""
        if self.step_count == 0:
            raise MRIInputError("no training step taken yet: nothing to checkpoint")
        self.trainer.save_checkpoint(self.step_count - 1)
        return self.trainer.checkpoint_dir

    @torch.no_grad()
    def evaluate(self, views: Sequence[int] | None = None) -> dict[str, float]:
        """Mean and std of PSNR and SSIM over held-out views (the ``eval_split`` views).

        Args:
            views: indices into the eval dataset (with the defaults, 43 test or 14 val views per subject);
                None: all.

        Returns:
            ``psnr``, ``psnr_std``, ``ssim``, ``ssim_std`` (dB and unitless), as ``ns-eval`` reports them.
        """
        dataset = self.pipeline.datamanager.eval_dataset
        indices = list(range(len(dataset))) if views is None else list(views)
        if not indices or not all(0 <= i < len(dataset) for i in indices):
            raise MRIInputError(f"views must be indices in 0..{len(dataset) - 1}, got {indices}")
        model = self.pipeline.model
        self.pipeline.eval()  # as nerfstudio evaluates: the pipeline's eval mode (EMA weights, if any)
        scores: dict[str, list[float]] = {"psnr": [], "ssim": []}
        for index in indices:
            camera = dataset.cameras[index : index + 1].to(model.device)
            outputs = model.get_outputs_for_camera(camera)
            metrics, _ = model.get_image_metrics_and_images(outputs, dataset[index])
            for name in scores:
                scores[name].append(float(metrics[name]))
        self.pipeline.train()
        summary: dict[str, float] = {}
        for name, values in scores.items():
            tensor = torch.tensor(values)
            summary[name] = float(tensor.mean())
            summary[f"{name}_std"] = float(tensor.std()) if len(values) > 1 else 0.0
        return summary
