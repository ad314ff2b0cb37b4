"""Single-view reconstruction of held-out phantom subjects: fitted codes vs the mean training code, same run.

Trains ``mri-mednerf`` (CPU preset) on a few SIMULATED BraTS-like phantom subjects, then for each held-out
subject and each input azimuth reconstructs the subject from that one view
(:func:`mri_nerfstudio.nerf.single_view.reconstruct_from_view`) and scores the 71 other views and the
volume. Side by side, on the same trained model and the same views:

- ``mean code``: the trivial baseline, the mean training code rendered at those poses (no fitting);
- ``code fit``: the subject's code optimised against the one view (MSE + code prior);
- ``code + field``: the code and the field's weights (``--finetune-field``, as MedNeRF fine-tunes);
- with the slice encoder (on for two or more training subjects): ``encoder start``, the encoder's
  prediction from the held-out subject's scans (no fitting), and ``encoder + code fit``, the code fitted
  from there.

Prints a table and writes JSON.

    .venv/bin/python scripts/bench_single_view.py --out bench_out/single_view
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import torch

from mri_nerfstudio.atomic_write import write_json
from mri_nerfstudio.benchmarking import machine_info
from mri_nerfstudio.encoder_input import cached_encoder_input
from mri_nerfstudio.json_values import to_plain
from mri_nerfstudio.metrics import mean_and_std
from mri_nerfstudio.nerf.dataparser import nerfstudio_cameras
from mri_nerfstudio.nerf.session import TrainingSession
from mri_nerfstudio.nerf.single_view import reconstruct_from_view
from mri_nerfstudio.nerf.single_view_settings import SingleViewSettings
from mri_nerfstudio.nerf.training_config import shipped_config
from mri_nerfstudio.phantom import PhantomConfig, write_brats_root
from mri_nerfstudio.prepare import prepare_subject

VARIANTS = ("mean code", "code fit", "code + field", "encoder start", "encoder + code fit")
KEYS = ("psnr", "ssim", "volume_psnr", "volume_ssim", "input_view_psnr")


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-subjects", type=int, default=4, help="phantom subjects the model is trained on")
    parser.add_argument("--test-subjects", type=int, default=2, help="held-out phantom subjects reconstructed")
    parser.add_argument("--phantom-spacing-mm", type=float, default=4.0, help="phantom voxel size")
    parser.add_argument("--image-size", type=int, default=32, help="view size in pixels")
    parser.add_argument("--train-steps", type=int, default=600)
    parser.add_argument("--grid-resolutions", type=int, nargs="+", default=[16, 32], help="CPU preset grid sizes")
    parser.add_argument("--rays-per-step", type=int, default=512, help="training rays per step")
    parser.add_argument("--fit-steps", type=int, default=200, help="single-view optimisation steps")
    parser.add_argument("--azimuths", type=float, nargs="+", default=[0.0, 90.0], help="input view angles (deg)")
    parser.add_argument("--prior-weight", type=float, default=SingleViewSettings.prior_weight)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench_out/single_view"))
    return parser.parse_args(argv)


def write_phantoms(root: Path, args: argparse.Namespace) -> tuple[Path, list[Path]]:
    """``root/train`` (a BraTS root of the training subjects) and the held-out subject folders."""
    shape = tuple(round(size / args.phantom_spacing_mm) for size in (160, 192, 144))
    config = PhantomConfig(shape=shape, spacing_mm=args.phantom_spacing_mm)
    subjects = write_brats_root(root / "all", n=args.train_subjects + args.test_subjects, seed=args.seed, config=config)
    (root / "train").mkdir()
    for folder in subjects[: args.train_subjects]:
        shutil.move(folder, root / "train" / folder.name)
    return root / "train", subjects[args.train_subjects :]


def train(data: Path, args: argparse.Namespace) -> TrainingSession:
    config = shipped_config(data, args.image_size, args.out / "cache", preset="cpu")
    config.pipeline.model.grid_resolutions = tuple(args.grid_resolutions)
    datamanager = config.pipeline.datamanager
    datamanager.patch_size = min(datamanager.patch_size, args.image_size // 2)
    datamanager.train_num_rays_per_batch = args.rays_per_step
    torch.manual_seed(args.seed)
    session = TrainingSession(config, args.out / "runs")
    for step in range(args.train_steps):
        session.step()
        if (step + 1) % 100 == 0:
            print(f"train step {step + 1}: {session.train_seconds:.0f} s", flush=True)
    return session


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    train_root, held_out = write_phantoms(args.out / "phantoms", args)
    session = train(train_root, args)
    model = session.pipeline.model
    dataparser_config = session.pipeline.datamanager.dataparser.config
    prepare = dataparser_config.prepare
    held_out_scores = session.evaluate()
    print(f"trained: {session.step_count} steps, {session.train_seconds:.0f} s; training subjects' test views "
          f"PSNR {held_out_scores['psnr']:.2f} dB, SSIM {held_out_scores['ssim']:.3f}", flush=True)
    orbit = nerfstudio_cameras(session.pipeline.datamanager.dataparser.subjects[0].cameras)
    base = SingleViewSettings(steps=args.fit_steps, prior_weight=args.prior_weight)
    variants = {
        "code fit": base,
        "code + field": SingleViewSettings(steps=args.fit_steps, prior_weight=args.prior_weight, finetune_field=True),
    }
    runs = []
    for folder in held_out:
        truth = prepare_subject(folder, args.out / "cache", prepare)
        for azimuth in args.azimuths:
            view_index = round(azimuth / prepare.step_deg)
            view = torch.from_numpy(truth.images[view_index])
            row = {"subject": truth.name, "azimuth_deg": azimuth}
            for name, settings in variants.items():
                start = time.perf_counter()
                result = reconstruct_from_view(model, orbit, view_index, view, settings, truth,
                                               baseline=name == "code fit")
                row[name] = {**result.scores, "seconds": time.perf_counter() - start}
                if result.baseline_scores:
                    row["mean code"] = result.baseline_scores
            if model.encoder is not None:
                scans = cached_encoder_input(truth.directory, truth.volume, truth.world_from_voxel,
                                             dataparser_config.encoder_grid_size)
                start = time.perf_counter()
                result = reconstruct_from_view(model, orbit, view_index, view, base, truth, scans=scans)
                row["encoder + code fit"] = {**result.scores, "seconds": time.perf_counter() - start}
                row["encoder start"] = result.baseline_scores
            print(f"{truth.name} at {azimuth:g} deg: " + ", ".join(
                f"{name} {row[name]['psnr']:.2f} dB / {row[name]['ssim']:.3f}" for name in VARIANTS if name in row), flush=True)
            runs.append(row)

    summary = {}
    variants_run = [name for name in VARIANTS if name in runs[0]]
    for name in variants_run:
        summary[name] = {}
        for key in KEYS:
            summary[name][key], summary[name][f"{key}_std"] = mean_and_std([run[name][key] for run in runs])
    header = f"{'start / fit':>18} {'PSNR 71 views':>16} {'SSIM 71 views':>16} {'volume PSNR':>14} {'volume SSIM':>12} {'input-view PSNR':>16}"
    lines = [header, "-" * len(header)]
    for name in variants_run:
        s = summary[name]
        lines.append(
            f"{name:>18} {s['psnr']:>8.2f} +- {s['psnr_std']:<4.2f} {s['ssim']:>8.3f} +- {s['ssim_std']:<5.3f} "
            f"{s['volume_psnr']:>14.2f} {s['volume_ssim']:>12.3f} {s['input_view_psnr']:>16.2f}"
        )
    report = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine_info(),
        "settings": to_plain(vars(args)),
        "training": {"steps": session.step_count, "seconds": session.train_seconds, "held_out": held_out_scores,
                     "subjects": [s.name for s in session.pipeline.datamanager.dataparser.subjects]},
        "summary": summary,
        "runs": runs,
    }
    print("\n" + "\n".join(lines))
    path = args.out / "single_view.json"
    write_json(path, report)
    print(f"\nJSON: {path}")


if __name__ == "__main__":
    main()
