"""What empty-space skipping from the training views costs (issue 19): held-out PSNR / SSIM with the occupancy
grid from the scan's brain mask (as before: a leak, a 15-view reconstruction has no mask) vs from the visual
hull of the training views (shipped), same data, steps and seeds.

Each arm trains the shipped ``mri-mednerf`` method in-process (``training_config.preset_session``) on the same
prepared subject, once per seed; the ``mask`` arm swaps the model's occupancy grid for one built from the
brain mask before the first step (:func:`mask_occupancy`, the former ``occupancy_from_mask``: kept here only
to measure the difference, it is no option of the method). Both are scored on every held-out view of the
eval split as ``ns-eval`` does (pipeline eval mode: EMA weights). Prints a table per seed and the paired
differences (hull - mask, same seed) as mean +- std over seeds; writes JSON atomically.

    .venv/bin/python scripts/bench_occupancy.py --image-size 64 --steps 1000 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mri_nerfstudio.atomic_write import write_json
from mri_nerfstudio.benchmarking import add_eval_split_argument, machine_info
from mri_nerfstudio.nerf.occupancy import OccupancyGrid
from mri_nerfstudio.nerf.presets import PRESETS
from mri_nerfstudio.nerf.session import TrainingSession
from mri_nerfstudio.nerf.training_config import preset_session
from mri_nerfstudio.prepare import PreparedSubject

ARMS = ("mask", "hull")
"""The reference (the former occupancy from the brain mask) first, then the shipped visual hull."""
METRICS = ("psnr", "ssim")


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="default", help="BraTS subject, volume file, or 'default' (MNI152)")
    parser.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    parser.add_argument("--image-size", type=int, default=64, help="view size in pixels")
    parser.add_argument("--steps", type=int, default=1000, help="training steps per arm and seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one run per arm and seed")
    add_eval_split_argument(parser)
    parser.add_argument("--out", type=Path, default=Path("bench_out/occupancy"), help="folder for the runs")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/occupancy.json"), help="where the JSON goes")
    parser.add_argument("--cache-dir", type=Path, default=None, help="prepared-subject cache (default: the usual)")
    return parser.parse_args(argv)


def mask_occupancy(subject: PreparedSubject, resolution: int, margin: float) -> torch.Tensor:
    """[G, G, G] bool: the cells of a ``resolution^3`` grid over [-1, 1]^3 that hold a brain-mask voxel centre,
    dilated by ``margin`` world units plus half a voxel's diagonal, rounded up to whole cells (the grid the
    model used to build from the mask)."""
    mask = torch.from_numpy(subject.volume.brain_mask())
    transform = torch.from_numpy(subject.world_from_voxel).to(torch.float64)
    world = torch.nonzero(mask).to(torch.float64) @ transform[:3, :3].T + transform[:3, 3]
    cells = ((world + 1.0) * (resolution / 2)).floor().long()
    cells = cells[((cells >= 0) & (cells < resolution)).all(dim=-1)]
    grid = torch.zeros(resolution, resolution, resolution, dtype=torch.bool)
    grid[cells[:, 0], cells[:, 1], cells[:, 2]] = True
    half_diagonal = 0.5 * float(transform[:3, :3].norm(dim=0).norm())
    radius = math.ceil((margin + half_diagonal) * resolution / 2)
    dilated = F.max_pool3d(grid[None, None].float(), kernel_size=2 * radius + 1, stride=1, padding=radius)
    return dilated[0, 0] > 0


def use_mask_occupancy(session: TrainingSession) -> None:
    """Replace the model's occupancy grids (from the training views) with grids from the subjects' brain masks."""
    model = session.pipeline.model
    subjects = session.pipeline.datamanager.dataparser.subjects
    config = model.config
    grids = torch.stack([mask_occupancy(s, config.occupancy_resolution, config.occupancy_margin) for s in subjects])
    model.occupancy = OccupancyGrid(grids).to(model.device)


def train_and_score(arm: str, seed: int, args: argparse.Namespace) -> dict:
    random.seed(seed)  # nerfstudio's CacheDataloader orders the images with Python's random
    session = preset_session(args.preset, argparse.Namespace(**{**vars(args), "seed": seed}))
    if arm == "mask":
        use_mask_occupancy(session)
    occupied_fraction = session.pipeline.model.occupancy.occupied_fraction()
    losses: dict[str, float] = {}
    while session.step_count < args.steps:
        losses = session.step()
        if session.step_count % 250 == 0:
            print(f"{arm:>5} seed {seed} step {session.step_count:5d}  {session.train_seconds:7.1f} s", flush=True)
    start = time.perf_counter()
    scores = session.evaluate()
    return {
        "arm": arm,
        "seed": seed,
        "steps": session.step_count,
        "occupied_fraction": occupied_fraction,
        "train_seconds": session.train_seconds,
        "seconds_per_step": session.train_seconds / session.step_count,
        "eval_seconds": time.perf_counter() - start,
        "held_out_views": len(session.pipeline.datamanager.eval_dataset),
        **scores,
        "last_losses": losses,
    }


def paired_summary(results: list[dict]) -> dict:
    """Mean over seeds of each arm's scores, and of hull - mask with the same seed (mean and std over seeds)."""
    by_arm = {arm: {r["seed"]: r for r in results if r["arm"] == arm} for arm in ARMS}
    seeds = sorted(set(by_arm["mask"]) & set(by_arm["hull"]))
    summary: dict = {"seeds": seeds}
    for arm in ARMS:
        for key in (*METRICS, "occupied_fraction", "seconds_per_step"):
            summary[f"{arm}_{key}"] = statistics.fmean(by_arm[arm][s][key] for s in seeds) if seeds else None
    for metric in METRICS:
        differences = [by_arm["hull"][s][metric] - by_arm["mask"][s][metric] for s in seeds]
        summary[f"d{metric}"] = statistics.fmean(differences) if differences else None
        summary[f"d{metric}_std"] = statistics.stdev(differences) if len(differences) > 1 else None
    return summary


def table(results: list[dict], summary: dict) -> str:
    header = f"{'arm':>5} {'seed':>4} {'occupied':>8} {'s/step':>7} {'PSNR dB':>15} {'SSIM':>15}"
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(
            f"{r['arm']:>5} {r['seed']:>4} {r['occupied_fraction']:>8.3f} {r['seconds_per_step']:>7.3f} "
            f"{r['psnr']:>7.2f} +- {r['psnr_std']:<4.2f} {r['ssim']:>7.4f} +- {r['ssim_std']:<6.4f}"
        )
    if summary["dpsnr"] is not None:
        spread = {m: summary[f"d{m}_std"] if summary[f"d{m}_std"] is not None else float("nan") for m in METRICS}
        lines.append(
            f"\nhull - mask, paired over seeds {summary['seeds']}: PSNR {summary['dpsnr']:+.2f} +- {spread['psnr']:.2f} dB, "
            f"SSIM {summary['dssim']:+.4f} +- {spread['ssim']:.4f} (mean +- std of the per-seed differences)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    machine_before = machine_info()
    results: list[dict] = []
    for seed in args.seeds:
        for arm in ARMS:
            results.append(train_and_score(arm, seed, args))
            summary = paired_summary(results)
            report = {
                "benchmark": "occupancy from the brain mask (before) vs the visual hull of the training views "
                "(scripts/bench_occupancy.py)",
                "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
                "date": time.strftime("%Y-%m-%d %H:%M"),
                "machine": {**machine_info(), "load_average_before": machine_before["load_average"]},
                "data": args.data,
                "preset": args.preset,
                "image_size": args.image_size,
                "steps": args.steps,
                "eval_split": args.eval_split,
                "seeds": args.seeds,
                "results": results,
                "summary": summary,
            }
            write_json(args.json, report)  # rewritten after every run: a long benchmark keeps what it has
            print("\n" + table(results, summary), flush=True)
    print(f"\nJSON: {args.json}")


if __name__ == "__main__":
    main()
