"""nerf/volume_export.py: the tv-grid estimator's refusals, and an aligned subject's export (the exports of trained
runs: tests/cli/test_export.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.nerf.volume_export import ExportSettings, export_subject, fit_tv_grid
from mri_nerfstudio.prepare import PrepareConfig, prepare_subject


@pytest.mark.parametrize("mode", ["drr", "mip"])
def test_the_tv_grid_refuses_views_it_is_not_tied_to(mode):
    prepared = SimpleNamespace(config=SimpleNamespace(view_mode=mode), directory=Path("cache/subject"))
    expected = f"cache/subject: --estimator tv-grid fits volume views; the run's views are {mode} views"
    with pytest.raises(MRIInputError, match=expected):
        fit_tv_grid(prepared, [0, 5])


def test_the_tv_grid_needs_training_views():
    prepared = SimpleNamespace(config=SimpleNamespace(view_mode="volume"), directory=Path("cache/subject"))
    with pytest.raises(MRIInputError, match="needs the run's training views"):
        fit_tv_grid(prepared, [])


class PerfectField:
    """A field that learned a prepared subject exactly: its preprocessed intensity at world points (the model
    interface :func:`~mri_nerfstudio.nerf.field_sampling.field_at_world` reads)."""

    view_mode = "volume"

    def __init__(self, prepared):
        self.voxel_from_world = np.linalg.inv(prepared.world_from_voxel)
        self.image = prepared.volume.images[prepared.volume.reference]

    def volume_on_grid(self, points: torch.Tensor, subject: int) -> torch.Tensor:
        voxels = points.double().numpy() @ self.voxel_from_world[:3, :3].T + self.voxel_from_world[:3, 3]
        return torch.from_numpy(ndimage.map_coordinates(self.image, voxels.T, order=1)).float()


def test_an_aligned_subject_exports_in_scanner_space(tilted_template_folder, tmp_path):
    # A head pitched 20 degrees in the scanner, prepared with align_head, lies in the world as the straight
    # template does: a field that learned the straight template exports onto the tilted input's scanner grid.
    config = PrepareConfig(image_size=16, register=False, align_head=True)
    straight = prepare_subject(None, tmp_path / "cache", config)
    settings = ExportSettings(meshes=False)
    scores = {}
    for align_head in (True, False):
        tilted = prepare_subject(tilted_template_folder, tmp_path / "cache", replace(config, align_head=align_head))
        out = tmp_path / f"aligned_{align_head}"
        scores[align_head] = export_subject(PerfectField(straight), tilted, 0, out, settings)["volume_psnr"]
        image = nib.load(out / "reconstruction.nii.gz")
        stored = nib.load(tilted_template_folder / "tilted_t1.nii.gz")
        np.testing.assert_allclose(image.affine, stored.affine, atol=1e-4)
    # 24.4 dB when written (the fitted pose is 0.8 degrees off, and voxels are interpolated twice); 9.6 dB when
    # the world keeps the scanner's axes, where it holds the tilted head, not the straight one
    assert scores[True] > 20.0
    assert scores[False] < scores[True] - 10.0
