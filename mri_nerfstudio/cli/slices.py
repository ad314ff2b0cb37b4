"""``mri-slices``: planes through a trained mri-mednerf field beside the input scan, as PNG montages.

Examples::

    mri-slices --load-config outputs/.../config.yml --out slices/                       # 3 axial planes
    mri-slices --load-config .../config.yml --out slices/ --plane coronal --positions -20 0 20
    mri-slices --load-config .../config.yml --out slices/ --plane oblique --normal 0 0.5 0.87 --offset-mm 10

Positions are scanner millimetres (RAS, as the input NIfTI's affine gives them): the axial plane at
``--positions 12`` is z = 12 mm, the coronal one y, the sagittal one x. An oblique plane is
``normal . (x, y, z) = offset`` with ``--normal`` in RAS (normalised here) and ``--offset-mm``. Without
positions or offsets, three planes cross the brain at a quarter, half and three quarters of its extent.

Writes ``<out>/<subject>/`` for each subject (or the one ``--subject`` names), each file atomically:

- ``slices.png``: one row per plane: the field's intensity estimate (density / k), the input scan (the
  preprocessed reference modality the views were rendered from), their difference and the estimate's
  uncertainty (a standard deviation, :mod:`mri_nerfstudio.uncertainty`: the blend term computed here, or
  with ``--uncertainty`` the ``uncertainty.nii.gz`` that ``mri-export`` wrote, ensemble term included),
  radiological display (the patient's right on the image's left; anterior on the left of sagittal slices);
- ``slices.json``: each plane's geometry (normal, offset, centre, image axes in RAS, pixel size, shape),
  the PSNR / mean absolute error of the field against the input and the mean uncertainty, inside the brain
  mask on that plane.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import tyro

from mri_nerfstudio.atomic_write import write_atomically, write_json
from mri_nerfstudio.cli.errors import exit_on_input_error
from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.slices import (
    ANATOMICAL_AXES,
    SlicePlane,
    anatomical_plane,
    oblique_plane,
    sample_volume_on_plane,
    unit_normal,
)
from mri_nerfstudio.uncertainty import blend_spread

PLANES = (*ANATOMICAL_AXES, "oblique")
ERROR_RANGE = 0.5
"""The difference images span -0.5..0.5 (intensities are in [0, 1])."""
UNCERTAINTY_RANGE = 0.25
"""The uncertainty images span 0..0.25 (the blend term alone peaks at 0.16)."""


@dataclass
class SlicesCommand:
    """Planes through a trained mri-mednerf field beside the input scan and their difference, in scanner mm."""

    load_config: Path
    """The run's config.yml (as for ns-eval)."""
    out: Path = Path("slices")
    """Folder that receives one sub-folder per subject (created when missing)."""
    subject: Optional[str] = None
    """Only this subject (a name from the run's data); default: every subject."""
    plane: str = "axial"
    """axial, coronal, sagittal or oblique (oblique needs --normal)."""
    positions: Optional[Tuple[float, ...]] = None
    """Anatomical planes: RAS mm along the plane's normal (axial: z, coronal: y, sagittal: x); default: a
    quarter, half and three quarters through the brain."""
    normal: Optional[Tuple[float, float, float]] = None
    """Oblique planes: the normal in RAS (x y z; normalised here)."""
    offset_mm: Optional[Tuple[float, ...]] = None
    """Oblique planes: normal . (x, y, z) in mm, one plane per value; default: through the brain as above."""
    pixel_mm: Optional[float] = None
    """Pixel size in mm; default: the input grid's smallest voxel spacing."""
    uncertainty: Optional[Path] = None
    """An mri-export output folder: its <subject>/uncertainty.nii.gz is shown (default: the blend term of
    the field on each plane, computed here)."""


def check_plane_arguments(command: SlicesCommand) -> None:
    """One-line errors for arguments that do not describe planes."""
    if command.plane not in PLANES:
        raise MRIInputError(f"--plane must be one of {', '.join(PLANES)}; got {command.plane!r}")
    if command.plane == "oblique":
        if command.normal is None:
            raise MRIInputError("--plane oblique needs --normal X Y Z (RAS)")
        if command.positions is not None:
            raise MRIInputError("--positions places anatomical planes; an oblique plane takes --offset-mm")
        unit_normal(command.normal)
    else:
        if command.normal is not None or command.offset_mm is not None:
            raise MRIInputError(
                f"--normal and --offset-mm describe oblique planes; use --plane oblique, not {command.plane}"
            )
    values = (command.positions or ()) + (command.offset_mm or ())
    if command.positions == () or command.offset_mm == () or not np.isfinite(values).all():
        raise MRIInputError("--positions and --offset-mm need at least one finite number of millimetres")


def planes_for(command: SlicesCommand, volume) -> list[SlicePlane]:
    """The planes ``command`` asks for, cropped to the subject's scanner grid."""
    from mri_nerfstudio.grids import scanner_grid

    grid = scanner_grid(volume)
    bounds = grid.ras_bounds()
    pixel_mm = min(grid.spacing_mm) if command.pixel_mm is None else command.pixel_mm
    if command.plane == "oblique":
        normal = unit_normal(command.normal)
        offsets = command.offset_mm or through_the_brain(volume, normal)
        return [oblique_plane(normal, float(offset), bounds, pixel_mm) for offset in offsets]
    positions = command.positions or through_the_brain(volume, np.asarray(ANATOMICAL_AXES[command.plane][0]))
    return [anatomical_plane(command.plane, float(position), bounds, pixel_mm) for position in positions]


def through_the_brain(volume, direction: np.ndarray) -> list[float]:
    """Offsets (mm along ``direction``) a quarter, half and three quarters through the brain mask."""
    voxels = np.argwhere(volume.brain_mask())
    distances = (voxels @ volume.affine[:3, :3].T + volume.affine[:3, 3]) @ direction
    low, high = float(distances.min()), float(distances.max())
    return [round(low + fraction * (high - low), 1) for fraction in (0.25, 0.5, 0.75)]


def field_on_plane(model, prepared, subject: int, plane: SlicePlane) -> np.ndarray:
    """[H, W] float32: the field's intensity estimate for subject ``subject`` at the plane's pixel centres."""
    from mri_nerfstudio.nerf.field_sampling import field_at_world
    from mri_nerfstudio.slices import plane_points

    world_from_ras = prepared.normalization.world_from_ras()
    points = plane_points(plane).reshape(-1, 3)
    world = points @ world_from_ras[:3, :3].T + world_from_ras[:3, 3]
    return field_at_world(model, subject, world).reshape(plane.shape)


def plane_scores(field: np.ndarray, scan: np.ndarray, uncertainty: np.ndarray, mask: np.ndarray) -> dict:
    """PSNR (dB, data range 1) and mean absolute error of ``field`` against ``scan``, and the mean
    ``uncertainty``, inside ``mask``."""
    if not mask.any():
        return {"mask_pixels": 0, "psnr": None, "mean_abs_error": None, "mean_uncertainty": None}
    error = field[mask] - scan[mask]
    mse = float(np.mean(error**2))
    return {
        "mask_pixels": int(mask.sum()),
        "psnr": float(10 * np.log10(1.0 / max(mse, 1e-20))),
        "mean_abs_error": float(np.abs(error).mean()),
        "mean_uncertainty": float(uncertainty[mask].mean()),
    }


def uncertainty_volume(command: SlicesCommand, subject: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(array, affine) of ``<--uncertainty>/<subject>/uncertainty.nii.gz``, or None without ``--uncertainty``."""
    from mri_nerfstudio.nerf.volume_export import UNCERTAINTY_FILE
    from mri_nerfstudio.volume import read_image

    if command.uncertainty is None:
        return None
    path = command.uncertainty / subject / UNCERTAINTY_FILE
    if not path.is_file():
        raise MRIInputError(f"no {UNCERTAINTY_FILE} for {subject}: expected the folder mri-export --out wrote", path)
    image = read_image(path)
    return np.asarray(image.dataobj, dtype=np.float32), image.affine


def write_montage(
    rows: list[tuple[SlicePlane, np.ndarray, np.ndarray, np.ndarray]], path: Path, title: str
) -> None:
    """One row per plane: field, input scan, field - input, uncertainty (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(rows), 4, figsize=(12, 3 * len(rows)), squeeze=False)
    for axes_row, (plane, field, scan, uncertainty) in zip(axes, rows):
        panels = (
            ("field", field, "gray", 0.0, 1.0),
            ("input", scan, "gray", 0.0, 1.0),
            ("field - input", field - scan, "RdBu_r", -ERROR_RANGE, ERROR_RANGE),
            ("uncertainty (std)", uncertainty, "magma", 0.0, UNCERTAINTY_RANGE),
        )
        for axis, (name, image, colours, low, high) in zip(axes_row, panels):
            shown = axis.imshow(image, cmap=colours, vmin=low, vmax=high, interpolation="nearest")
            axis.set_title(f"{name}\n{plane.label}", fontsize=8)
            axis.axis("off")
            if name != "field":
                figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.04)
    figure.suptitle(title, fontsize=9)
    write_atomically(path, lambda tmp: figure.savefig(tmp, dpi=100, format="png"))
    plt.close(figure)


def slice_subject(model, prepared, subject: int, command: SlicesCommand, out: Path) -> dict:
    """Write one subject's montage and JSON into ``out``; return the JSON's content."""
    volume = prepared.volume
    planes = planes_for(command, volume)
    scan, mask = volume.images[volume.reference], volume.brain_mask().astype(np.float32)
    exported = uncertainty_volume(command, prepared.name)
    rows, records = [], []
    for plane in planes:
        field = field_on_plane(model, prepared, subject, plane)
        scan_on_plane = sample_volume_on_plane(scan, volume.affine, plane)
        mask_on_plane = sample_volume_on_plane(mask, volume.affine, plane, order=0) > 0.5
        uncertainty = blend_spread(field) if exported is None else sample_volume_on_plane(*exported, plane)
        rows.append((plane, field, scan_on_plane, uncertainty))
        records.append({**plane.describe(), **plane_scores(field, scan_on_plane, uncertainty, mask_on_plane)})
    out.mkdir(parents=True, exist_ok=True)
    write_montage(rows, out / "slices.png",
                  f"{prepared.name}: field, input ({volume.reference}), difference and uncertainty")
    summary = {
        "subject": prepared.name,
        "uncertainty": "blend term of the field" if exported is None else str(command.uncertainty / prepared.name),
        "display": "radiological: patient right on the image left (axial, coronal); anterior on the left (sagittal)",
        "intensity_units": "preprocessed reference modality (normalised, equalised), in [0, 1]",
        "planes": records,
    }
    write_json(out / "slices.json", summary)
    return summary


def run(command: SlicesCommand) -> dict[str, dict]:
    """Slice every selected subject; return ``slices.json``'s content per subject name."""
    from mri_nerfstudio.nerf.trained_run import load_mednerf_run, selected_subjects

    check_plane_arguments(command)
    trained = load_mednerf_run(command.load_config)
    if trained.model.view_mode == "mip":
        raise MRIInputError("the run was trained on mip views, which never constrain density: no volume to slice",
                            command.load_config)
    summaries = {}
    for index, prepared in selected_subjects(trained, command.subject, command.load_config):
        summary = slice_subject(trained.model, prepared, index, command, command.out / prepared.name)
        scores = ", ".join(
            f"{plane['label']}: {plane['psnr']:.1f} dB" if plane["psnr"] is not None else f"{plane['label']}: no brain"
            for plane in summary["planes"]
        )
        print(f"[mri-slices] {prepared.name}: {command.out / prepared.name / 'slices.png'} ({scores})", flush=True)
        summaries[prepared.name] = summary
    return summaries


def main(argv: list[str] | None = None) -> None:
    command = tyro.cli(SlicesCommand, args=argv, description=__doc__)
    exit_on_input_error(run, command)


if __name__ == "__main__":
    main(sys.argv[1:])
