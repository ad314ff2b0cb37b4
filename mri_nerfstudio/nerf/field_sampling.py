"""A trained field sampled as a volume: its intensity estimate at world points or voxel centres, and its
volume scores against the preprocessed input.

The estimate is the field's ``density / k`` (:meth:`MRIMedNeRFModel.volume_on_grid`), in the
preprocessed volume's intensity units ([0, 1]); voxel indices go to world coordinates by the prepared
subject's ``world_from_voxel`` (voxel -> RAS mm by the volume's affine, RAS mm -> world by the scene
normalisation). ``ns-eval``'s volume fidelity (:mod:`mri_nerfstudio.nerf.pipeline`), ``mri-report``,
``mri-export``, ``mri-slices``, ``mri-reconstruct`` and the benchmarks sample the field through this
module, which does not import the training pipeline (:func:`prepared_subjects` reads any
``mri-data`` run's pipeline).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.metrics import volume_fidelity
from mri_nerfstudio.prepare import PreparedSubject, load_prepared

if TYPE_CHECKING:
    from nerfstudio.pipelines.base_pipeline import VanillaPipeline

    from mri_nerfstudio.nerf.model import MRIMedNeRFModel


def prepared_subjects(pipeline: VanillaPipeline) -> list[PreparedSubject]:
    """The prepared subjects of the eval dataset (dataparser metadata ``prepared_dirs``), in subject order."""
    directories = pipeline.datamanager.eval_dataset.metadata.get("prepared_dirs")
    if not directories:
        raise MRIInputError("dataparser metadata: no prepared_dirs; volume metrics need the mri-data dataparser")
    return [load_prepared(Path(directory)) for directory in directories]


def field_at_world(model: MRIMedNeRFModel, subject: int, points: np.ndarray) -> np.ndarray:
    """The field's intensity estimate (density / k) of subject ``subject`` at [P, 3] world points: [P] float32."""
    return model.volume_on_grid(torch.from_numpy(np.asarray(points)).float(), subject).cpu().numpy()


def field_at_voxels(
    model: MRIMedNeRFModel, prepared: PreparedSubject, subject: int, voxels: np.ndarray
) -> np.ndarray:
    """The field's intensity estimate (density / k) at voxel centres of the prepared volume's grid.

    Args:
        model: the trained model.
        prepared: the subject's prepared folder (its grid and RAS -> world normalisation).
        subject: the subject's index in the model.
        voxels: [P, 3] voxel indices (i, j, k).

    Returns:
        [P] float32, in the preprocessed volume's intensity units (0 outside the unit sphere).
    """
    world_from_voxel = prepared.world_from_voxel
    points = np.asarray(voxels, dtype=np.float64) @ world_from_voxel[:3, :3].T + world_from_voxel[:3, 3]
    return field_at_world(model, subject, points)


def reconstruct_in_mask(model: MRIMedNeRFModel, prepared: PreparedSubject, subject: int) -> np.ndarray:
    """[X, Y, Z] float32 on the preprocessed grid: the field's estimate inside the brain mask, 0 outside."""
    mask = prepared.volume.brain_mask()
    estimate = np.zeros(mask.shape, dtype=np.float32)
    estimate[mask] = field_at_voxels(model, prepared, subject, np.argwhere(mask))
    return estimate


def subject_volume_scores(model: MRIMedNeRFModel, prepared: PreparedSubject, subject: int) -> dict[str, float]:
    """``volume_psnr`` (dB) and ``volume_ssim`` of the field against the subject's preprocessed reference volume,
    inside its brain mask (:func:`~mri_nerfstudio.metrics.volume_fidelity`)."""
    reference = prepared.volume.images[prepared.volume.reference]
    estimate = reconstruct_in_mask(model, prepared, subject)
    return volume_fidelity(estimate, reference, prepared.volume.brain_mask())
