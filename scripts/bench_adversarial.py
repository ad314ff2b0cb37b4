"""MSE-only vs MSE + adversarial patch loss (issue 4): same data, steps and seed; held-out PSNR, SSIM, FID, KID.

Each arm trains the shipped ``mri-mednerf`` method in-process (``bench_quality.make_session``) for the
same number of steps, then scores every held-out view (57 unseen azimuths per subject) as ``ns-eval``
does (pipeline eval mode, so an arm with an EMA is scored with its EMA weights). FID and KID compare the
renders with the held-out ground truth (Inception features of the ground truth computed once).

Arms (``--arms``):

- ``mse``: ``lambda_adv = 0``, no EMA: today's training, the reference.
- ``mse+ema``: the same with the EMA the adversarial arms are evaluated with (separates the two effects).
- ``adv=L``: ``lambda_adv = L`` with the shipped adversarial settings (EMA 0.999 with warm-up, hinge, R1).
- ``adv=L/noema``: the same without the EMA (the adversarial term alone against ``mse``).
- ``adv=L/startN``: the adversarial term only from step N on (MSE alone before), with the EMA.

    .venv/bin/python scripts/bench_adversarial.py --out bench_out/adversarial
    .venv/bin/python scripts/bench_adversarial.py --arms mse mse+ema adv=0.001 adv=0.01 adv=0.1
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch
from bench_quality import machine_info, make_session, write_json
from nerfstudio.engine.trainer import TrainerConfig

from mri_nerfstudio.metrics import InceptionFeatures, fid_kid_from_features
from mri_nerfstudio.nerf.method_config import FIELD_LEARNING_RATE
from mri_nerfstudio.nerf.pipeline import DEFAULT_EMA_DECAY, evaluate_held_out_views


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="default", help="BraTS subject, volume file, or 'default' (MNI152)")
    parser.add_argument("--preset", default="cpu", choices=sorted(FIELD_LEARNING_RATE))
    parser.add_argument("--arms", nargs="+", default=["mse", "adv=0.01"], help="mse, mse+ema, adv=LAMBDA[/noema or /startN]")
    parser.add_argument("--image-size", type=int, default=64, help="view size in pixels")
    parser.add_argument("--steps", type=int, default=200, help="training steps per arm")
    parser.add_argument("--loss", default="hinge", choices=["hinge", "non_saturating"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench_out/adversarial"), help="folder for the JSON")
    parser.add_argument("--cache-dir", type=Path, default=None, help="prepared-subject cache (default: the usual)")
    return parser.parse_args(argv)


def arm_settings(arm: str) -> tuple[float, bool, int]:
    """``(lambda_adv, EMA on, first adversarial step)`` of an arm name."""
    if arm == "mse":
        return 0.0, False, 0
    if arm == "mse+ema":
        return 0.0, True, 0
    if arm.startswith("adv="):
        value, _, suffix = arm.removeprefix("adv=").partition("/")
        if suffix in ("", "noema"):
            return float(value), suffix != "noema", 0
        if suffix.startswith("start") and suffix.removeprefix("start").isdigit():
            return float(value), True, int(suffix.removeprefix("start"))
    raise SystemExit(f"unknown arm {arm!r}: expected mse, mse+ema, adv=LAMBDA, adv=LAMBDA/noema or adv=LAMBDA/startN")


def benchmark_arm(arm: str, args: argparse.Namespace, extractor: InceptionFeatures, real: dict) -> dict:
    lambda_adv, ema, start_step = arm_settings(arm)

    def configure(config: TrainerConfig) -> None:
        config.pipeline.adversarial.lambda_adv = lambda_adv
        config.pipeline.adversarial.start_step = start_step
        config.pipeline.adversarial.loss = args.loss
        config.pipeline.ema_decay = DEFAULT_EMA_DECAY if ema else 0.0

    random.seed(args.seed)  # nerfstudio's CacheDataloader orders the images with Python's random
    session = make_session(args.preset, args, configure)
    losses: dict[str, float] = {}
    while session.step_count < args.steps:
        losses = session.step()
        if session.step_count % 50 == 0:
            terms = "  ".join(f"{name} {value:.4g}" for name, value in losses.items())
            print(f"{arm:>10} step {session.step_count:5d}  {session.train_seconds:7.1f} s  {terms}", flush=True)
    start = time.perf_counter()
    scores, renders = evaluate_held_out_views(session.pipeline, get_std=True)
    if "features" not in real:
        real["features"] = extractor(torch.stack([r.image for r in renders]).permute(0, 3, 1, 2)).cpu()
    fake = extractor(torch.stack([r.rendering for r in renders]).permute(0, 3, 1, 2)).cpu()
    set_scores = fid_kid_from_features(real["features"], fake, kid_subsets=100, kid_subset_size=len(renders))
    return {
        "arm": arm,
        "lambda_adv": lambda_adv,
        "ema": ema,
        "steps": session.step_count,
        "train_seconds": session.train_seconds,
        "seconds_per_step": session.train_seconds / max(session.step_count, 1),
        "eval_seconds": time.perf_counter() - start,
        "held_out_views": len(renders),
        "psnr": scores["psnr"],
        "psnr_std": scores["psnr_std"],
        "ssim": scores["ssim"],
        "ssim_std": scores["ssim_std"],
        **set_scores,
        "last_losses": losses,
    }


def table(results: list[dict]) -> str:
    header = (
        f"{'arm':>10} {'steps':>6} {'s/step':>7} {'x mse':>6} {'PSNR dB':>15} {'dPSNR':>6} "
        f"{'SSIM':>15} {'FID':>7} {'KID':>16}"
    )
    lines = [header, "-" * len(header)]
    reference = next((r for r in results if r["arm"] == "mse"), results[0])
    for r in results:
        lines.append(
            f"{r['arm']:>10} {r['steps']:>6} {r['seconds_per_step']:>7.3f} "
            f"{r['seconds_per_step'] / reference['seconds_per_step']:>6.2f} "
            f"{r['psnr']:>7.2f} +- {r['psnr_std']:<4.2f} {r['psnr'] - reference['psnr']:>+6.2f} "
            f"{r['ssim']:>7.3f} +- {r['ssim_std']:<5.3f} {r['fid']:>7.2f} {r['kid']:>7.4f} +- {r['kid_std']:<6.4f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    for arm in args.arms:
        arm_settings(arm)
    args.out.mkdir(parents=True, exist_ok=True)
    machine_before = machine_info()
    extractor = InceptionFeatures(batch_size=16)
    real: dict = {}
    results: list[dict] = []
    json_path = args.out / "adversarial.json"
    for arm in args.arms:
        results.append(benchmark_arm(arm, args, extractor, real))
        report = {
            "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "machine": {**machine_info(), "load_average_before": machine_before["load_average"]},
            "preset": args.preset,
            "image_size": args.image_size,
            "steps": args.steps,
            "loss": args.loss,
            "results": results,
        }
        write_json(json_path, report)  # rewritten after every arm: a long run keeps what it has
        print("\n" + table(results), flush=True)
    print(f"\nJSON: {json_path}")


if __name__ == "__main__":
    main()
