"""Does a prior learned across brains determine more of a new brain's volume than its 15 views do?

Question (issue 19, goal 1 on real subjects): a subject the model never saw is reconstructed from its 15
training-orbit views alone (no scans) with a model trained on ``--training-subjects`` other brains. Is its
volume at least 1 dB better than the best classical estimate from the same 15 views (the tv grid of
``bench_volume``)? Arms, fixed before the run, on each held-out subject (``bench_subjects``' IXI protocol:
the last ``--held-out`` of the first ``--training-subjects + --held-out`` by name):

- ``mean subject``: the prior alone, no view fitted: the mean training code and the mean subject grid, empty
  space skipped outside the hull of the 15 views (``mri-reconstruct``'s start without scans);
- ``prior fit``: that start fitted to the 15 views, code, subject grid and field (``mri-reconstruct
  --finetune-field``, ``--fit-steps``);
- ``tv grid``: the classical voxel grid tied to the ``volume`` image formation, fitted to the same 15 views
  with total variation (weight and steps as ``bench_volume``);
- ``grid ceiling``: not a method: the truth itself, smoothed and sampled on the tv grid's voxels and read back
  (what a grid of that resolution could score at best).

Scores: volume PSNR / SSIM against the preprocessed scan inside its brain mask, on its grid (as ``ns-eval``).
Stopping rule: one pass over the held-out subjects; no variants. Nothing is chosen, so every held-out
subject reports. Prints a table and writes ``volume_prior.json`` (atomically).

    .venv/bin/python scripts/bench_volume_prior.py --out benchmarks     # 15 to 30 min on 2 cores
    .venv/bin/python scripts/bench_volume_prior.py --quick --out /tmp/p  # smoke run, not a result
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from bench_subjects import ARMS as SUBJECT_ARMS
from bench_subjects import DATA, make_session, subject_root
from bench_volume import TV_WEIGHT
from scipy import ndimage

from mri_nerfstudio import classical_reconstruction as classical
from mri_nerfstudio.atomic_write import write_json
from mri_nerfstudio.benchmarking import machine_info
from mri_nerfstudio.json_values import to_plain
from mri_nerfstudio.metrics import mean_and_std, volume_fidelity
from mri_nerfstudio.nerf.dataparser import nerfstudio_cameras
from mri_nerfstudio.nerf.field_sampling import reconstruct_in_mask
from mri_nerfstudio.nerf.single_view import (
    fit_single_view,
    initial_codes,
    initial_grid,
    input_view_occupancy,
    single_subject_model,
)
from mri_nerfstudio.nerf.single_view_settings import SingleViewSettings
from mri_nerfstudio.nerf.volume_export import TV_GRID_STEPS
from mri_nerfstudio.view_split import orbit_view_split

ARMS = ("mean subject", "prior fit", "tv grid", "grid ceiling")


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help="folder of IXI <ID>_T1 / _brainmask files")
    parser.add_argument("--training-subjects", type=int, default=24, help="brains the prior is trained on")
    parser.add_argument("--held-out", type=int, default=6, help="brains reconstructed from their views")
    parser.add_argument("--image-size", type=int, default=64, help="view size, px")
    parser.add_argument("--steps", type=int, default=600, help="training steps of the model")
    parser.add_argument("--fit-steps", type=int, default=150, help="steps of each held-out subject's fit")
    parser.add_argument("--tv-steps", type=int, default=TV_GRID_STEPS, help="Adam steps of the tv grid")
    parser.add_argument("--cache-dir", type=Path, default=None, help="prepared subjects' cache (default: under --out)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks"), help="folder of volume_prior.json")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 + 1 subjects, 16 px, a few steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.training_subjects, args.held_out, args.image_size = 3, 1, 16
        args.steps, args.fit_steps, args.tv_steps = 4, 2, 2
    if not args.data.is_dir():
        parser.error(f"--data {args.data}: no such folder (the IXI T1s of ../shared/data/ixi-t1)")
    return args


def grid_ceiling(prepared, size: int) -> np.ndarray:
    """The truth as a ``size^3`` grid over ``[-1, 1]^3`` holds it: smoothed to the grid's spacing (a Gaussian of
    half a grid voxel), sampled at the grid's voxels, read back trilinearly inside the brain mask."""
    reference, mask = prepared.volume.images[prepared.volume.reference], prepared.volume.brain_mask()
    voxel_size_world = np.linalg.norm(prepared.world_from_voxel[:3, :3], axis=0)
    sigma = 0.5 * (2.0 / (size - 1)) / voxel_size_world
    smoothed = ndimage.gaussian_filter(np.where(mask, reference, 0.0).astype(np.float32), sigma)
    truth = classical.GridVolume(smoothed, prepared.world_from_voxel)
    cube = classical.cube_world_from_voxel(size)
    centres = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij"), axis=-1).reshape(-1, 3).astype(np.float64)
    values = truth.sample(centres @ cube[:3, :3].T + cube[:3, 3]).reshape(size, size, size)
    return classical.GridVolume(values, cube).on_grid(mask, prepared.world_from_voxel)


def held_out_estimates(session, prepared, train_views: list[int], args) -> dict[str, tuple[np.ndarray, float]]:
    """{arm: ([X, Y, Z] estimate inside the brain mask, seconds)} for one held-out subject."""
    model = session.pipeline.model
    views = torch.from_numpy(prepared.images[train_views])
    cameras = nerfstudio_cameras(prepared.cameras)[torch.tensor(train_views)]
    estimates = {}
    began = time.perf_counter()
    occupancy = input_view_occupancy(model, views, cameras)
    start = single_subject_model(model, initial_codes(model), occupancy, initial_grid(model)).eval()
    estimates["mean subject"] = (reconstruct_in_mask(start, prepared, 0), time.perf_counter() - began)
    began = time.perf_counter()
    settings = SingleViewSettings(steps=args.fit_steps, finetune_field=True)
    fitted, _ = fit_single_view(model, views, cameras, settings)
    estimates["prior fit"] = (reconstruct_in_mask(fitted, prepared, 0), time.perf_counter() - began)
    began = time.perf_counter()
    grid = classical.fit_tied_voxel_grid(
        prepared.images[train_views],
        prepared.cameras.subset(train_views),
        prepared.config.density_scale,
        size=args.image_size + 1,
        tv_weight=TV_WEIGHT,
        steps=args.tv_steps,
    )
    mask = prepared.volume.brain_mask()
    estimates["tv grid"] = (grid.on_grid(mask, prepared.world_from_voxel), time.perf_counter() - began)
    began = time.perf_counter()
    estimates["grid ceiling"] = (grid_ceiling(prepared, args.image_size + 1), time.perf_counter() - began)
    return estimates


def summary(rows: list[dict]) -> dict:
    """Per arm: mean and std over subjects of the volume scores; the prior fit's margin over the tv grid."""
    result = {}
    for arm in ARMS:
        result[arm] = {}
        for key in ("volume_psnr", "volume_ssim"):
            result[arm][key], result[arm][f"{key}_std"] = mean_and_std([row["arms"][arm][key] for row in rows])
    margins = [row["arms"]["prior fit"]["volume_psnr"] - row["arms"]["tv grid"]["volume_psnr"] for row in rows]
    result["prior_fit_minus_tv_grid_db"], result["prior_fit_minus_tv_grid_db_std"] = mean_and_std(margins)
    result["goal_met"] = result["prior_fit_minus_tv_grid_db"] >= 1.0
    return result


def table(rows: list[dict], overall: dict) -> str:
    header = f"{'subject':<10}" + "".join(f"{arm:>22}" for arm in ARMS)
    lines = [header, "-" * len(header)]
    for row in rows:
        cells = "".join(
            f"{row['arms'][arm]['volume_psnr']:>12.2f} / {row['arms'][arm]['volume_ssim']:.3f}" for arm in ARMS
        )
        lines.append(f"{row['subject']:<10}{cells}")
    cells = "".join(f"{overall[arm]['volume_psnr']:>12.2f} / {overall[arm]['volume_ssim']:.3f}" for arm in ARMS)
    lines.append(f"{'mean':<10}{cells}")
    margin, met = overall["prior_fit_minus_tv_grid_db"], "met" if overall["goal_met"] else "not met"
    lines.append(f"prior fit - tv grid: {margin:+.2f} dB (goal >= +1 dB: {met})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_arguments(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started, start = time.strftime("%Y-%m-%d %H:%M"), time.perf_counter()
    root = args.out / "prior_subjects"
    names = subject_root(args.data, args.training_subjects + args.held_out, root)
    training = names[: args.training_subjects]
    session_args = argparse.Namespace(
        image_size=args.image_size, cache_dir=args.cache_dir or args.out / "cache", out=args.out, split="val",
        align_head=False,
    )
    print(f"[bench_volume_prior] training the prior: {len(training)} brains, {args.steps} steps", flush=True)
    session = make_session(root, names, training, SUBJECT_ARMS[0], 0, args.steps, session_args)
    while session.step_count < args.steps:
        session.step()
    training_seconds = time.perf_counter() - start
    session.pipeline.eval()
    dataparser = session.pipeline.datamanager.dataparser
    train_views = list(orbit_view_split(dataparser.config.prepare, dataparser.config.train_every).train)
    rows = []
    for index, name in enumerate(names):
        if name in training:
            continue
        prepared = dataparser.subjects[index]
        reference, mask = prepared.volume.images[prepared.volume.reference], prepared.volume.brain_mask()
        row = {"subject": name, "arms": {}}
        for arm, (estimate, seconds) in held_out_estimates(session, prepared, train_views, args).items():
            row["arms"][arm] = {**volume_fidelity(estimate, reference, mask), "seconds": seconds}
        rows.append(row)
        scores = ", ".join(f"{arm} {value['volume_psnr']:.2f} dB" for arm, value in row["arms"].items())
        print(f"[bench_volume_prior]   {name}: {scores}", flush=True)
    overall = summary(rows)
    report = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "date": started,
        "wall_seconds": time.perf_counter() - start,
        "training_seconds": training_seconds,
        "machine": machine_info(),
        "settings": to_plain(vars(args)),
        "training_subjects": training,
        "train_views": train_views,
        "summary": overall,
        "per_subject": rows,
    }
    path = args.out / "volume_prior.json"
    write_json(path, to_plain(report))
    print("\n" + table(rows, overall) + f"\n\nJSON: {path}")
    return report


if __name__ == "__main__":
    main()
