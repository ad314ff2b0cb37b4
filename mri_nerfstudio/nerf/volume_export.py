"""A subject's learned volume back in scanner space: NIfTI on a scanner grid, and surface meshes.

The field's intensity estimate (``density / k``, :meth:`MRIMedNeRFModel.volume_on_grid`) is sampled at
the voxel centres of a :class:`~mri_nerfstudio.grids.VoxelGrid` (voxel -> RAS mm by the grid's affine,
RAS mm -> world by the subject's scene normalisation), chunked, with a progress bar. Intensities are
those of the preprocessed volume the views were rendered from (normalised and equalised, in [0, 1]),
not the raw scanner values.

With the ``tv-grid`` estimator, the volume is instead a voxel grid tied to the ``volume`` image
formation, fitted to the subject's training views with total variation
(:func:`~mri_nerfstudio.classical_reconstruction.fit_tied_voxel_grid`, as ``scripts/bench_volume.py``
measures it). From the same 15 views it scored 1.8 dB above the fits of six real whole-head brains held
out from a model of 24, 0.2 to 0.5 dB above single-subject runs (one IXI T1, the template) and 0.3 dB
below one on a BraTS T1ce (``benchmarks/notes/volume.md``).

Meshes: the brain is the estimate's iso-surface at a level read from the estimate alone
(:func:`~mri_nerfstudio.grids.brain_level`: Otsu's threshold on the log of its positive values); the
input's brain mask is never used to choose it, only to score it (``brain_dice``). The tumour meshes come
from the input's BraTS label map (the field learns intensities, not labels).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence, get_args

import numpy as np
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from mri_nerfstudio.atomic_write import write_json
from mri_nerfstudio.classical_reconstruction import GridVolume, fit_tied_voxel_grid
from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.grids import (
    POINTS_PER_CHUNK,
    VoxelGrid,
    brain_level,
    isotropic_grid,
    resample_onto,
    sample_on_grid,
    scanner_grid,
)
from mri_nerfstudio.mesh import MESH_FORMATS, label_meshes, surface_mesh, write_mesh
from mri_nerfstudio.metrics import dice_coefficient, volume_fidelity
from mri_nerfstudio.nerf.ensemble import EnsembleMember
from mri_nerfstudio.nerf.field_sampling import field_at_world
from mri_nerfstudio.prepare import PreparedSubject
from mri_nerfstudio.uncertainty import ensemble_spread, predictive_spread, uncertainty_calibration
from mri_nerfstudio.volume import save_nifti

GridKind = Literal["scanner", "isotropic"]
Estimator = Literal["field", "tv-grid"]
ESTIMATORS: tuple[str, ...] = get_args(Estimator)

TV_GRID_STEPS = 200
"""Adam steps of the ``tv-grid`` estimator; ``bench_volume`` and ``bench_volume_prior`` default to it (its
total-variation weight: the fit's default, which they use too)."""

VOLUME_FILE = "reconstruction.nii.gz"
UNCERTAINTY_FILE = "uncertainty.nii.gz"


@dataclass(frozen=True)
class ExportSettings:
    """What :func:`export_subject` writes."""

    grid: GridKind = "scanner"
    """``scanner``: the input file's own grid; ``isotropic``: its field of view at ``spacing_mm``."""
    spacing_mm: float = 1.0
    """Voxel size of the ``isotropic`` grid, mm."""
    meshes: bool = True
    """Write the brain and tumour surfaces (PLY and STL)."""
    points_per_chunk: int = POINTS_PER_CHUNK
    """Field evaluations at once (bounds memory)."""
    estimator: Estimator = "field"
    """``field``: the trained field's ``density / k``; ``tv-grid``: :func:`fit_tv_grid` on the training views."""


def export_grid(prepared: PreparedSubject, settings: ExportSettings) -> VoxelGrid:
    """The grid ``settings`` names for this subject."""
    if settings.grid == "scanner":
        return scanner_grid(prepared.volume)
    if settings.grid == "isotropic":
        return isotropic_grid(prepared.volume, settings.spacing_mm)
    raise MRIInputError(f"--grid must be 'scanner' or 'isotropic', got {settings.grid!r}")


def sample_field(model, subject: int, grid: VoxelGrid, world_from_ras: np.ndarray, points_per_chunk: int) -> np.ndarray:
    """[X, Y, Z] float32: the field's estimate for subject ``subject`` on ``grid``, with a progress bar."""
    columns = (TextColumn("[mri] sampling the field"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,} voxels"))
    with Progress(*columns, TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task("sample", total=grid.size)
        return sample_on_grid(
            lambda points: field_at_world(model, subject, points),
            grid,
            world_from_ras,
            points_per_chunk,
            progress=lambda done: bar.update(task, completed=done),
        )


def fit_tv_grid(prepared: PreparedSubject, train_views: Sequence[int]) -> GridVolume:
    """A voxel grid of intensities (one voxel per view pixel across the scene) fitted to the subject's
    ``volume`` views at orbit indices ``train_views`` with total variation.

    Raises:
        MRIInputError: for views of another mode, no training view, or an orbit that is not axial.
    """
    mode, where = prepared.config.view_mode, prepared.directory
    if mode != "volume":
        raise MRIInputError(f"--estimator tv-grid fits volume views; the run's views are {mode} views", where)
    if not train_views:
        raise MRIInputError("--estimator tv-grid needs the run's training views; none given", where)
    cameras = prepared.cameras
    return fit_tied_voxel_grid(
        prepared.images[list(train_views)],
        cameras.subset(train_views),
        prepared.config.density_scale,
        size=min(cameras.width, cameras.height) + 1,
        steps=TV_GRID_STEPS,
    )


def check_has_volume(model) -> None:
    """An error for a run trained on ``mip`` views, whose field never constrains density: no volume to export."""
    if model.view_mode == "mip":
        raise MRIInputError("the run was trained on mip views, which never constrain density: no volume to export")


def export_subject(
    model,
    prepared: PreparedSubject,
    subject: int,
    out: Path,
    settings: ExportSettings = ExportSettings(),
    ensemble: Sequence[EnsembleMember] = (),
    train_views: Sequence[int] = (),
) -> dict:
    """Write subject ``subject``'s learned volume and meshes into ``out``; return what was written (``export.json``).

    Args:
        model: an :class:`~mri_nerfstudio.nerf.model.MRIMedNeRFModel` trained with a density view mode.
        prepared: the subject's prepared folder (its scanner grid, normalisation, mask and seg).
        subject: the subject's index in the model.
        out: folder (created when missing).
        ensemble: short fits of the same run (:func:`~mri_nerfstudio.nerf.ensemble.train_ensemble`), whose
            spread (with the estimate's) joins the blend term of ``uncertainty.nii.gz``
            (:func:`~mri_nerfstudio.uncertainty.predictive_spread`; without members: the blend term alone).
        train_views: the run's training views (orbit indices), which the ``tv-grid`` estimator is fitted to.

    Returns:
        ``grid`` (shape, affine, spacing), ``volume`` (file name), ``volume_psnr`` / ``volume_ssim`` against
        the preprocessed input on this grid inside the brain mask, with meshes ``brain_level`` (the brain
        surface's iso-level, from the estimate alone: :func:`~mri_nerfstudio.grids.brain_level`) and
        ``brain_dice`` (Dice of ``estimate > brain_level`` with the input's brain mask on this grid: a score
        only, not used to choose the level), ``meshes`` (name -> file names) and ``uncertainty``: its file,
        terms, members and its calibration against the error of the estimate inside the brain mask
        (:func:`~mri_nerfstudio.uncertainty.uncertainty_calibration`).
    """
    check_has_volume(model)
    grid = export_grid(prepared, settings)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    world_from_ras = prepared.normalization.world_from_ras()
    if settings.estimator == "tv-grid":
        if ensemble:
            raise MRIInputError("the ensemble term spreads fits of the field: use it with --estimator field")
        began = time.perf_counter()
        print(f"[mri] {prepared.name}: fitting the tv grid to {len(train_views)} training views", flush=True)
        volume_grid = fit_tv_grid(prepared, train_views)
        estimate = sample_on_grid(volume_grid.sample, grid, world_from_ras, settings.points_per_chunk)
        fitted = {"train_views": list(train_views), "steps": TV_GRID_STEPS, "seconds": time.perf_counter() - began}
    else:
        estimate = sample_field(model, subject, grid, world_from_ras, settings.points_per_chunk)
    save_nifti(
        estimate,
        grid.affine,
        out / VOLUME_FILE,
        description=f"mri-nerfstudio reconstruction of {prepared.name}"[:80],
    )
    volume = prepared.volume
    mask = resample_onto(volume.brain_mask().astype(np.float32), volume.affine, grid, order=0) > 0.5
    reference = resample_onto(volume.images[volume.reference], volume.affine, grid, order=1)
    summary: dict = {
        "subject": prepared.name,
        "grid": {"kind": settings.grid, "shape": list(grid.shape), "affine": grid.affine.tolist(),
                 "spacing_mm": list(grid.spacing_mm)},
        "volume": VOLUME_FILE,
        "estimator": settings.estimator,
        **({"tv_grid": fitted} if settings.estimator == "tv-grid" else {}),
        "intensity_units": "preprocessed reference modality (normalised, equalised), in [0, 1]",
        **volume_fidelity(estimate, reference, mask),
        "meshes": {},
    }
    ensemble_std = None
    if ensemble:
        ensemble_std = ensemble_spread(
            [estimate]
            + [sample_field(m.model, subject, grid, world_from_ras, settings.points_per_chunk) for m in ensemble]
        )
    uncertainty = predictive_spread(estimate, ensemble_std)
    save_nifti(uncertainty, grid.affine, out / UNCERTAINTY_FILE,
               description=f"mri-nerfstudio uncertainty (std) of {prepared.name}"[:80])
    summary["uncertainty"] = {
        "file": UNCERTAINTY_FILE,
        "terms": ["blend"] + (["ensemble"] if ensemble else []),
        "units": "standard deviation, intensity units of the volume",
        **uncertainty_calibration(uncertainty, np.abs(estimate - reference), mask),
        "members": [
            {"seed": m.seed, "views": list(m.views), "steps": m.steps, "seconds": m.seconds} for m in ensemble
        ],
    }
    if settings.meshes:
        level = brain_level(estimate)
        summary.update(brain_level=level, brain_dice=dice_coefficient(estimate > level, mask))
        meshes = {"brain": surface_mesh(estimate, level, grid.affine)}
        if volume.seg is not None:
            meshes.update(label_meshes(volume.seg, volume.affine))
        for name, mesh in meshes.items():
            if mesh is not None:
                summary["meshes"][name] = [write_mesh(mesh, out / f"{name}.{kind}").name for kind in MESH_FORMATS]
    write_json(out / "export.json", summary)
    return summary
