"""Held-out views recorded as nerfstudio's evaluation loop scores them: each rendered once, in eval-dataset order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.nerf.held_out import evaluate_held_out_views, recording_held_out_renders, render_features
from mri_nerfstudio.nerf.session import TrainingSession


@pytest.fixture(scope="module")
def session(tiny_method_config, phantom_subject_dir, tmp_path_factory) -> TrainingSession:
    """The CPU method on one tiny phantom: 8 views of 24 px, 0, 2, 4, 6 for training, 7 for val
    (7 % 5 == 2), 1, 3, 5 for test (the eval dataset)."""
    config = tiny_method_config(phantom_subject_dir, tmp_path_factory.mktemp("cache"), n_views=8, step_deg=45.0)
    config.pipeline.datamanager.dataparser.train_every = 2
    return TrainingSession(config, tmp_path_factory.mktemp("outputs"))


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

    assert len(calls) == len(dataset) == len(renders) == 3
    assert [r.view for r in renders] == [1, 3, 5] and {r.subject for r in renders} == {0}
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


def test_features_of_no_renders_is_a_clear_error():
    with pytest.raises(MRIInputError, match="FID and KID need at least 2"):
        render_features([], extractor=None)
