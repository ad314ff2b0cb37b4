"""MSE-only vs MSE + adversarial patch loss (issue 4): same data, steps and seeds; PSNR, SSIM, FID, KID and
fine detail on the test views (or the val views).

Each arm trains the shipped ``mri-mednerf`` method in-process (``training_config.preset_session``) for the
same number of steps, once per seed, and is scored at the ``--eval-at`` steps and at the end on every
view of the test split (43 unseen azimuths per subject with the default ``--train-every 5``; fewer
training views, e.g. ``--train-every 18`` for 4, test the sparse-view case)
as ``ns-eval`` does (pipeline eval mode, so an arm with an EMA is scored with its EMA weights). To
choose settings (the EMA, the patch size, the adversarial window), score the val split instead
(``--eval-split val``, 14 views) and report the chosen arms on test. FID and KID compare the renders
with the scored views' ground truth (Inception features of the ground truth computed once);
``detail_ratio`` and ``detail_error`` (:func:`mri_nerfstudio.metrics.fine_detail`) say whether the
renders have as much fine detail as the truth, and how much of it is wrong. The first arm of ``--arms``
is the reference: every other arm is compared with it trained with the same seed, and with several
seeds a summary gives each arm's mean and its paired difference from the reference as mean +- std over
seeds.

Arms (``--arms``): a base, then any of the ``/``-separated flags.

- ``mse``: ``lambda_adv = 0`` without the EMA. ``mse+ema``: the same with the EMA (the shipped default
  since 2026-11-30).
- ``adv=L``: ``lambda_adv = L`` with the shipped adversarial settings (EMA 0.999 with warm-up, hinge, R1).
- flags: ``noema`` (no EMA), ``startN`` (adversarial term from step N on, MSE alone before),
  ``endN`` (adversarial term until step N, MSE alone after), ``ns`` (non-saturating loss instead of
  hinge), ``dec`` (discriminator decoder, MSE reconstruction), ``rms`` (RMSprop instead of Adam for
  the generator's fields, at ``--rmsprop-lr``), ``unseenN`` (N fake patches at unseen poses per step
  instead of as many as training patches), ``dlrX`` (discriminator learning rate X instead of 1e-4),
  ``patchN`` (N x N patches instead of 32 x 32: with the same 1,024 rays per step, more patches per step
  for the discriminator; it applies to the MSE training too, so compare with ``mse+ema/patchN``).

    .venv/bin/python scripts/bench_adversarial.py --out bench_out/adversarial
    .venv/bin/python scripts/bench_adversarial.py --arms mse+ema adv=0.01 --train-every 18 --steps 1000
    .venv/bin/python scripts/bench_adversarial.py --arms mse adv=0.001 adv=0.01/noema adv=0.01/start1000/ns \\
        --steps 2000 --eval-at 1000 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from nerfstudio.engine.trainer import TrainerConfig

from mri_nerfstudio.atomic_write import write_json
from mri_nerfstudio.benchmarking import add_eval_split_argument, machine_info
from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.metrics import InceptionFeatures, fid_kid_from_features, fine_detail
from mri_nerfstudio.nerf.adversarial import AdversarialConfig
from mri_nerfstudio.nerf.held_out import evaluate_held_out_views
from mri_nerfstudio.nerf.pipeline import DEFAULT_EMA_DECAY
from mri_nerfstudio.nerf.presets import PRESETS
from mri_nerfstudio.nerf.training_config import preset_session

METRICS = ("psnr", "ssim", "fid", "kid", "detail_ratio", "detail_error")


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="default", help="BraTS subject, volume file, or 'default' (MNI152)")
    parser.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    parser.add_argument(
        "--arms",
        nargs="+",
        default=["mse+ema", "adv=0.01"],
        help="mse, mse+ema or adv=LAMBDA, + /flags; the first is the reference",
    )
    parser.add_argument("--image-size", type=int, default=64, help="view size in pixels")
    parser.add_argument(
        "--train-every", type=int, default=5, help="view i is a training view when i %% N == 0 (5: 15 of 72 views)"
    )
    parser.add_argument("--steps", type=int, default=200, help="training steps per arm")
    parser.add_argument("--eval-at", type=int, nargs="*", default=[], help="earlier steps to score at as well")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one training run per arm and seed")
    parser.add_argument("--rmsprop-lr", type=float, default=None, help="generator RMSprop rate (default: the preset's)")
    parser.add_argument("--out", type=Path, default=Path("bench_out/adversarial"), help="folder for the JSON")
    parser.add_argument("--cache-dir", type=Path, default=None, help="prepared-subject cache (default: the usual)")
    add_eval_split_argument(parser)
    args = parser.parse_args(argv)
    if any(not 0 < step < args.steps for step in args.eval_at):
        parser.error(f"--eval-at steps must lie strictly between 0 and --steps {args.steps}")
    return args


@dataclass(frozen=True)
class Arm:
    """One configuration of the comparison, parsed from its name (module docstring)."""

    name: str
    lambda_adv: float = 0.0
    ema: bool = False
    start_step: int = 0
    end_step: int | None = None
    loss: str = "hinge"
    decoder: bool = False
    rmsprop: bool = False
    unseen_patches: int | None = None
    discriminator_lr: float | None = None
    patch_size: int | None = None


def _flag_number(flag: str, prefix: str, minimum: int = 0) -> int | None:
    """N of a flag ``prefixN`` (decimal digits, N >= ``minimum``); None if ``flag`` is not one."""
    digits = flag.removeprefix(prefix)
    if flag.startswith(prefix) and digits.isdigit() and int(digits) >= minimum:
        return int(digits)
    return None


def parse_arm(name: str) -> Arm:
    unknown = SystemExit(
        f"unknown arm {name!r}: expected mse, mse+ema or adv=LAMBDA, then "
        "/noema /startN /endN /ns /dec /rms /unseenN /dlrX /patchN"
    )
    base, *flags = name.split("/")
    if base in ("mse", "mse+ema"):
        settings: dict = {"ema": base == "mse+ema"}
    elif base.startswith("adv="):
        try:
            settings = {"lambda_adv": float(base.removeprefix("adv=")), "ema": True}
        except ValueError:
            raise unknown from None
    else:
        raise unknown
    for flag in flags:
        if flag == "noema":
            settings["ema"] = False
        elif (start := _flag_number(flag, "start")) is not None:
            settings["start_step"] = start
        elif (end := _flag_number(flag, "end")) is not None:
            settings["end_step"] = end
        elif flag == "ns":
            settings["loss"] = "non_saturating"
        elif flag == "dec":
            settings["decoder"] = True
        elif flag == "rms":
            settings["rmsprop"] = True
        elif (unseen := _flag_number(flag, "unseen", minimum=1)) is not None:
            settings["unseen_patches"] = unseen
        elif flag.startswith("dlr"):
            try:
                settings["discriminator_lr"] = float(flag.removeprefix("dlr"))
            except ValueError:
                raise unknown from None
            if not settings["discriminator_lr"] > 0:
                raise unknown
        elif (patch := _flag_number(flag, "patch", minimum=1)) is not None:
            settings["patch_size"] = patch
        else:
            raise unknown
    arm = Arm(name, **settings)
    try:  # the adversarial settings' own checks (e.g. end after start), before any arm trains
        AdversarialConfig(lambda_adv=arm.lambda_adv, start_step=arm.start_step, end_step=arm.end_step, loss=arm.loss)
    except MRIInputError as error:
        raise SystemExit(f"arm {name!r}: {error}") from None
    return arm


def train_and_score(
    arm: Arm, seed: int, args: argparse.Namespace, extractor: InceptionFeatures, real: dict
) -> list[dict]:
    """Train ``arm`` with ``seed`` for ``args.steps`` steps; one result per scoring step."""

    def configure(config: TrainerConfig) -> None:
        config.pipeline.datamanager.dataparser.train_every = args.train_every
        adversarial = config.pipeline.adversarial
        adversarial.lambda_adv, adversarial.start_step = arm.lambda_adv, arm.start_step
        adversarial.end_step = arm.end_step
        adversarial.loss, adversarial.decoder = arm.loss, arm.decoder
        adversarial.unseen_patches_per_batch = arm.unseen_patches
        config.pipeline.ema_decay = DEFAULT_EMA_DECAY if arm.ema else 0.0
        if arm.discriminator_lr is not None:
            config.optimizers["discriminator"]["optimizer"].lr = arm.discriminator_lr
        if arm.patch_size is not None:
            config.pipeline.datamanager.patch_size = arm.patch_size
        if arm.rmsprop:
            optimizer = config.optimizers["fields"]["optimizer"]
            optimizer.algorithm = "rmsprop"
            optimizer.lr = args.rmsprop_lr or optimizer.lr

    random.seed(seed)  # nerfstudio's CacheDataloader orders the images with Python's random
    session = preset_session(args.preset, argparse.Namespace(**{**vars(args), "seed": seed}), configure)
    results: list[dict] = []
    losses: dict[str, float] = {}
    while session.step_count < args.steps:
        losses = session.step()
        if session.step_count % 100 == 0:
            terms = "  ".join(f"{name} {value:.4g}" for name, value in losses.items())
            progress = f"seed {seed} step {session.step_count:5d}  {session.train_seconds:7.1f} s"
            print(f"{arm.name:>12} {progress}  {terms}", flush=True)
        if session.step_count in args.eval_at or session.step_count == args.steps:
            start = time.perf_counter()
            scores, renders = evaluate_held_out_views(session.pipeline, get_std=True)
            renderings, truths = [r.rendering for r in renders], [r.image for r in renders]  # [H, W, 3] uint8 each
            if "features" not in real:
                real["features"] = extractor(torch.stack(truths).permute(0, 3, 1, 2)).cpu()
            fake = extractor(torch.stack(renderings).permute(0, 3, 1, 2)).cpu()
            set_scores = fid_kid_from_features(real["features"], fake, kid_subsets=100, kid_subset_size=len(renders))
            detail = fine_detail(*(torch.stack(views).float().mean(-1) / 255 for views in (renderings, truths)))
            results.append(
                {
                    "arm": arm.name,
                    "settings": asdict(arm),
                    "seed": seed,
                    "steps": session.step_count,
                    "train_seconds": session.train_seconds,
                    "seconds_per_step": session.train_seconds / session.step_count,
                    "eval_seconds": time.perf_counter() - start,
                    "held_out_views": len(renders),
                    "psnr": scores["psnr"],
                    "psnr_std": scores["psnr_std"],
                    "ssim": scores["ssim"],
                    "ssim_std": scores["ssim_std"],
                    **set_scores,
                    **detail,
                    "last_losses": losses,
                }
            )
    return results


def reference_of(result: dict, results: list[dict], reference: str) -> dict | None:
    """The ``reference`` arm's result with the same seed and steps as ``result`` (None if there is none yet)."""
    return next(
        (r for r in results if r["arm"] == reference and r["seed"] == result["seed"] and r["steps"] == result["steps"]),
        None,
    )


def table(results: list[dict], reference: str) -> str:
    """Every (arm, seed, steps) result, with PSNR and seconds per step relative to the ``reference`` arm's."""
    header = (
        f"{'arm':>22} {'seed':>4} {'steps':>6} {'s/step':>7} {'x ref':>6} {'PSNR dB':>15} {'dPSNR':>6} "
        f"{'SSIM':>7} {'FID':>7} {'KID':>7} {'detail':>6} {'error':>6}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        base = reference_of(r, results, reference) or r
        lines.append(
            f"{r['arm']:>22} {r['seed']:>4} {r['steps']:>6} {r['seconds_per_step']:>7.3f} "
            f"{r['seconds_per_step'] / base['seconds_per_step']:>6.2f} "
            f"{r['psnr']:>7.2f} +- {r['psnr_std']:<4.2f} {r['psnr'] - base['psnr']:>+6.2f} "
            f"{r['ssim']:>7.3f} {r['fid']:>7.2f} {r['kid']:>7.4f} {r['detail_ratio']:>6.3f} {r['detail_error']:>6.3f}"
        )
    return "\n".join(lines)


def paired_summary(results: list[dict], reference: str) -> list[dict]:
    """Per (arm, steps): the mean over seeds of each metric and of its difference from the ``reference`` arm
    trained with the same seed."""
    summary = []
    for arm, steps in dict.fromkeys((r["arm"], r["steps"]) for r in results):
        rows = [r for r in results if r["arm"] == arm and r["steps"] == steps]
        pairs = [(r, reference_of(r, results, reference)) for r in rows]
        pairs = [(r, base) for r, base in pairs if base is not None]
        entry: dict = {"arm": arm, "steps": steps, "seeds": [r["seed"] for r in rows]}
        for metric in METRICS:
            entry[metric] = statistics.fmean(r[metric] for r in rows)
            differences = [r[metric] - base[metric] for r, base in pairs]
            entry[f"d{metric}"] = statistics.fmean(differences) if differences else None
            entry[f"d{metric}_std"] = statistics.stdev(differences) if len(differences) > 1 else None
        summary.append(entry)
    return summary


def summary_table(summary: list[dict]) -> str:
    """Means over seeds, and paired differences from the reference arm as mean +- std over seeds."""

    def difference(entry: dict, metric: str, width: int, digits: int) -> str:
        if entry[f"d{metric}"] is None:
            return " " * (2 * width + 4)
        spread = entry[f"d{metric}_std"]
        spread_text = f"{spread:<{width}.{digits}f}" if spread is not None else " " * width
        return f"{entry[f'd{metric}']:>+{width}.{digits}f} +- {spread_text}"

    header = (
        f"{'arm':>22} {'steps':>6} {'seeds':>5} {'PSNR':>6} {'dPSNR':>14} {'FID':>6} {'dFID':>14} "
        f"{'KID':>7} {'dKID':>18} {'detail':>6} {'error':>6}"
    )
    lines = [header, "-" * len(header)]
    for e in summary:
        lines.append(
            f"{e['arm']:>22} {e['steps']:>6} {len(e['seeds']):>5} {e['psnr']:>6.2f} {difference(e, 'psnr', 5, 2)} "
            f"{e['fid']:>6.2f} {difference(e, 'fid', 5, 2)} {e['kid']:>7.4f} {difference(e, 'kid', 7, 4)} "
            f"{e['detail_ratio']:>6.3f} {e['detail_error']:>6.3f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    arms = [parse_arm(name) for name in args.arms]
    args.out.mkdir(parents=True, exist_ok=True)
    machine_before = machine_info()
    extractor = InceptionFeatures(batch_size=16)
    real: dict = {}
    results: list[dict] = []
    json_path = args.out / "adversarial.json"
    for seed in args.seeds:
        for arm in arms:
            results += train_and_score(arm, seed, args, extractor, real)
            summary = paired_summary(results, arms[0].name)
            report = {
                "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
                "date": time.strftime("%Y-%m-%d %H:%M"),
                "machine": {**machine_info(), "load_average_before": machine_before["load_average"]},
                "preset": args.preset,
                "image_size": args.image_size,
                "train_every": args.train_every,
                "eval_split": args.eval_split,
                "reference_arm": arms[0].name,
                "steps": args.steps,
                "seeds": args.seeds,
                "results": results,
                "summary": summary,
            }
            write_json(json_path, report)  # rewritten after every run: a long benchmark keeps what it has
            print("\n" + table(results, arms[0].name), flush=True)
    print(f"\nMean over seeds; differences from {arms[0].name} of the same seed (mean +- std over seeds):")
    print(summary_table(summary))
    print(f"\nJSON: {json_path}")


if __name__ == "__main__":
    main()
