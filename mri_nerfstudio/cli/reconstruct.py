"""``mri-reconstruct``: a subject never seen in training, reconstructed from one view with a trained mri-mednerf run.

Examples::

    # one view image (8-bit PNG of the run's view size) and the azimuth it was taken at
    mri-reconstruct --load-config outputs/.../config.yml --view view.png --azimuth-deg 90 --out recon/
    # a scan (NIfTI / NRRD file or BraTS subject folder): prepared as the run's subjects were, its view at
    # --azimuth-deg is the input and the 71 others and the volume are the ground truth that gets scored
    mri-reconstruct --load-config outputs/.../config.yml --volume brats/BraTS2021_00042 --azimuth-deg 0 --out recon/

The subject's latent code is optimised (``--finetune-field``: the field and its own subject grid too) against the one view with
MSE plus a Gaussian prior fitted to the training subjects' codes, starting, with ``--volume`` and a run
that has the slice encoder (several training subjects), from the encoder's prediction from the scan,
otherwise from the mean training code and subject grid (see :mod:`mri_nerfstudio.nerf.single_view`). The field is evaluated only
inside the visual hull of the input view(s) (within the space the run was trained in); nothing else of the
subject is used to reconstruct it (with ``--volume``, the scan's other views, volume and brain mask only score
the result). Writes into ``--out`` (each file atomically):

- ``views/view_XXX.png``: the whole orbit (72 views at 5 degrees by default) rendered from the fit;
- ``reconstruction.nii.gz``: the volume estimate; with ``--volume`` on the scan's own grid (same shape
  and affine), plus brain / tumour meshes and ``export.json`` as ``mri-export`` writes them; with
  ``--view`` alone on a cube around the brain, in millimetres of the training brains' mean size;
- ``uncertainty.nii.gz``: its per-voxel uncertainty on the same grid (the blend term of
  :mod:`mri_nerfstudio.uncertainty`);
- ``scores.json``: the settings, the loss at the first and last step and, with ``--volume``, PSNR / SSIM
  on the other views (mean +- std) and on the volume, for the fit and for the unfitted starting code.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Optional, Tuple

import numpy as np
import tyro
from PIL import Image, UnidentifiedImageError

from mri_nerfstudio.atomic_write import write_atomically, write_json
from mri_nerfstudio.cli.errors import exit_on_input_error
from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.nerf.single_view_settings import SingleViewSettings
from mri_nerfstudio.prepare import PrepareConfig


@dataclass
class ReconstructCommand:
    """Reconstruct an unseen subject from one view: fit its code to the view, render all views and the volume."""

    load_config: Path
    """The trained run's config.yml (as for ns-eval)."""
    azimuth_deg: Tuple[float, ...]
    """Azimuth of the given view, degrees: one of the run's orbit angles (0, 5, ..., 355 by default). With
    --volume, several angles fit the code to several of the scan's views (e.g. its 15 training-view angles
    0 25 50 ... 350: a held-out subject refined on its training views); the other views are scored."""
    view: Optional[Path] = None
    """The view: an 8-bit PNG of the run's view size (grey, or RGB read as grey). Exclusive with --volume."""
    volume: Optional[Path] = None
    """A scan (NIfTI / NRRD / MHA file or BraTS subject folder): its view at --azimuth-deg is rendered with the
    run's view settings and the rest is ground truth for the scores. Exclusive with --view."""
    out: Path = Path("reconstruction")
    """Output folder (created when missing)."""
    baseline: bool = True
    """With --volume, also score the unfitted start (the encoder's prediction, or the mean training code and grid)."""
    cache_dir: Optional[Path] = None
    """Where --volume is prepared (default: the run's own cache)."""
    settings: Annotated[SingleViewSettings, tyro.conf.arg(name="")] = field(default_factory=SingleViewSettings)


def orbit_view_index(azimuth_deg: float, prepare: PrepareConfig) -> int:
    """The index of the orbit view taken at ``azimuth_deg``; an error for any other angle."""
    angles = ", ".join(f"{i * prepare.step_deg:g}" for i in (0, 1, 2)) + f", ..., {(prepare.n_views - 1) * prepare.step_deg:g}"
    if not math.isfinite(azimuth_deg) or not 0.0 <= azimuth_deg < 360.0:
        raise MRIInputError(f"--azimuth-deg {azimuth_deg} is out of range: expected an orbit angle in [0, 360): {angles}")
    index = round(azimuth_deg / prepare.step_deg)
    if abs(index * prepare.step_deg - azimuth_deg) > 1e-6 or not 0 <= index < prepare.n_views:
        raise MRIInputError(
            f"--azimuth-deg {azimuth_deg} is not one of the run's {prepare.n_views} orbit angles ({angles} degrees)"
        )
    return index


def read_view(path: Path, size: int) -> np.ndarray:
    """[size, size] float32 in [0, 1] from an 8-bit PNG (grey; colour is read as its luminance)."""
    try:
        with Image.open(path) as image:
            if image.format != "PNG" or image.mode not in ("L", "LA", "RGB", "RGBA", "P"):
                raise MRIInputError(f"expected an 8-bit PNG view, got {image.format} in mode {image.mode}", path)
            width, height = image.size
            if (width, height) != (size, size):
                raise MRIInputError(
                    f"view is {width} x {height} pixels; the run's views are {size} x {size} "
                    "(its prepare.image_size)",
                    path,
                )
            return np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    except (FileNotFoundError, IsADirectoryError):
        raise MRIInputError("no such view file", path) from None
    except (UnidentifiedImageError, OSError) as error:
        raise MRIInputError(f"cannot read the view as an image ({error})", path) from None


def check_arguments(command: ReconstructCommand) -> None:
    """Errors for what can be judged before the run is loaded."""
    if (command.view is None) == (command.volume is None):
        raise MRIInputError("give exactly one of --view (a PNG) and --volume (a scan)")
    if command.volume is not None and not command.volume.exists():
        raise MRIInputError("no such scan; expected a NIfTI / NRRD / MHA file or a BraTS subject folder", command.volume)
    if command.view is not None and len(command.azimuth_deg) != 1:
        raise MRIInputError(f"--view is one PNG: give one --azimuth-deg, got {len(command.azimuth_deg)}")
    if len(set(command.azimuth_deg)) != len(command.azimuth_deg):
        raise MRIInputError(f"--azimuth-deg repeats an angle: {command.azimuth_deg}")
    if command.settings.steps < 0 or command.settings.rays_per_step < 1 or command.settings.prior_weight < 0:
        raise MRIInputError("--steps and --prior-weight must be >= 0 and --rays-per-step >= 1")


def write_views(renders, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(renders.numpy()):
        pixels = Image.fromarray(np.round(image * 255).astype(np.uint8))
        write_atomically(folder / f"view_{index:03d}.png", lambda tmp, pixels=pixels: pixels.save(tmp, format="png"))


def run(command: ReconstructCommand) -> dict:
    """Reconstruct, write the outputs, return ``scores.json``'s content."""
    import torch

    from mri_nerfstudio.encoder_input import cached_encoder_input
    from mri_nerfstudio.grids import world_cube_grid
    from mri_nerfstudio.nerf.dataparser import nerfstudio_cameras
    from mri_nerfstudio.nerf.field_sampling import prepared_subjects
    from mri_nerfstudio.nerf.single_view import reconstruct_from_view
    from mri_nerfstudio.nerf.trained_run import load_mednerf_run
    from mri_nerfstudio.nerf.volume_export import (
        UNCERTAINTY_FILE,
        VOLUME_FILE,
        ExportSettings,
        export_subject,
        sample_field,
    )
    from mri_nerfstudio.prepare import prepare_subject
    from mri_nerfstudio.uncertainty import predictive_spread
    from mri_nerfstudio.volume import save_nifti

    check_arguments(command)
    trained = load_mednerf_run(command.load_config)
    dataparser = trained.config.pipeline.datamanager.dataparser
    prepare: PrepareConfig = dataparser.prepare
    view_indices = [orbit_view_index(angle, prepare) for angle in command.azimuth_deg]
    if command.view is not None:
        view, truth = read_view(command.view, prepare.image_size)[None], None
    else:
        print(f"[mri-reconstruct] preparing {command.volume} with the run's settings", flush=True)
        truth = prepare_subject(command.volume, command.cache_dir or dataparser.cache_dir, prepare)
        view = truth.images[view_indices]
    scans = None
    if truth is not None and trained.model.encoder is not None:
        scans = cached_encoder_input(truth.directory, truth.volume, truth.world_from_voxel, dataparser.encoder_grid_size)
    training_subjects = prepared_subjects(trained.pipeline)
    seen = truth is not None and truth.name in [subject.name for subject in training_subjects]
    if seen:
        print(f"[mri-reconstruct] note: {truth.name} was one of the training subjects", flush=True)

    orbit = nerfstudio_cameras(prepare.orbit_cameras())
    settings = command.settings
    angles = ", ".join(f"{angle:g}" for angle in command.azimuth_deg)
    print(f"[mri-reconstruct] fitting to view(s) {view_indices} ({angles} deg), {settings.steps} steps", flush=True)
    result = reconstruct_from_view(
        trained.model, orbit, view_indices, torch.from_numpy(view), settings, truth, baseline=command.baseline, scans=scans
    )
    out = command.out
    write_views(result.renders, out / "views")
    if trained.model.view_mode == "mip":
        volume_note = "none: a mip run never constrains density"
    elif truth is not None:
        export_subject(result.model, truth, 0, out, ExportSettings())
        volume_note = f"{VOLUME_FILE} on the scan's grid (see export.json)"
    else:
        radius_mm = float(np.mean([subject.normalization.radius_mm for subject in training_subjects]))
        grid, world_from_ras = world_cube_grid(prepare.image_size, radius_mm)
        estimate = sample_field(result.model, 0, grid, world_from_ras, ExportSettings().points_per_chunk)
        save_nifti(estimate, grid.affine, out / VOLUME_FILE, description="mri-nerfstudio single-view reconstruction")
        save_nifti(predictive_spread(estimate), grid.affine, out / UNCERTAINTY_FILE,
                   description="mri-nerfstudio uncertainty (std, blend term)")
        volume_note = f"{VOLUME_FILE} on a cube around the brain (mm of the training brains' mean radius)"

    report = {
        "config": str(command.load_config),
        "input": str(command.view or command.volume),
        "azimuth_deg": list(command.azimuth_deg),
        "view_indices": view_indices,
        "seen_in_training": seen,
        "settings": asdict(settings),
        "start": "slice encoder's prediction from the scan" if scans is not None else "mean training code",
        "mse_first_step": result.history.mse[0] if result.history.mse else None,
        "mse_last_step": result.history.mse[-1] if result.history.mse else None,
        "volume": volume_note,
        "scores": result.scores,
        "baseline_scores": result.baseline_scores,
    }
    write_json(out / "scores.json", report)
    print(f"[mri-reconstruct] wrote {out}: {len(result.renders)} views, {volume_note}, scores.json", flush=True)
    if result.scores:
        line = "[mri-reconstruct] other {views} views: PSNR {psnr:.2f} dB, SSIM {ssim:.3f}"
        print(line.format(**result.scores) + (f" (starting code: {result.baseline_scores['psnr']:.2f} dB, "
              f"{result.baseline_scores['ssim']:.3f})" if result.baseline_scores else ""), flush=True)
    return report


def main(argv: list[str] | None = None) -> None:
    command = tyro.cli(ReconstructCommand, args=argv, description=__doc__)
    exit_on_input_error(run, command)


if __name__ == "__main__":
    main(sys.argv[1:])
