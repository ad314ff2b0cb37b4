"""In-process training with nerfstudio's Trainer: the loss falls and held-out views improve."""

from __future__ import annotations

import copy

import pytest
import torch

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.nerf.method_config import mri_mednerf
from mri_nerfstudio.nerf.session import TrainingSession
from mri_nerfstudio.prepare import PrepareConfig


@pytest.fixture
def session(phantom_subject_dir, tmp_path) -> TrainingSession:
    """The shipped CPU method on one tiny phantom subject (24 px views), with a small field."""
    torch.manual_seed(0)
    config = copy.deepcopy(mri_mednerf.config)
    config.machine.device_type = "cpu"
    config.pipeline.model.preset = "cpu"
    config.pipeline.model.grid_resolutions = (16, 32)
    config.pipeline.model.num_samples = 24
    config.pipeline.datamanager.train_num_rays_per_batch = 256
    config.pipeline.datamanager.patch_size = 8
    dataparser = config.pipeline.datamanager.dataparser
    dataparser.data = phantom_subject_dir
    dataparser.cache_dir = tmp_path / "cache"
    dataparser.prepare = PrepareConfig(image_size=24)
    return TrainingSession(config, tmp_path / "outputs")


def test_training_lowers_the_loss_and_raises_held_out_psnr(session):
    views = range(0, 57, 4)
    before = session.evaluate(views)
    losses = [session.step()["rgb_loss"] for _ in range(100)]
    after = session.evaluate(views)

    assert session.step_count == 100 and session.train_seconds > 0
    assert sum(losses[-10:]) < 0.2 * sum(losses[:10])
    # Views the model never saw: the untrained field scores ~10 dB, 100 steps reach well over 20 dB.
    assert after["psnr"] > before["psnr"] + 8.0, (before, after)
    assert after["ssim"] > before["ssim"] and 0.0 < after["ssim"] <= 1.0


def test_evaluate_reports_mean_and_std_like_ns_eval(session):
    scores = session.evaluate([0, 1, 2])
    assert set(scores) == {"psnr", "psnr_std", "ssim", "ssim_std"}
    assert scores["psnr_std"] >= 0.0 and scores["ssim_std"] >= 0.0
    with pytest.raises(MRIInputError, match="views must be indices"):
        session.evaluate([57])
