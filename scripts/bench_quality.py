"""Held-out PSNR / SSIM against iterations and seconds: MedNeRF's network vs our CPU preset, same run.

Both presets train on the same prepared subject (the embedded MNI152 template by default, 15 views at
5-degree x 5 spacing) with the shipped ``mri-mednerf`` method, each with its own learning rate, and are
scored on held-out views at a geometric series of steps (training time excludes scoring): the test
split by default (43 views with the defaults: the figures to report), the val split (14) with
``--eval-split val`` when the run is for choosing settings. Prints a table, writes JSON and a PNG plot.

    .venv/bin/python scripts/bench_quality.py --seconds 300 --out bench_out/quality
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from mri_nerfstudio.atomic_write import write_atomically, write_json
from mri_nerfstudio.benchmarking import (
    add_eval_split_argument,
    evenly_spaced,
    machine_info,
)
from mri_nerfstudio.nerf.presets import PRESETS
from mri_nerfstudio.nerf.training_config import preset_session

REFERENCE_PSNR = 25.01


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="default", help="BraTS subject, volume file, or 'default' (MNI152)")
    parser.add_argument("--presets", nargs="+", default=["mednerf", "cpu"], choices=sorted(PRESETS))
    parser.add_argument("--image-size", type=int, default=128, help="view size in pixels")
    parser.add_argument("--seconds", type=float, default=300.0, help="training-time budget per preset")
    parser.add_argument("--max-steps", type=int, default=2000, help="step budget per preset")
    parser.add_argument("--eval-views", type=int, default=12, help="held-out views scored along the way")
    parser.add_argument(
        "--final-views", type=int, default=None, help="held-out views scored at the end (default: all of them)"
    )
    add_eval_split_argument(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench_out/quality"), help="folder for JSON and PNG")
    parser.add_argument("--cache-dir", type=Path, default=None, help="prepared-subject cache (default: the usual)")
    return parser.parse_args(argv)


def score_steps(max_steps: int) -> list[int]:
    """Steps after which to score: 0, 10, 20, 50, 100, 200, 500, ... up to ``max_steps``."""
    steps, decade = [0], 10
    while decade < max_steps:
        steps += [s for s in (decade, 2 * decade, 5 * decade) if s < max_steps]
        decade *= 10
    return steps + [max_steps]


def benchmark_preset(preset: str, args: argparse.Namespace) -> dict:
    session = preset_session(preset, args)
    held_out = len(session.pipeline.datamanager.eval_dataset)
    views = evenly_spaced(held_out, args.eval_views)
    curve = []
    for target in score_steps(args.max_steps):
        while session.step_count < target and session.train_seconds < args.seconds:
            session.step()
        scores = session.evaluate(views)
        curve.append({"step": session.step_count, "train_seconds": session.train_seconds, **scores})
        print(
            f"{preset:>8} step {session.step_count:6d}  {session.train_seconds:8.1f} s  "
            f"PSNR {scores['psnr']:6.2f}  SSIM {scores['ssim']:.3f}",
            flush=True,
        )
        if session.train_seconds >= args.seconds:
            break
    final = session.evaluate(evenly_spaced(held_out, args.final_views or held_out))
    reached = next((point for point in curve if point["psnr"] >= REFERENCE_PSNR), None)
    parameters = sum(p.numel() for p in session.pipeline.model.parameters())
    return {
        "preset": preset,
        "field_lr": PRESETS[preset].learning_rate,
        "parameters": parameters,
        "steps": session.step_count,
        "train_seconds": session.train_seconds,
        "seconds_per_step": session.train_seconds / max(session.step_count, 1),
        "final_views": args.final_views or held_out,
        "final": final,
        "first_scored_point_at_or_above_25_01_db": reached,
        "curve": curve,
    }


def plot(results: list[dict], path: Path, split: str) -> None:
    """PSNR on the ``split`` views against steps and seconds, one curve per preset, as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for result in results:
        curve = result["curve"]
        for axis, key in zip(axes, ("step", "train_seconds")):
            axis.plot([max(p[key], 1e-1) for p in curve], [p["psnr"] for p in curve], "o-", label=result["preset"])
    for axis, label in zip(axes, ("training steps", "training seconds")):
        axis.axhline(REFERENCE_PSNR, color="grey", linestyle="--", label="MedNeRF poster (25.01 dB)")
        axis.set_xscale("log")
        axis.set_xlabel(label)
        axis.set_ylabel(f"{split} PSNR (dB)")
        axis.grid(True, alpha=0.3)
        axis.legend()
    figure.suptitle(f"mri-mednerf presets on the same data ({split} views)")
    figure.tight_layout()
    write_atomically(path, lambda tmp: figure.savefig(tmp, dpi=120, format="png"))


def table(results: list[dict]) -> str:
    header = f"{'preset':>8} {'params':>10} {'steps':>6} {'s/step':>8} {'final PSNR':>16} {'final SSIM':>16} {'to 25 dB':>18}"
    lines = [header, "-" * len(header)]
    for r in results:
        final, reached = r["final"], r["first_scored_point_at_or_above_25_01_db"]
        to_25 = f"{reached['step']} st / {reached['train_seconds']:.0f} s" if reached else "not reached"
        lines.append(
            f"{r['preset']:>8} {r['parameters']:>10,} {r['steps']:>6} {r['seconds_per_step']:>8.3f} "
            f"{final['psnr']:>8.2f} +- {final['psnr_std']:<5.2f} {final['ssim']:>8.3f} +- {final['ssim_std']:<5.3f} {to_25:>18}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = [benchmark_preset(preset, args) for preset in args.presets]
    report = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine_info(),
        "image_size": args.image_size,
        "eval_split": args.eval_split,
        "results": results,
    }
    print("\n" + table(results))
    json_path = args.out / "quality.json"
    write_json(json_path, report)
    plot(results, args.out / "quality.png", args.eval_split)
    print(f"\nJSON: {json_path}\nplot: {args.out / 'quality.png'}")


if __name__ == "__main__":
    main()
