"""Same quality on the CPU and CUDA code paths: one seed, one small config, N steps on each device.

Trains the shipped ``mri-mednerf`` method (the fast grid field with empty-space skipping by default; on
CUDA with its mixed precision) for ``--steps`` steps on the CPU twice (seeds ``s`` and ``s + 1``: the
second measures the run-to-run noise) and on CUDA once (seed ``s``), then compares the PSNR on test views
and the per-step training loss (averaged over windows of ``--window`` steps). Exits 1 when CUDA and CPU
differ by more than the tolerance (the larger of the fixed floor and twice the seed-to-seed
difference), 2 when no CUDA device is visible.

    python3 scripts/gpu_check.py --steps 200 --out bench_out/gpu_check
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from mri_nerfstudio.atomic_write import write_json
from mri_nerfstudio.benchmarking import evenly_spaced
from mri_nerfstudio.nerf.session import TrainingSession
from mri_nerfstudio.nerf.training_config import CONFIGURATIONS, named_config


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="default", help="BraTS subject, volume file, or 'default' (MNI152)")
    parser.add_argument("--config", choices=sorted(CONFIGURATIONS), default="fast")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--window", type=int, default=20, help="steps per loss window")
    parser.add_argument("--eval-views", type=int, default=8, help="test views scored at the end")
    parser.add_argument("--psnr-floor-db", type=float, default=0.5, help="smallest PSNR tolerance, dB")
    parser.add_argument("--loss-floor", type=float, default=0.15, help="smallest relative loss-window tolerance")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench_out/gpu_check"))
    parser.add_argument("--cache-dir", type=Path, default=None, help="prepared-subject cache (default: the usual)")
    return parser.parse_args(argv)


def train_and_score(args: argparse.Namespace, device: str, seed: int) -> dict:
    """Per-step losses (``rgb_loss``), held-out PSNR / SSIM after ``args.steps`` steps, seconds."""
    torch.manual_seed(seed)
    config = named_config(args.config, args.data, args.image_size, device, args.cache_dir)
    session = TrainingSession(config, args.out / "runs")
    losses = [session.step()["rgb_loss"] for _ in range(args.steps)]
    views = evenly_spaced(len(session.pipeline.datamanager.eval_dataset), args.eval_views)
    scores = session.evaluate(views)
    return {"device": device, "seed": seed, "losses": losses, "train_seconds": session.train_seconds, **scores}


def loss_windows(losses: list[float], window: int) -> list[float]:
    """Mean loss of consecutive windows of ``window`` steps (a last, shorter window included)."""
    return [sum(losses[i : i + window]) / len(losses[i : i + window]) for i in range(0, len(losses), window)]


def compare(cpu: dict, cpu_other_seed: dict, cuda: dict, window: int, psnr_floor: float, loss_floor: float) -> dict:
    """Differences CUDA vs CPU and their tolerances (from the seed-to-seed noise on CPU); ``ok`` when within."""
    psnr_noise = abs(cpu["psnr"] - cpu_other_seed["psnr"])
    psnr_tolerance = max(psnr_floor, 2 * psnr_noise)
    cpu_w, other_w, cuda_w = (loss_windows(run["losses"], window) for run in (cpu, cpu_other_seed, cuda))
    relative = lambda a, b: abs(a - b) / max(abs(b), 1e-12)  # noqa: E731
    loss_noise = [relative(a, b) for a, b in zip(other_w, cpu_w)]
    loss_difference = [relative(a, b) for a, b in zip(cuda_w, cpu_w)]
    loss_tolerance = [max(loss_floor, 2 * noise) for noise in loss_noise]
    return {
        "psnr_difference_db": abs(cuda["psnr"] - cpu["psnr"]),
        "psnr_tolerance_db": psnr_tolerance,
        "loss_window_relative_difference": loss_difference,
        "loss_window_tolerance": loss_tolerance,
        "ok": abs(cuda["psnr"] - cpu["psnr"]) <= psnr_tolerance
        and all(d <= t for d, t in zip(loss_difference, loss_tolerance)),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible; nothing to compare")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    cpu = train_and_score(args, "cpu", args.seed)
    cpu_other_seed = train_and_score(args, "cpu", args.seed + 1)
    cuda = train_and_score(args, "cuda", args.seed)
    verdict = compare(cpu, cpu_other_seed, cuda, args.window, args.psnr_floor_db, args.loss_floor)
    print(f"{'run':<22} {'PSNR':>8} {'SSIM':>7} {'train s':>8}")
    for label, run in (("cpu, seed s", cpu), ("cpu, seed s+1 (noise)", cpu_other_seed), ("cuda, seed s", cuda)):
        print(f"{label:<22} {run['psnr']:>8.2f} {run['ssim']:>7.3f} {run['train_seconds']:>8.1f}")
    print(f"\nloss per {args.window}-step window (cpu / cuda):")
    windows = zip(loss_windows(cpu["losses"], args.window), loss_windows(cuda["losses"], args.window))
    for i, (a, b) in enumerate(windows):
        print(f"  steps {i * args.window:5d}+  {a:.5f} / {b:.5f}")
    print(
        f"\nPSNR difference {verdict['psnr_difference_db']:.2f} dB (tolerance {verdict['psnr_tolerance_db']:.2f}); "
        f"worst loss-window difference {max(verdict['loss_window_relative_difference']):.1%}: "
        + ("SAME within noise" if verdict["ok"] else "DIFFERENT beyond noise")
    )
    report = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "device": torch.cuda.get_device_name(0),
        "runs": [cpu, cpu_other_seed, cuda],
        "verdict": verdict,
    }
    json_path = args.out / "gpu_check.json"
    write_json(json_path, report)
    print(f"JSON: {json_path}")
    return 0 if verdict["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
