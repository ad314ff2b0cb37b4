"""What the orbit's views determine of the volume: volume PSNR / SSIM against the number of training views.

For each subject (the embedded MNI152 template, and one real scan when ``../shared/data`` is there) and
each number of training views on the same orbit (1, 4, 15, 72 by default: every 72nd, 18th, 5th view
and all of them; 8 and 36 are possible too), these arms side by side:

- ``field free``: the shipped ``mri-mednerf`` method (CPU preset) with its free colour head;
- ``field tied``: the same with the tied colour (``--pipeline.model.colour tied``: density k I, colour I);
- ``fbp``, ``sart``: filtered back-projection and SART per axial slice
  (:mod:`mri_nerfstudio.classical_reconstruction`) from ``drr`` views of the same volume on the same orbit
  (line integrals), the classical answer to the same question;
- ``tv grid``: a voxel grid of I tied to the ``volume`` image formation, fitted to the field's own views
  with total variation.

Every estimate is scored as ``ns-eval`` scores the field: volume PSNR / SSIM against the preprocessed
volume, inside the brain mask, on the preprocessed grid (:func:`mri_nerfstudio.metrics.volume_fidelity`).
The field arms and the tv grid also get the PSNR of held-out ``volume`` views (evenly spaced views of the
test split). The field arms run 2 seeds at 15 views and 1 elsewhere; fbp and sart are deterministic, the
tv grid runs once (seed 0). With 72 training views the orbit keeps no held-out view, so the field arms then
train on a 144-view orbit at 2.5 degrees (its even views are the 72 views; held out: its test views, all
between two training views). Prints a table, writes JSON (atomically) and a PNG of mid-slices.

    .venv/bin/python scripts/bench_volume.py --out benchmarks             # about 1-2 h on 2 shared cores
    .venv/bin/python scripts/bench_volume.py --quick --out /tmp/volume     # smoke run, a minute or two
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mri_nerfstudio import classical_reconstruction as classical
from mri_nerfstudio.atomic_write import write_atomically, write_json
from mri_nerfstudio.benchmarking import evenly_spaced, machine_info
from mri_nerfstudio.json_values import to_plain
from mri_nerfstudio.metrics import volume_fidelity
from mri_nerfstudio.nerf.field_sampling import reconstruct_in_mask
from mri_nerfstudio.nerf.session import TrainingSession, seed_everything
from mri_nerfstudio.nerf.training_config import shipped_config
from mri_nerfstudio.nerf.volume_export import TV_GRID_STEPS
from mri_nerfstudio.prepare import PrepareConfig, PreparedSubject, default_cache_dir, prepare_subjects
from mri_nerfstudio.view_split import orbit_view_split
from mri_nerfstudio.views import render_views

ORBIT_VIEWS = 72
"""Views on the shipped orbit (5-degree steps)."""
ARMS = ("field free", "field tied", "fbp", "sart", "tv grid")
FIELD_COLOURS = {"field free": "free", "field tied": "tied"}
SEEDED_VIEWS = 15
"""The view count at which the field arms run ``--seeds`` seeds (1 elsewhere)."""
REAL_SUBJECT = Path(__file__).resolve().parents[2] / "shared" / "data" / "brats2013-glioma" / "BraTS2013_0001"
TV_WEIGHT = 1e-3
"""Chosen on the val views of the template at 15 views (the held-out views that are not scored)."""


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--views", type=int, nargs="+", default=[1, 4, 15, 72], help="training views per orbit")
    parser.add_argument("--steps", type=int, default=1000, help="training steps of each field arm")
    parser.add_argument("--seeds", type=int, default=2, help=f"seeds of the field arms at {SEEDED_VIEWS} views")
    parser.add_argument(
        "--num-samples", type=int, default=None, help="samples per ray of the field (default: the preset's)"
    )
    parser.add_argument("--image-size", type=int, default=64, help="view size in pixels")
    parser.add_argument("--real", type=Path, default=REAL_SUBJECT, help="the real subject (skipped when absent)")
    parser.add_argument("--no-real", action="store_true", help="the template only")
    parser.add_argument("--no-template", action="store_true", help="the real subject only")
    parser.add_argument("--eval-views", type=int, default=12, help="held-out (test) views scored per run")
    parser.add_argument("--tv-steps", type=int, default=TV_GRID_STEPS, help="Adam steps of the tv grid")
    parser.add_argument("--tv-weight", type=float, default=TV_WEIGHT, help="total-variation weight of the tv grid")
    parser.add_argument("--tv-views-per-step", type=int, default=15, help="views rendered per tv grid step")
    parser.add_argument("--sart-iterations", type=int, default=2)
    parser.add_argument("--figure-views", type=int, default=SEEDED_VIEWS, help="view count shown in the figure")
    parser.add_argument("--out", type=Path, default=Path("benchmarks"), help="folder for the JSON and the PNG")
    parser.add_argument(
        "--runs-dir", type=Path, default=Path("bench_out/volume_runs"), help="the field runs' nerfstudio folders"
    )
    parser.add_argument("--tag", default="", help="suffix of the file names: volume[_TAG].json / .png")
    parser.add_argument("--cache-dir", type=Path, default=None, help="prepared-subject cache (default: the usual)")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run: 16 px, 3 steps, 15 views, template")
    args = parser.parse_args(argv)
    if args.quick:
        args.views, args.steps, args.seeds, args.image_size = [15], 3, 1, 16
        args.eval_views, args.tv_steps, args.no_real = 2, 3, True
    for count in args.views:
        train_every(count)  # refuses counts the orbit cannot give
    if args.figure_views not in args.views:
        args.figure_views = max(args.views)
    return args


@dataclass(frozen=True)
class Subject:
    """A subject as the benchmark uses it: its name, where it comes from and its preparation settings."""

    name: str
    data: Path | None
    prepare: PrepareConfig


def subjects_to_run(args: argparse.Namespace) -> list[Subject]:
    """The template and / or the real subject (with a message when it is absent)."""
    subjects = []
    if not args.no_template:
        subjects.append(Subject("MNI152", None, PrepareConfig(image_size=args.image_size)))
    if not args.no_real:
        if args.real.exists():
            # The reference modality only (t1ce: BraTS 2013 has no t1), with the subject's own brain mask file.
            real = PrepareConfig(image_size=args.image_size, modalities=("t1ce",))
            subjects.append(Subject(args.real.name, args.real, real))
        else:
            print(f"[bench_volume] real subject skipped: {args.real} is absent (../shared/data is not here)")
    return subjects


def train_every(count: int) -> int:
    """The ``--train-every`` of the 72-view orbit that gives ``count`` training views (1 for all 72)."""
    every = round(ORBIT_VIEWS / count) if count > 0 else 0
    if count < 1 or every < 1 or len(range(0, ORBIT_VIEWS, every)) != count:
        possible = sorted({len(range(0, ORBIT_VIEWS, e)) for e in range(1, ORBIT_VIEWS + 1)})
        raise SystemExit(
            f"--views: {count} training views is not every n-th view of {ORBIT_VIEWS}; choose from {possible}"
        )
    return every


def field_orbit(count: int) -> tuple[int, float, int]:
    """``n_views``, ``step_deg`` and ``train_every`` with which the field trains on ``count`` views of the 72-view
    orbit. All 72 views leave none held out, so they are the even views of a 144-view orbit at 2.5 degrees."""
    every = train_every(count)
    return (ORBIT_VIEWS, 5.0, every) if every > 1 else (2 * ORBIT_VIEWS, 2.5, 2)


def view_psnr(renders: np.ndarray, truths: np.ndarray) -> float:
    """Mean over views of each view's PSNR (dB, data range 1), as ``ns-eval`` averages them."""
    renders = np.clip(np.asarray(renders, dtype=np.float64), 0.0, 1.0)  # as nerfstudio clamps its renders
    mse = ((renders - truths) ** 2).mean(axis=(1, 2))
    return float(np.mean(10 * np.log10(1.0 / np.maximum(mse, 1e-20))))


def axial_mid_slice(volume: np.ndarray, prepared: PreparedSubject) -> np.ndarray:
    """The slice of ``volume`` (on the preprocessed grid) across the axis nearest world Z, through the mask's centre."""
    axis = int(np.argmax(np.abs(prepared.world_from_voxel[2, :3])))
    centre = int(np.round(np.argwhere(prepared.volume.brain_mask())[:, axis].mean()))
    return np.rot90(np.take(volume, centre, axis=axis))


def run_field(
    subject: Subject, colour: str, count: int, seed: int, prepared: PreparedSubject, args: argparse.Namespace
) -> tuple[dict, np.ndarray]:
    """Train the shipped method on ``count`` views with ``colour``; its scores and its estimate on the grid."""
    n_views, step_deg, every = field_orbit(count)
    prepare = dataclasses.replace(subject.prepare, n_views=n_views, step_deg=step_deg)
    config = shipped_config(subject.data, args.image_size, args.cache_dir, preset="cpu")
    config.pipeline.model.colour = colour
    config.pipeline.model.num_samples = args.num_samples
    config.max_num_iterations = args.steps
    dataparser = config.pipeline.datamanager.dataparser
    dataparser.prepare = prepare
    dataparser.train_every = every
    seed_everything(seed)
    start = time.perf_counter()
    session = TrainingSession(config, args.runs_dir, eval_split="test")
    for _ in range(args.steps):
        session.step()
    test_views = evenly_spaced(len(session.pipeline.datamanager.eval_dataset), args.eval_views)
    held_out = session.evaluate(test_views)
    session.pipeline.eval()  # the EMA weights, as ns-eval scores the volume
    estimate = reconstruct_in_mask(session.pipeline.model, prepared, 0)
    scores = volume_fidelity(estimate, prepared.volume.images[prepared.volume.reference], prepared.volume.brain_mask())
    row = {
        **scores,
        "held_out_psnr": held_out["psnr"],
        "held_out_views": len(test_views),
        "held_out_orbit": f"{n_views} views at {step_deg} degrees, test split",
        "seed": seed,
        "steps": session.step_count,
        "seconds": time.perf_counter() - start,
    }
    return row, estimate


def classical_arms(
    count: int, prepared: PreparedSubject, drr_views: np.ndarray, args: argparse.Namespace
) -> dict[str, tuple[dict, np.ndarray]]:
    """fbp, sart (from the ``drr`` views) and the tv grid (from the ``volume`` views) on ``count`` views."""
    every = train_every(count)
    train = list(range(0, ORBIT_VIEWS, every))
    cameras = prepared.cameras.subset(train)
    density_scale = prepared.config.density_scale
    reference = prepared.volume.images[prepared.volume.reference]
    mask, world_from_voxel = prepared.volume.brain_mask(), prepared.world_from_voxel
    results = {}
    builders = {
        "fbp": lambda: classical.filtered_back_projection(drr_views[train], cameras, density_scale),
        "sart": lambda: classical.sart(drr_views[train], cameras, density_scale, iterations=args.sart_iterations),
        "tv grid": lambda: classical.fit_tied_voxel_grid(
            prepared.images[train],
            cameras,
            density_scale,
            size=args.image_size + 1,
            tv_weight=args.tv_weight,
            steps=args.tv_steps,
            views_per_step=args.tv_views_per_step,
        ),
    }
    for arm, build in builders.items():
        start = time.perf_counter()
        grid = build()
        estimate = grid.on_grid(mask, world_from_voxel)
        row = {**volume_fidelity(estimate, reference, mask), "seed": 0 if arm == "tv grid" else None}
        if arm == "tv grid" and every > 1:
            split = orbit_view_split(prepared.config, every)
            test = [split.test[i] for i in evenly_spaced(len(split.test), args.eval_views)]
            samples = 2 * (grid.values.shape[0] - 1)
            renders = classical.render_axial_orbit(
                torch.from_numpy(grid.values), prepared.cameras.subset(test), density_scale, samples
            )
            row["held_out_psnr"], row["held_out_views"] = view_psnr(renders.numpy(), prepared.images[test]), len(test)
            row["held_out_orbit"] = f"{ORBIT_VIEWS} views at 5.0 degrees, test split"
        row["seconds"] = time.perf_counter() - start
        results[arm] = (row, estimate)
    return results


def summarise(runs: list[dict]) -> dict:
    """One table row from the runs of an arm at a view count: means (and each seed's value) of the scores."""
    row = {"runs": runs, "seeds": [run.get("seed") for run in runs]}
    for key in ("volume_psnr", "volume_ssim", "held_out_psnr"):
        values = [run[key] for run in runs if run.get(key) is not None]
        row[key] = float(np.mean(values)) if values else None
        row[f"{key}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return row


@dataclass
class SubjectRun:
    """One subject's prepared data, and what the benchmark has measured on it so far."""

    subject: Subject
    prepared: PreparedSubject
    drr_views: np.ndarray
    """[72, H, W] ``drr`` views of the preprocessed volume on the orbit (for fbp and sart)."""
    rows: list[dict] = dataclasses.field(default_factory=list)
    slices: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    """The figure's mid-slices: ``truth`` and each arm at ``--figure-views``."""

    def report(self) -> dict:
        reference = self.prepared.volume.images[self.prepared.volume.reference]
        return {
            "subject": self.subject.name,
            "data": "embedded MNI152 template" if self.subject.data is None else str(self.subject.data),
            "grid": list(reference.shape),
            "mask_voxels": int(self.prepared.volume.brain_mask().sum()),
            "rows": sorted(self.rows, key=lambda row: (row["views"], ARMS.index(row["arm"]))),
            "goal_at_15_views": goal(self.rows),
        }


def set_up_subject(subject: Subject, args: argparse.Namespace) -> SubjectRun:
    """Prepare the subject on the 72-view orbit and render its ``drr`` views."""
    cache_dir = args.cache_dir or default_cache_dir()
    (prepared,) = prepare_subjects(subject.data, cache_dir, subject.prepare, progress=lambda m: print(f"[prepare] {m}"))
    reference = prepared.volume.images[prepared.volume.reference]
    drr_views = render_views(
        torch.from_numpy(reference).float(),
        prepared.world_from_voxel,
        prepared.cameras,
        "drr",
        prepared.config.density_scale,
    ).numpy()
    run = SubjectRun(subject, prepared, drr_views)
    run.slices["truth"] = axial_mid_slice(np.where(prepared.volume.brain_mask(), reference, 0.0), prepared)
    return run


def benchmark_views(run: SubjectRun, count: int, args: argparse.Namespace) -> None:
    """Every arm on ``count`` training views of one subject: rows (and figure slices) added to ``run``."""
    runs: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    for arm, (row, estimate) in classical_arms(count, run.prepared, run.drr_views, args).items():
        runs[arm].append(row)
        if count == args.figure_views:
            run.slices[arm] = axial_mid_slice(estimate, run.prepared)
    for seed in range(args.seeds) if count == SEEDED_VIEWS else range(1):
        for arm, colour in FIELD_COLOURS.items():
            row, estimate = run_field(run.subject, colour, count, seed, run.prepared, args)
            runs[arm].append(row)
            if count == args.figure_views and seed == 0:
                run.slices[arm] = axial_mid_slice(estimate, run.prepared)
            print(
                f"[{run.subject.name}] {count:2d} views {arm:10s} seed {seed}: "
                f"volume PSNR {row['volume_psnr']:.2f} dB, "
                f"SSIM {row['volume_ssim']:.3f}, held-out PSNR {row['held_out_psnr']:.2f} dB ({row['seconds']:.0f} s)",
                flush=True,
            )
    run.rows += [{"arm": arm, "views": count, **summarise(runs[arm])} for arm in ARMS]


def goal(rows: list[dict]) -> dict | None:
    """At 15 views: the better field arm against the best classical arm (goal: at least 1 dB above it)."""
    at_15 = {row["arm"]: row for row in rows if row["views"] == SEEDED_VIEWS}
    if not at_15:
        return None
    field = max(FIELD_COLOURS, key=lambda arm: at_15[arm]["volume_psnr"])
    best_classical = max(("fbp", "sart", "tv grid"), key=lambda arm: at_15[arm]["volume_psnr"])
    margin = at_15[field]["volume_psnr"] - at_15[best_classical]["volume_psnr"]
    return {
        "field_arm": field,
        "best_classical_arm": best_classical,
        "margin_db": margin,
        "met": margin >= 1.0,
        "tied_minus_free_volume_psnr_db": at_15["field tied"]["volume_psnr"] - at_15["field free"]["volume_psnr"],
        "tied_minus_free_held_out_psnr_db": at_15["field tied"]["held_out_psnr"] - at_15["field free"]["held_out_psnr"],
    }


def table(reports: list[dict]) -> str:
    header = (
        f"{'subject':<16} {'views':>5} {'arm':<10} {'volume PSNR':>16} {'volume SSIM':>12} "
        f"{'held-out PSNR':>16} {'seeds':>6}"
    )
    lines = [header, "-" * len(header)]
    for report in reports:
        for row in report["rows"]:
            spread = f" +- {row['volume_psnr_std']:.2f}" if row["volume_psnr_std"] is not None else ""
            held_out = "" if row["held_out_psnr"] is None else f"{row['held_out_psnr']:.2f}"
            seeds = len(row["runs"]) if row["arm"] in FIELD_COLOURS or row["arm"] == "tv grid" else "-"
            lines.append(
                f"{report['subject']:<16} {row['views']:>5} {row['arm']:<10} {row['volume_psnr']:>8.2f}{spread:<8} "
                f"{row['volume_ssim']:>12.3f} {held_out:>16} {seeds!s:>6}"
            )
        met = report["goal_at_15_views"]
        if met is not None:
            lines.append(
                f"{report['subject']}: at 15 views {met['field_arm']} - {met['best_classical_arm']} = "
                f"{met['margin_db']:+.2f} dB (goal >= +1 dB: {'met' if met['met'] else 'not met'}); tied - free: "
                f"{met['tied_minus_free_volume_psnr_db']:+.2f} dB volume, "
                f"{met['tied_minus_free_held_out_psnr_db']:+.2f} dB held-out"
            )
    return "\n".join(lines)


def plot(slices_per_subject: dict[str, dict[str, np.ndarray]], views: int, path: Path) -> None:
    """Mid-slices: one row per subject, truth then each arm at ``views`` training views, intensities 0..1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = ["truth", *ARMS]
    size = (2.2 * len(columns), 2.4 * len(slices_per_subject))
    figure, axes = plt.subplots(len(slices_per_subject), len(columns), figsize=size, squeeze=False)
    for axes_row, (name, slices) in zip(axes, slices_per_subject.items()):
        for axis, column in zip(axes_row, columns):
            axis.imshow(slices[column], cmap="gray", vmin=0.0, vmax=1.0)
            axis.set_title(f"{name}: {column}" if column == "truth" else column, fontsize=8)
            axis.axis("off")
    figure.suptitle(f"axial mid-slice, inside the brain mask: truth and each estimate from {views} views", fontsize=9)
    figure.tight_layout()
    write_atomically(path, lambda temporary: figure.savefig(temporary, dpi=110, format="png"))
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started, start = time.strftime("%Y-%m-%d %H:%M"), time.perf_counter()
    machine = machine_info()
    suffix = f"_{args.tag}" if args.tag else ""
    json_path = args.out / f"volume{suffix}.json"
    figure_path = args.out / f"volume{suffix}_{args.figure_views}views.png"
    runs = [set_up_subject(subject, args) for subject in subjects_to_run(args)]

    def write_report() -> dict:
        report = {
            "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
            "date": started,
            "wall_seconds": time.perf_counter() - start,
            "machine": machine,
            "load_average_at_end": os.getloadavg(),
            "settings": to_plain(vars(args)),
            "field_seeds": f"{args.seeds} at {SEEDED_VIEWS} views, 1 (seed 0) at the other counts",
            "subjects": [run.report() for run in runs],
        }
        write_json(json_path, report)
        return report

    # View counts outside, subjects inside, the JSON rewritten after each: the first counts given are complete first.
    for count in args.views:
        for run in runs:
            benchmark_views(run, count, args)
            write_report()
    report = write_report()
    print("\n" + table(report["subjects"]))
    if runs:
        plot({run.subject.name: run.slices for run in runs}, args.figure_views, figure_path)
    minutes = report["wall_seconds"] / 60
    load = report["load_average_at_end"]
    print(f"\nJSON: {json_path}\nfigure: {figure_path}\nwall: {minutes:.1f} min, load average at the end {load}")


if __name__ == "__main__":
    main()
