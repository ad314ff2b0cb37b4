"""Benchmark of subject preparation (issue 2): seconds per stage for one BraTS-size subject.

Writes one SIMULATED BraTS 2021 subject (T1, T1ce, T2, FLAIR and seg on a 240 x 240 x 155 grid of
1 mm voxels; the non-reference modalities carry the phantom's known rigid misalignment, so the
registration does real work), then times, with the project's own functions:

1. each stage run one by one, as ``prepare_subject`` runs them: ``load_volume``, every step of
   ``preprocessing_pipeline`` (register, normalise percentiles, equalise), ``render_subject_views``
   (72 views at 128 px);
2. ``prepare_subject`` end to end into a fresh cache folder (split by its progress messages, so the
   writing of the cache is timed too), then again on the same cache (a cached re-run).

Wall-clock and process CPU time are both recorded: the CPU time is the steadier of the two when
other processes share the machine. With ``--registration-variants`` it also times the registration
step with the obvious speed knobs changed (:data:`REGISTRATION_VARIANTS`, one SimpleITK thread).

It prints a table, states the dominating stage, and writes JSON: seconds per stage, the end-to-end
figures, the registration error against the phantom's truth, and the machine (CPU count, threads,
platform, torch version, load average, which tells whether other processes shared the CPU).

Example::

    .venv/bin/python scripts/bench_prepare.py --out /tmp/bench_prepare --registration-variants
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import SimpleITK as sitk
import torch

from mri_nerfstudio.atomic_write import write_json
from mri_nerfstudio.benchmarking import cpu_model
from mri_nerfstudio.cli.errors import exit_on_input_error
from mri_nerfstudio.json_values import to_plain
from mri_nerfstudio.phantom import PhantomConfig, make_phantom, write_brats_subject
from mri_nerfstudio.prepare import (
    PrepareConfig,
    load_volume,
    prepare_subject,
    preprocessing_pipeline,
    render_subject_views,
)
from mri_nerfstudio.preprocess.register import RegisterToReference, rotation_angle_deg
from mri_nerfstudio.volume import Volume

GOAL_SECONDS = 30.0
"""Issue 2's goal for one whole BraTS-size subject on the 2-core development machine."""

RENDER_STAGE = "render_views"
LOAD_STAGE = "load"

REGISTRATION_VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "no pyramid smoothing": {"smoothing_sigmas_mm": (0.0, 0.0, 0.0)},
    "single 2 mm level": {"shrink_factors": (2,), "smoothing_sigmas_mm": (1.0,)},
    "single 4 mm level": {"shrink_factors": (4,), "smoothing_sigmas_mm": (2.0,)},
}
"""Parameter changes of the registration step timed by ``--registration-variants`` (the obvious speed knobs)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Time the preparation of one BraTS-size SIMULATED subject: load, each preprocessing step "
            "(register, normalise, equalise), the 72 views, then prepare_subject end to end with a fresh "
            "cache and a cached re-run. Prints a table and writes JSON."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=Path("bench_out/prepare"),
                        help="work folder: the phantom subject (brats/) and the cache (cache/) go here")
    parser.add_argument("--seed", type=int, default=0, help="phantom seed (tumour, misalignment, bias, noise)")
    parser.add_argument("--shape", type=int, nargs=3, default=(240, 240, 155), metavar=("X", "Y", "Z"),
                        help="phantom grid in 1 mm voxels (BraTS 2021: 240 240 155)")
    parser.add_argument("--image-size", type=int, default=128, help="view size in pixels")
    parser.add_argument("--n-views", type=int, default=72, help="number of views (5-degree steps)")
    parser.add_argument("--upsample-factor", type=int, default=1,
                        help="in-plane bicubic up-sampling of the rescale step (1: off, the default for 1 mm data)")
    parser.add_argument("--registration-variants", action="store_true",
                        help="also time variants of the registration step (pyramid levels, smoothing, 1 SimpleITK "
                             "thread) on the same subject, with their errors against the phantom's truth")
    parser.add_argument("--json", type=Path, default=None,
                        help="where to write the JSON results (None: <out>/bench_prepare.json)")
    return parser.parse_args(argv)


def machine_info() -> dict[str, Any]:
    """What the figures depend on: cores, thread pools, platform and library versions."""
    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "sitk_threads": sitk.ProcessObject.GetGlobalDefaultNumberOfThreads(),
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "simpleitk": sitk.Version.VersionString(),
        "numpy": np.__version__,
        "cuda_available": torch.cuda.is_available(),
    }


def write_phantom_subject(root: Path, seed: int, shape: tuple[int, int, int]) -> tuple[Path, dict[str, Any]]:
    """Write one BraTS-layout SIMULATED subject under ``root`` (replacing an earlier one); return it and its truth."""
    phantom = make_phantom(seed, PhantomConfig(shape=shape))
    return write_brats_subject(phantom, root, index=seed), phantom.truth


class Timing(NamedTuple):
    """Duration of one piece of work, in seconds."""

    wall: float
    cpu: float
    """CPU time of this process, all threads: less sensitive than ``wall`` to other processes on the machine."""


def timed(function: Callable[[], Any]) -> tuple[Any, Timing]:
    """``function()``'s result and its duration."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, Timing(time.perf_counter() - wall, time.process_time() - cpu)


def time_stages(source: Path, config: PrepareConfig) -> tuple[dict[str, Timing], Volume, list[dict[str, Any]]]:
    """Run the stages of ``prepare_subject`` one by one (no cache writing) and time each.

    Returns:
        the duration of every stage (``load``, each preprocessing step by name, ``render_views``),
        the preprocessed volume, and the provenance records of the preprocessing steps.
    """
    timings: dict[str, Timing] = {}
    volume, timings[LOAD_STAGE] = timed(partial(load_volume, source, config))
    provenance = []
    for step in preprocessing_pipeline(config).steps:
        (volume, record), timings[step.name] = timed(partial(step, volume))
        provenance.append(record)
    _, timings[RENDER_STAGE] = timed(partial(render_subject_views, volume, config))
    return timings, volume, provenance


def time_end_to_end(source: Path, cache_dir: Path, config: PrepareConfig) -> dict[str, Any]:
    """Wall-clock seconds of ``prepare_subject`` into an emptied ``cache_dir``, then again from the cache.

    The fresh run is split at its progress messages (``"<subject>: loading"``, ``": preprocessing ..."``,
    ``": rendering ..."``, ``": writing ..."``; each part is named by the message's first word), plus
    ``before_loading``: hashing the input files, which decides whether the cache holds the subject.
    """
    shutil.rmtree(cache_dir, ignore_errors=True)
    marks: list[tuple[str, float]] = []

    def mark(message: str) -> None:
        marks.append((message.split(": ", 1)[1].split(" ")[0], time.perf_counter()))

    start, start_cpu = time.perf_counter(), time.process_time()
    prepare_subject(source, cache_dir, config, progress=mark)
    end, fresh_cpu = time.perf_counter(), time.process_time() - start_cpu
    times = [start, *(t for _, t in marks), end]
    split = {"before_loading": times[1] - times[0]}
    split.update({name: times[i + 2] - times[i + 1] for i, (name, _) in enumerate(marks)})
    _, cached = timed(partial(prepare_subject, source, cache_dir, config))
    return {
        "fresh_seconds": end - start,
        "fresh_cpu_seconds": fresh_cpu,
        "fresh_split_seconds": split,
        "cached_seconds": cached.wall,
    }


def registration_errors(
    provenance: list[dict[str, Any]], truth: dict[str, Any], volume: Volume, stride: int = 2
) -> dict[str, dict[str, float]]:
    """Estimated vs true misalignment of every registered modality, over the brain.

    Both matrices map reference (fixed) RAS mm to the modality's RAS mm. The residual
    ``truth^-1 @ estimate`` is summarised by its rotation angle (deg) and by how far it moves the
    brain's voxel centres (mm, mean and max, every ``stride``-th voxel along each axis). The true
    misalignment is summarised the same way, for scale.
    """
    register = next((record for record in provenance if record["step"] == "register_to_reference"), None)
    if register is None:
        return {}
    brain = np.argwhere(volume.brain_mask()[::stride, ::stride, ::stride]) * stride
    points = np.c_[brain, np.ones(len(brain))] @ volume.affine.T  # [P, 4] RAS mm

    def moved_mm(matrix: np.ndarray) -> np.ndarray:
        return np.linalg.norm(points @ (matrix - np.eye(4)).T, axis=1)

    errors = {}
    for modality, estimate in register["estimates"].items():
        true_matrix = np.asarray(truth["modalities"][modality]["misalignment"]["matrix_ras"])
        residual = np.linalg.inv(true_matrix) @ np.asarray(estimate["transform"]["matrix_ras"])
        errors[modality] = {
            "true_rotation_deg": rotation_angle_deg(true_matrix),
            "true_mean_displacement_mm": float(moved_mm(true_matrix).mean()),
            "rotation_error_deg": rotation_angle_deg(residual),
            "mean_error_mm": float(moved_mm(residual).mean()),
            "max_error_mm": float(moved_mm(residual).max()),
        }
    return errors


def time_registration_variants(
    volume: Volume, step: RegisterToReference, truth: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """Time ``step`` and its :data:`REGISTRATION_VARIANTS` (and ``step`` on 1 SimpleITK thread) on the
    loaded, unregistered ``volume``; each with its errors against the phantom's ``truth``."""
    runs = [(name, changes, None) for name, changes in REGISTRATION_VARIANTS.items()]
    runs.append(("default, 1 SimpleITK thread", {}, 1))
    default_threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    results = {}
    for name, changes, threads in runs:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads or default_threads)
        try:
            (_, record), timing = timed(partial(replace(step, **changes), volume))
        finally:
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(default_threads)
        errors = registration_errors([record], truth, volume)
        results[name] = {
            "changes": {**changes, **({"sitk_threads": threads} if threads else {})},
            "wall_seconds": timing.wall,
            "cpu_seconds": timing.cpu,
            "worst_rotation_error_deg": max(error["rotation_error_deg"] for error in errors.values()),
            "worst_mean_error_mm": max(error["mean_error_mm"] for error in errors.values()),
            "errors": errors,
        }
    return results


def format_variants_table(variants: dict[str, dict[str, Any]]) -> str:
    """Markdown table of :func:`time_registration_variants`: times, CPU ratio to the default, worst errors."""
    default_cpu = variants["default"]["cpu_seconds"]
    rows = [
        f"| {name} | {result['wall_seconds']:.2f} | {result['cpu_seconds']:.2f} | "
        f"{result['cpu_seconds'] / default_cpu:.2f} | {result['worst_rotation_error_deg']:.3f} | "
        f"{result['worst_mean_error_mm']:.3f} |"
        for name, result in variants.items()
    ]
    return "\n".join(
        [
            "| registration variant | wall s | CPU s | CPU / default "
            "| worst rotation error deg | worst mean error mm |",
            "|---|---:|---:|---:|---:|---:|",
            *rows,
        ]
    )


def format_table(stages: dict[str, Timing], end_to_end: dict[str, Any]) -> str:
    """Markdown table: wall and CPU seconds and wall-clock share of every stage, their sum, the end-to-end runs."""
    wall = sum(timing.wall for timing in stages.values())
    cpu = sum(timing.cpu for timing in stages.values())
    rows = [
        f"| {name} | {timing.wall:.2f} | {timing.cpu:.2f} | {100 * timing.wall / wall:.0f} % |"
        for name, timing in stages.items()
    ]
    split = ", ".join(f"{name} {seconds:.2f}" for name, seconds in end_to_end["fresh_split_seconds"].items())
    return "\n".join(
        [
            "| stage | wall s | CPU s | share of wall |",
            "|---|---:|---:|---:|",
            *rows,
            f"| **sum of stages** | **{wall:.2f}** | **{cpu:.2f}** | 100 % |",
            f"| prepare_subject, fresh cache ({split}) | {end_to_end['fresh_seconds']:.2f} "
            f"| {end_to_end['fresh_cpu_seconds']:.2f} | |",
            f"| prepare_subject, cached re-run | {end_to_end['cached_seconds']:.2f} | | |",
        ]
    )


def dominant_stage(stages: dict[str, Timing], clock: str) -> str:
    """The stage that takes longest on ``clock`` (``wall`` or ``cpu``)."""
    return max(stages, key=lambda name: getattr(stages[name], clock))


def format_conclusion(stages: dict[str, Timing], end_to_end: dict[str, Any], errors: dict[str, dict]) -> str:
    """The dominating stage (wall and CPU time), the verdict on the goal, and the registration errors."""
    lines = []
    for clock, label in (("wall", "wall"), ("cpu", "CPU")):
        name = dominant_stage(stages, clock)
        seconds = getattr(stages[name], clock)
        share = seconds / sum(getattr(timing, clock) for timing in stages.values())
        lines.append(f"dominating stage ({label} time): {name} ({seconds:.2f} s, {100 * share:.0f} % of the stages)")
    fresh = end_to_end["fresh_seconds"]
    verdict = "meets" if fresh < GOAL_SECONDS else "misses"
    lines.append(
        f"whole subject (prepare_subject, fresh cache): {fresh:.2f} s: {verdict} the {GOAL_SECONDS:.0f} s goal"
    )
    lines += [
        f"registration {modality}: true misalignment {error['true_rotation_deg']:.2f} deg, "
        f"{error['true_mean_displacement_mm']:.2f} mm mean; error {error['rotation_error_deg']:.3f} deg, "
        f"{error['mean_error_mm']:.3f} mm mean, {error['max_error_mm']:.3f} mm max"
        for modality, error in errors.items()
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace, command: str) -> None:
    """Write the subject, time it, print the table and the conclusion, write the JSON."""
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    shape = tuple(args.shape)
    config = PrepareConfig(image_size=args.image_size, n_views=args.n_views, upsample_factor=args.upsample_factor)
    load_before = os.getloadavg()

    print(f"writing a SIMULATED {shape} subject (seed {args.seed}) under {args.out / 'brats'} ...", flush=True)
    (source, truth), phantom = timed(partial(write_phantom_subject, args.out / "brats", args.seed, shape))
    print("timing the stages one by one ...", flush=True)
    stages, volume, provenance = time_stages(source, config)
    print("timing prepare_subject end to end (fresh cache, then cached) ...", flush=True)
    end_to_end = time_end_to_end(source, args.out / "cache", config)

    errors = registration_errors(provenance, truth, volume)
    print()
    print(format_table(stages, end_to_end))
    print()
    print(format_conclusion(stages, end_to_end, errors))
    variants = {}
    if args.registration_variants:
        print("timing registration variants ...", flush=True)
        step = next(step for step in preprocessing_pipeline(config).steps if isinstance(step, RegisterToReference))
        variants = time_registration_variants(load_volume(source, config), step, truth)
        print()
        print(format_variants_table(variants))
        print()
    load_after = os.getloadavg()
    print(f"load average (1, 5, 15 min): before {load_before}, after {load_after}")

    payload = {
        "benchmark": "prepare",
        "date": started,
        "command": command,
        "subject": {
            "simulated": True,
            "shape": shape,
            "spacing_mm": 1.0,
            "seed": args.seed,
            "modalities": volume.modalities,
            "phantom_seconds": phantom.wall,
        },
        "config": asdict(config),
        "stages_seconds": {name: timing.wall for name, timing in stages.items()},
        "stages_cpu_seconds": {name: timing.cpu for name, timing in stages.items()},
        "sum_of_stages_seconds": sum(timing.wall for timing in stages.values()),
        "dominant_stage": dominant_stage(stages, "wall"),
        "dominant_stage_cpu": dominant_stage(stages, "cpu"),
        "end_to_end": end_to_end,
        "goal_seconds": GOAL_SECONDS,
        "meets_goal": end_to_end["fresh_seconds"] < GOAL_SECONDS,
        "registration_errors": errors,
        "registration_variants": variants,
        "machine": {**machine_info(), "load_average_before": load_before, "load_average_after": load_after},
    }
    json_path = args.json or args.out / "bench_prepare.json"
    write_json(json_path, to_plain(payload))
    print(f"wrote {json_path}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    exit_on_input_error(run, args, " ".join(["scripts/bench_prepare.py", *argv]))


if __name__ == "__main__":
    main()
