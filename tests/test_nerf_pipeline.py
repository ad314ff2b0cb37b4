"""MRIPipeline: ns-eval's held-out scores plus FID, KID and volume fidelity, each view rendered once."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.nerf.pipeline import (
    MRIPipeline,
    MRIPipelineConfig,
    evaluate_held_out_views,
    prepared_subjects,
    recording_held_out_renders,
    reconstruct_in_mask,
)
from mri_nerfstudio.nerf.session import TrainingSession

IMAGE_KEYS = {"psnr", "psnr_std", "ssim", "ssim_std", "fps", "fps_std"}
ADDED_KEYS = {"fid", "kid", "kid_std", "volume_psnr", "volume_psnr_std", "volume_ssim", "volume_ssim_std"}


@pytest.fixture(scope="module")
def session(tiny_method_config, phantom_subject_dir, tmp_path_factory) -> TrainingSession:
    """The CPU method with MRIPipelineConfig on one tiny phantom: 8 views of 24 px, 4 of them held out."""
    config = tiny_method_config(phantom_subject_dir, tmp_path_factory.mktemp("cache"), n_views=8, step_deg=45.0)
    config.pipeline = MRIPipelineConfig(datamanager=config.pipeline.datamanager, model=config.pipeline.model)
    config.pipeline.datamanager.dataparser.train_every = 2
    return TrainingSession(config, tmp_path_factory.mktemp("outputs"))


def test_ns_eval_scores_gain_fid_kid_and_volume_fidelity(session):
    pipeline = session.pipeline
    assert isinstance(pipeline, MRIPipeline)
    model = pipeline.model
    prepared = prepared_subjects(pipeline)[0]
    mask = prepared.volume.brain_mask()
    pipeline.config.image_set_metrics = False  # the baseline needs only the volume scores
    untrained = pipeline.get_average_eval_image_metrics(get_std=True)
    pipeline.config.image_set_metrics = True
    assert "fid" not in untrained and "volume_psnr" in untrained
    for _ in range(60):
        session.step()
    scores = pipeline.get_average_eval_image_metrics(get_std=True)

    assert IMAGE_KEYS | ADDED_KEYS <= set(scores), sorted(scores)
    assert all(math.isfinite(value) for value in scores.values()), scores
    assert scores["fid"] >= 0.0 and scores["kid_std"] >= 0.0
    # One subject: the volume std over subjects is 0. 4 held-out views: every KID subset holds them all.
    assert scores["volume_psnr_std"] == 0.0 and scores["kid_std"] < 1e-9
    assert -1.0 <= scores["volume_ssim"] <= 1.0
    # Training on 4 views must also bring the field's volume towards the input volume (measured: untrained
    # 8.3 dB / 0.17, after 60 steps 9.3 dB / 0.28; the density keeps converging for hundreds of steps).
    assert scores["volume_psnr"] > untrained["volume_psnr"] + 0.5, (untrained, scores)
    assert scores["volume_ssim"] > untrained["volume_ssim"] + 0.05, (untrained, scores)
    assert scores["psnr"] > untrained["psnr"] + 5.0
    # The estimate inside the mask is what the score saw; nothing is estimated outside.
    estimate = reconstruct_in_mask(model, prepared, subject=0)
    assert np.all(estimate[~mask] == 0.0) and estimate[mask].std() > 0.0


def test_held_out_views_are_rendered_once_and_recorded(session):
    pipeline = session.pipeline
    model = pipeline.model
    dataset = pipeline.datamanager.eval_dataset
    calls = []
    render = model.get_outputs_for_camera
    model.get_outputs_for_camera = lambda *args, **kwargs: calls.append(1) or render(*args, **kwargs)
    try:
        scores, renders = evaluate_held_out_views(pipeline, get_std=True)
    finally:
        del model.get_outputs_for_camera

    assert len(calls) == len(dataset) == len(renders) == 4
    assert [r.view for r in renders] == [1, 3, 5, 7] and {r.subject for r in renders} == {0}
    truth = (dataset[2]["image"] * 255).round().to(torch.uint8)
    assert torch.equal(renders[2].image, truth) and renders[2].rendering.dtype == torch.uint8
    assert scores["psnr"] == pytest.approx(np.mean([r.psnr for r in renders]), rel=1e-6)
    assert "get_image_metrics_and_images" not in vars(model)  # the recorder put the class method back


def test_recording_needs_mri_metadata(session):
    pipeline = session.pipeline
    view_index = pipeline.datamanager.eval_dataset.metadata.pop("view_index")
    try:
        with pytest.raises(MRIInputError, match="mri-data dataparser"):
            with recording_held_out_renders(pipeline):
                pass
    finally:
        pipeline.datamanager.eval_dataset.metadata["view_index"] = view_index
