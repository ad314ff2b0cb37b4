"""The field sampled as a volume: at world points, at voxel centres of the prepared grid, inside the brain mask,
and scored against the preprocessed input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.metrics import volume_fidelity
from mri_nerfstudio.nerf.field_sampling import (
    field_at_voxels,
    field_at_world,
    prepared_subjects,
    reconstruct_in_mask,
    subject_volume_scores,
)
from mri_nerfstudio.nerf.trained_run import TrainedRun, load_mednerf_run


@pytest.fixture(scope="module")
def run(trained_phantom_run) -> TrainedRun:
    """The shared trained phantom run (tests/conftest.py), loaded as ns-eval loads it."""
    return load_mednerf_run(trained_phantom_run)


def test_the_estimate_is_the_field_at_the_voxel_centres_inside_the_mask_and_zero_outside(run):
    model = run.model
    prepared = prepared_subjects(run.pipeline)[0]
    mask = prepared.volume.brain_mask()

    estimate = reconstruct_in_mask(model, prepared, subject=0)

    assert estimate.shape == mask.shape and estimate.dtype == np.float32
    assert np.all(estimate[~mask] == 0.0) and estimate[mask].std() > 0.0
    voxels = np.argwhere(mask)[::7]
    expected = estimate[tuple(voxels.T)]
    np.testing.assert_allclose(field_at_voxels(model, prepared, 0, voxels), expected, rtol=1e-5, atol=1e-6)
    # Voxel centres -> world points by the prepared subject's grid and scene normalisation.
    world = voxels @ prepared.world_from_voxel[:3, :3].T + prepared.world_from_voxel[:3, 3]
    assert np.abs(world).max() <= 1.0 + 1e-6  # the brain fits the unit sphere
    np.testing.assert_allclose(field_at_world(model, 0, world), expected, rtol=1e-5, atol=1e-6)


def test_volume_scores_compare_the_estimate_with_the_reference_inside_the_mask(run):
    model = run.model
    prepared = prepared_subjects(run.pipeline)[0]
    volume = prepared.volume

    scores = subject_volume_scores(model, prepared, 0)

    estimate = reconstruct_in_mask(model, prepared, 0)
    expected = volume_fidelity(estimate, volume.images[volume.reference], volume.brain_mask())
    assert set(scores) == {"volume_psnr", "volume_ssim"}
    assert scores == pytest.approx(expected, rel=1e-6)


def test_prepared_subjects_need_the_mri_data_dataparser(run):
    metadata = run.pipeline.datamanager.eval_dataset.metadata
    assert [prepared.name for prepared in prepared_subjects(run.pipeline)] == ["BraTS2021_00000"]
    directories = metadata.pop("prepared_dirs")
    try:
        with pytest.raises(MRIInputError, match="need the mri-data dataparser"):
            prepared_subjects(run.pipeline)
    finally:
        metadata["prepared_dirs"] = directories


def test_the_commands_that_read_a_run_do_not_import_training():
    """mri-report, mri-export, mri-slices and mri-reconstruct sample the field through this module: importing them
    (and the volume export) imports neither the training pipeline nor the in-process Trainer."""
    commands = ", ".join(f"mri_nerfstudio.cli.{name}" for name in ("report", "export", "slices", "reconstruct"))
    training = ("mri_nerfstudio.nerf.pipeline", "mri_nerfstudio.nerf.session")
    code = f"import sys, {commands}, mri_nerfstudio.nerf.volume_export\n"
    code += f"print([name for name in {training} if name in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr[-2000:]
