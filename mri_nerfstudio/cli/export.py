"""``mri-export``: a trained mri-mednerf run's volumes back in scanner space, as NIfTI and surface meshes.

Examples::

    mri-export --load-config outputs/BraTS2021_00000/mri-mednerf/<timestamp>/config.yml --out export/
    mri-export --load-config .../config.yml --out export/ --subject BraTS2021_00001 --grid isotropic --spacing-mm 1

Writes ``<out>/<subject>/`` for each subject (or the one ``--subject`` names), each file atomically:

- ``reconstruction.nii.gz``: the field's intensity estimate (density / k) on the input file's own grid
  (``--grid scanner``: same shape, affine and orientation as the input NIfTI) or on its field of view at
  ``--spacing-mm`` in every direction (``--grid isotropic``: e.g. 1 mm across thick slices). Intensities
  are those of the preprocessed volume (normalised, equalised, in [0, 1]), not raw scanner values.
  ``--estimator tv-grid`` writes instead a voxel grid fitted to the subject's training views with total
  variation (``volume`` views only; a minute or more per subject on a CPU): from the same 15 views it
  measured 1.8 dB above the fits of six whole-head T1s held out from a model of 24, 0.2 to 0.5 dB above
  single-subject runs (one IXI T1, the template) and 0.3 dB below one on a BraTS T1ce
  (benchmarks/notes/volume.md);
- ``brain.ply`` / ``brain.stl``: the brain surface, in scanner (RAS) millimetres, at an iso-level read from
  the reconstruction alone (Otsu's threshold on the log of its positive values: the brain mask is not
  used); ``tumour``, ``necrosis``, ``oedema``, ``non_enhancing`` (BraTS 2013-2016 labels only),
  ``enhancing`` (``.ply`` / ``.stl``) from the input's BraTS label map when there is one, whatever its
  label convention;
- ``uncertainty.nii.gz``: a per-voxel uncertainty map on the same grid, as a standard deviation in the
  volume's intensity units (:mod:`mri_nerfstudio.uncertainty`): the blend term (where the estimate lies
  between tissues the views do not resolve) and, with ``--uncertainty-members N``, the spread of the run's
  estimate and those of N short fits of the same config, each with its own seed and a subset of the run's
  training views (trained here first: about half the run's training time each, by default);
- ``export.json``: the grid, the volume PSNR / SSIM against the preprocessed input on that grid inside
  the brain mask, the brain level and, as a score only, the Dice of the brain it encloses with the input's
  brain mask, the files, and how well the uncertainty map ranks the estimate's error there (Spearman,
  error per uncertainty decile) with what its members cost.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import tyro

from mri_nerfstudio.cli.errors import exit_on_input_error
from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.grids import POINTS_PER_CHUNK


@dataclass
class ExportCommand:
    """Sample a trained mri-mednerf field on the scanner grid (NIfTI) and mesh the brain and tumour (PLY, STL)."""

    load_config: Path
    """The run's config.yml (as for ns-eval)."""
    out: Path = Path("export")
    """Folder that receives one sub-folder per subject (created when missing)."""
    subject: Optional[str] = None
    """Export only this subject (a name from the run's data, e.g. BraTS2021_00000); default: every subject."""
    grid: str = "scanner"
    """``scanner``: the input NIfTI's own grid; ``isotropic``: its field of view at --spacing-mm."""
    spacing_mm: float = 1.0
    """Voxel size of the isotropic grid, mm (ignored for --grid scanner)."""
    meshes: bool = True
    """Write brain and tumour surface meshes (PLY and STL)."""
    points_per_chunk: int = POINTS_PER_CHUNK
    """Field evaluations at once: lower it if memory is short."""
    estimator: str = "field"
    """``field``: the trained field's volume; ``tv-grid``: a voxel grid fitted to the subject's training views
    with total variation (volume views only; better than the field on whole-head T1s, most of all for models
    of many brains)."""
    uncertainty_members: int = 0
    """Short fits trained for the ensemble term of the uncertainty map (0: the blend term alone)."""
    uncertainty_steps: Optional[int] = None
    """Training steps of each member (default: half the run's max-num-iterations)."""
    uncertainty_view_fraction: float = 0.8
    """Share of the run's training views each member sees (a different random subset each)."""


def run(command: ExportCommand) -> dict[str, dict]:
    """Export every selected subject; return ``export.json``'s content per subject name."""
    from mri_nerfstudio.nerf.ensemble import EnsembleSettings, member_steps, train_ensemble
    from mri_nerfstudio.nerf.trained_run import load_mednerf_run, selected_subjects
    from mri_nerfstudio.nerf.volume_export import ESTIMATORS, ExportSettings, check_has_volume, export_subject

    if command.grid not in ("scanner", "isotropic"):
        raise MRIInputError(f"--grid must be 'scanner' or 'isotropic', got {command.grid!r}")
    if command.estimator not in ESTIMATORS:
        raise MRIInputError(f"--estimator must be one of {', '.join(ESTIMATORS)}, got {command.estimator!r}")
    if command.estimator != "field" and command.uncertainty_members:
        raise MRIInputError("--uncertainty-members trains fits of the field: use it with --estimator field")
    settings = ExportSettings(
        command.grid, command.spacing_mm, command.meshes, command.points_per_chunk, command.estimator
    )
    if command.grid == "isotropic" and not command.spacing_mm > 0:
        raise MRIInputError(f"--spacing-mm must be a positive number of millimetres, got {command.spacing_mm}")
    if command.uncertainty_members < 0:
        raise MRIInputError(
            f"--uncertainty-members must be 0 (the blend term alone) or more, got {command.uncertainty_members}"
        )
    if command.uncertainty_members:
        ensemble_settings = EnsembleSettings(
            command.uncertainty_members, command.uncertainty_steps, command.uncertainty_view_fraction
        )
    trained = load_mednerf_run(command.load_config)
    subjects = selected_subjects(trained, command.subject, command.load_config)
    check_has_volume(trained.model)  # before any ensemble member trains
    ensemble = []
    train_views = trained.pipeline.datamanager.dataparser.view_indices("train")
    if command.uncertainty_members:
        print(
            f"[mri-export] uncertainty: training {command.uncertainty_members} short fits of the run "
            f"({member_steps(trained.config, ensemble_settings)} steps each, "
            f"{command.uncertainty_view_fraction:.0%} of its {len(train_views)} training views)",
            flush=True,
        )
        ensemble = train_ensemble(trained.config, train_views, ensemble_settings)
        print(f"[mri-export] uncertainty: members trained in {sum(m.seconds for m in ensemble):.0f} s", flush=True)
    summaries = {}
    for index, prepared in subjects:
        print(f"[mri-export] {prepared.name}: {command.grid} grid, {command.estimator} estimate", flush=True)
        summary = export_subject(
            trained.model, prepared, index, command.out / prepared.name, settings, ensemble, train_views
        )
        print(
            f"[mri-export] {prepared.name}: {command.out / prepared.name}, grid {tuple(summary['grid']['shape'])}, "
            f"volume PSNR {summary['volume_psnr']:.2f} dB, SSIM {summary['volume_ssim']:.3f} "
            "vs the preprocessed input; "
            f"meshes: {', '.join(summary['meshes']) or 'none'}",
            flush=True,
        )
        calibration = summary["uncertainty"]
        print(
            f"[mri-export] {prepared.name}: uncertainty.nii.gz ({' + '.join(calibration['terms'])}) ranks the "
            f"error with Spearman {calibration['spearman']:.2f}",
            flush=True,
        )
        summaries[prepared.name] = summary
    return summaries


def main(argv: list[str] | None = None) -> None:
    command = tyro.cli(ExportCommand, args=argv, description=__doc__)
    exit_on_input_error(run, command)


if __name__ == "__main__":
    main(sys.argv[1:])
