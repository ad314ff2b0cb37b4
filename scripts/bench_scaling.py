"""Training on 1 and on N processes: steps/s, rays/s, and the held-out PSNR after the same number of rays.

Question: on this machine, how much faster does training run on ``--processes`` processes than on one,
and does the data-parallel run reach the same held-out PSNR after the same number of rays (within seed
noise)? Arms, in one run, on the same subject and settings, the same rays in all:

- ``1``: 1 process for ``--steps`` steps (the shipped batch);
- ``N``: N processes for ``--steps / N`` steps each (each rank draws its own batch of the shipped size,
  gradients averaged: N times the batch per step);
- ``1, Nx batch``: 1 process for ``--steps / N`` steps with N times the shipped batch, the N-process run's
  batch and steps on one process. Equal to ``N`` within seed noise, it shows that what ``N`` loses against
  ``1`` comes from the larger batch (fewer optimizer steps), not from the distributed training.

With ``--scale-learning-rate`` the arms with N times the batch have N times the shipped learning rates (writes
``scaling_lr_scaled.json``). Each arm runs ``--seeds`` seeds. The
processes are started as ``mri-train --machine.num-devices N`` starts them
(:mod:`mri_nerfstudio.nerf.distributed`, gloo on CPU, NCCL on CUDA); the held-out PSNR is scored in this
process on evenly spaced test views of the saved checkpoint (EMA weights, as ``ns-eval``). Stopping rule:
these two arms, no variants. Prints a table and writes JSON (atomically).

    .venv/bin/python scripts/bench_scaling.py --out benchmarks          # about 15 min on 2 CPU cores
    .venv/bin/python scripts/bench_scaling.py --quick --out /tmp/s       # smoke run
    .venv/bin/python scripts/bench_scaling.py --device cuda --processes 1 --out benchmarks  # a GPU: 1 process
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mri_nerfstudio.atomic_write import write_json
from mri_nerfstudio.benchmarking import evenly_spaced, machine_info
from mri_nerfstudio.json_values import to_plain
from mri_nerfstudio.nerf.distributed import run_on_processes, train_and_record
from mri_nerfstudio.nerf.session import TrainingSession
from mri_nerfstudio.nerf.trainer import preset_optimizers
from mri_nerfstudio.nerf.training_config import shipped_config


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="subject (default: the MNI152 template)")
    parser.add_argument("--processes", type=int, default=2, help="processes of the data-parallel arm")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where each process trains")
    parser.add_argument("--steps", type=int, default=1000, help="steps of the 1-process arm")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per arm")
    parser.add_argument("--image-size", type=int, default=64, help="view size, px")
    parser.add_argument("--eval-views", type=int, default=12, help="test views scored per run")
    parser.add_argument("--cache-dir", type=Path, default=None, help="prepared subjects' cache")
    parser.add_argument("--out", type=Path, default=Path("benchmarks"), help="folder of scaling.json")
    parser.add_argument("--scale-learning-rate", action="store_true",
                        help="N-process arm: every learning rate times N (the linear scaling rule)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 24 px, 8 steps, 1 seed")
    args = parser.parse_args(argv)
    if args.quick:
        args.image_size, args.steps, args.seeds, args.eval_views = 24, 8, 1, 2
    if args.processes < 1 or args.steps % max(args.processes, 1):
        parser.error("--processes must be >= 1 and divide --steps")
    return args


def arm_config(args: argparse.Namespace, processes: int, seed: int, output_dir: Path, batch_scale: int = 1):
    """The shipped config on the subject on ``--device``, with ``batch_scale`` times its patches per batch and
    ``--steps / (processes * batch_scale)`` steps."""
    config = shipped_config(args.data, args.image_size, args.cache_dir, device=args.device)
    config.machine.seed = seed
    config.mixed_precision = args.device == "cuda"
    config.max_num_iterations = args.steps // (processes * batch_scale)
    datamanager = config.pipeline.datamanager
    patches = datamanager.patches_per_batch or max(1, datamanager.train_num_rays_per_batch // datamanager.patch_size**2)
    datamanager.patches_per_batch = batch_scale * patches
    config.output_dir = output_dir
    if args.scale_learning_rate and processes * batch_scale > 1:
        config.optimizers = preset_optimizers(config)  # the field's rate from its preset, to be scaled
        for group in config.optimizers.values():
            group["optimizer"].lr *= processes * batch_scale
    return config


def run_arm(args: argparse.Namespace, arm: tuple[int, int], seed: int, scratch: Path) -> dict:
    """Train one arm (processes, batch scale); its speed and its held-out PSNR."""
    processes, batch_scale = arm
    folder = Path(tempfile.mkdtemp(dir=scratch))
    config = arm_config(args, processes, seed, folder / "outputs", batch_scale)
    start = time.perf_counter()
    run_on_processes(functools.partial(train_and_record, folder), config, processes)
    wall = time.perf_counter() - start
    records = [torch.load(folder / f"rank{rank}.pt") for rank in range(processes)]
    seconds = max(record["seconds"] for record in records)  # the ranks wait for each other every step
    rays = sum(record["rays"] for record in records)
    checkpoints = Path((folder / "run.txt").read_text()).parent / "nerfstudio_models"
    session = TrainingSession(config, folder / "eval", load_dir=checkpoints)
    views = evenly_spaced(len(session.pipeline.datamanager.eval_dataset), args.eval_views)
    held_out = session.evaluate(views)
    return {
        "arm": arm_name(arm),
        "processes": processes,
        "batch_scale": batch_scale,
        "rays_per_batch": rays // (processes * config.max_num_iterations),
        "seed": seed,
        "steps_per_process": config.max_num_iterations,
        "rays": rays,
        "train_seconds": seconds,
        "wall_seconds_with_start": wall,
        "steps_per_second": config.max_num_iterations / seconds,
        "rays_per_second": rays / seconds,
        "held_out_psnr": held_out["psnr"],
        "held_out_views": len(views),
        "final_loss_rank0": float(np.mean(records[0]["losses"][-10:])),
    }


def arm_name(arm: tuple[int, int]) -> str:
    """``"2"`` for 2 processes, ``"1, 2x batch"`` for one process with twice the batch."""
    processes, batch_scale = arm
    return str(processes) if batch_scale == 1 else f"{processes}, {batch_scale}x batch"


def main(argv: list[str] | None = None) -> dict:
    args = parse_arguments(argv)
    arms = [(1, 1)] + ([(args.processes, 1), (1, args.processes)] if args.processes > 1 else [])
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as scratch:
        for seed in range(args.seeds):
            for arm in arms:
                print(f"[bench_scaling] {arm_name(arm)} process(es), seed {seed}", flush=True)
                rows.append(run_arm(args, arm, seed, Path(scratch)))
                row = rows[-1]
                print(f"[bench_scaling]   {row['rays_per_second']:.0f} rays/s, {row['steps_per_second']:.2f} steps/s, "
                      f"held-out {row['held_out_psnr']:.2f} dB", flush=True)
    summary = {}
    for arm in map(arm_name, arms):
        mine = [row for row in rows if row["arm"] == arm]
        summary[arm] = {
            key: (float(np.mean([row[key] for row in mine])), float(np.std([row[key] for row in mine], ddof=1))
                  if len(mine) > 1 else 0.0)
            for key in ("rays_per_second", "steps_per_second", "held_out_psnr")
        }
    print(f"\n{'processes':>14s} {'rays/s':>14s} {'steps/s':>14s} {'held-out PSNR (dB)':>22s}")
    for arm, s in summary.items():
        print(f"{arm:>14s} {s['rays_per_second'][0]:9.0f} +- {s['rays_per_second'][1]:3.0f} "
              f"{s['steps_per_second'][0]:8.2f} +- {s['steps_per_second'][1]:4.2f} "
              f"{s['held_out_psnr'][0]:14.2f} +- {s['held_out_psnr'][1]:4.2f}")
    report = {
        "question": "rays/s of N processes against 1, and held-out PSNR after the same number of rays",
        "settings": to_plain(vars(args)),
        "machine": machine_info(),
        "summary": summary,
        "runs": rows,
    }
    if args.processes > 1:
        one, many = summary["1"], summary[str(args.processes)]
        report["rays_per_second_ratio"] = many["rays_per_second"][0] / one["rays_per_second"][0]
        report["held_out_psnr_difference_db"] = many["held_out_psnr"][0] - one["held_out_psnr"][0]
        same_batch = summary[arm_name((1, args.processes))]
        report["held_out_psnr_difference_same_batch_db"] = many["held_out_psnr"][0] - same_batch["held_out_psnr"][0]
        print(f"\n{args.processes} processes / 1: rays/s x {report['rays_per_second_ratio']:.2f}, "
              f"held-out PSNR {report['held_out_psnr_difference_db']:+.2f} dB; against 1 process with the same "
              f"batch and steps {report['held_out_psnr_difference_same_batch_db']:+.2f} dB")
    args.out.mkdir(parents=True, exist_ok=True)
    name = "scaling_lr_scaled.json" if args.scale_learning_rate else "scaling.json"
    write_json(args.out / name, report)
    print(f"[bench_scaling] wrote {args.out / name}")
    return report


if __name__ == "__main__":
    main()
