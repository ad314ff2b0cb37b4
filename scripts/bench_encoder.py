"""The slice encoder, measured: an ablation on phantom subjects and the cost of more subjects.

Ablation (same phantoms, same steps, same seed, one run): codes only (encoder off) vs codes + encoder
vs codes + encoder without the Squeeze-and-Excitation block. Training uses the first
``--train-subjects`` subjects; the rest are held out (never trained on: their codes come from the
encoder alone, or are the untrained initial codes without it). Scores: PSNR / SSIM on the test views
(the test split of the orbit, as ``ns-eval``) of the training subjects, and of the held-out subjects.

Scaling: time and peak memory per training step with 1, 4, 16 and 30 subjects (encoder on), each in a
fresh process so its peak resident memory is its own.

    .venv/bin/python scripts/bench_encoder.py --out bench_out/encoder
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from mri_nerfstudio.atomic_write import write_json
from mri_nerfstudio.benchmarking import machine_info
from mri_nerfstudio.nerf.encoder import SliceEncoderConfig
from mri_nerfstudio.nerf.session import TrainingSession
from mri_nerfstudio.nerf.training_config import shipped_config
from mri_nerfstudio.phantom import PhantomConfig, write_brats_root

ARMS = {
    "codes only": SliceEncoderConfig(enabled="off"),
    "codes + encoder": SliceEncoderConfig(enabled="on"),
    "codes + encoder, no SE": SliceEncoderConfig(enabled="on", squeeze_excitation=False),
}


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=6, help="phantom subjects in the ablation")
    parser.add_argument("--train-subjects", type=int, default=4, help="of which trained on (the rest held out)")
    parser.add_argument("--steps", type=int, default=300, help="training steps per arm")
    parser.add_argument("--image-size", type=int, default=32, help="view size in pixels")
    parser.add_argument("--eval-views", type=int, default=10, help="test views scored per subject")
    parser.add_argument("--scaling", type=int, nargs="*", default=[1, 4, 16, 30], help="subject counts timed")
    parser.add_argument("--scaling-steps", type=int, default=20, help="timed steps per subject count")
    parser.add_argument("--parts", nargs="+", default=["ablation", "scaling"], choices=["ablation", "scaling"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench_out/encoder"))
    parser.add_argument("--scaling-worker", type=int, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def phantom_root(out: Path, count: int, seed: int) -> Path:
    """``count`` tiny SIMULATED BraTS subjects (written once per count and seed)."""
    root = out / f"phantoms_{count}_seed{seed}"
    if not root.is_dir():
        write_brats_root(root, n=count, seed=seed, config=PhantomConfig(shape=(40, 48, 36), spacing_mm=4.0))
    return root


def make_session(root: Path, args: argparse.Namespace, encoder: SliceEncoderConfig, train_subjects: int) -> TrainingSession:
    config = shipped_config(root, args.image_size, args.out / "cache", preset="cpu")
    config.pipeline.model.encoder = encoder
    config.pipeline.datamanager.dataparser.train_subjects = (str(train_subjects),)
    torch.manual_seed(args.seed)
    return TrainingSession(config, args.out / "runs")


def subject_views(session: TrainingSession, subject: int, count: int) -> list[int]:
    """Eval-dataset indices of ``count`` of a subject's test views, spread over the orbit."""
    subject_of = session.pipeline.datamanager.eval_dataset.cameras.metadata["subject_index"][:, 0].round().long()
    indices = torch.nonzero(subject_of == subject).flatten()
    picks = torch.linspace(0, len(indices) - 1, min(count, len(indices))).round().long()
    return indices[picks].tolist()


def ablation(args: argparse.Namespace) -> list[dict]:
    root = phantom_root(args.out, args.subjects, args.seed)
    results = []
    for arm, encoder in ARMS.items():
        session = make_session(root, args, encoder, args.train_subjects)
        while session.step_count < args.steps:
            session.step()
        groups = {"training subjects": range(args.train_subjects), "held-out subjects": range(args.train_subjects, args.subjects)}
        scores = {}
        for group, subjects in groups.items():
            views = [index for subject in subjects for index in subject_views(session, subject, args.eval_views)]
            scores[group] = session.evaluate(views)
        results.append({"arm": arm, "steps": session.step_count, "train_seconds": session.train_seconds, **scores})
        print(
            f"{arm:>24}: training subjects PSNR {scores['training subjects']['psnr']:.2f}, "
            f"held-out subjects PSNR {scores['held-out subjects']['psnr']:.2f} ({session.train_seconds:.0f} s)",
            flush=True,
        )
    return results


def peak_resident_mib() -> float:
    """This process's peak resident memory (Linux ``VmHWM``; unlike ``ru_maxrss`` it is not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def scaling_worker(args: argparse.Namespace) -> None:
    """Runs in its own process: time per step and peak memory with ``args.scaling_worker`` subjects."""
    count = args.scaling_worker
    root = phantom_root(args.out, count, args.seed)
    session = make_session(root, args, SliceEncoderConfig(enabled="on"), count)
    for _ in range(3):  # warm-up: first steps allocate
        session.step()
    warm_seconds = session.train_seconds
    process_start = time.process_time()
    for _ in range(args.scaling_steps):
        session.step()
    model = session.pipeline.model
    result = {
        "subjects": count,
        "seconds_per_step": (session.train_seconds - warm_seconds) / args.scaling_steps,
        "cpu_seconds_per_step": (time.process_time() - process_start) / args.scaling_steps,
        "peak_rss_mib": peak_resident_mib(),
        "code_table_parameters": model.subject_codes.weight.numel(),
        "encoder_input_mib": model.encoder_scans.numel() * model.encoder_scans.element_size() / 2**20,
        "cuda_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
    }
    print(json.dumps(result))


def scaling(args: argparse.Namespace) -> list[dict]:
    results = []
    for count in args.scaling:
        command = [sys.executable, __file__, "--scaling-worker", str(count), "--out", str(args.out),
                   "--image-size", str(args.image_size), "--scaling-steps", str(args.scaling_steps), "--seed", str(args.seed)]
        completed = subprocess.run(command, capture_output=True, text=True, check=True)
        results.append(json.loads(completed.stdout.strip().splitlines()[-1]))
        print(f"{count:>3} subjects: {results[-1]['seconds_per_step']:.3f} s/step, peak RSS {results[-1]['peak_rss_mib']:.0f} MiB", flush=True)
    return results


def tables(ablation_results: list[dict], scaling_results: list[dict]) -> str:
    lines = [f"{'arm':>24} {'training subjects PSNR / SSIM':>30} {'held-out subjects PSNR / SSIM':>30}"]
    for r in ablation_results:
        train, held = r["training subjects"], r["held-out subjects"]
        lines.append(
            f"{r['arm']:>24} {train['psnr']:>13.2f} +- {train['psnr_std']:4.2f} / {train['ssim']:.3f}"
            f" {held['psnr']:>13.2f} +- {held['psnr_std']:4.2f} / {held['ssim']:.3f}"
        )
    lines += ["", f"{'subjects':>8} {'s/step':>8} {'CPU s/step':>10} {'peak RSS MiB':>12} {'code params':>11} {'enc. input MiB':>14}"]
    for r in scaling_results:
        lines.append(
            f"{r['subjects']:>8} {r['seconds_per_step']:>8.3f} {r['cpu_seconds_per_step']:>10.3f} {r['peak_rss_mib']:>12.0f}"
            f" {r['code_table_parameters']:>11} {r['encoder_input_mib']:>14.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.scaling_worker is not None:
        scaling_worker(args)
        return
    if not 1 <= args.train_subjects < args.subjects:
        raise SystemExit(f"--train-subjects must be in 1..{args.subjects - 1} (some subjects must be held out)")
    ablation_results = ablation(args) if "ablation" in args.parts else []
    scaling_results = scaling(args) if "scaling" in args.parts else []
    report = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine_info(),
        "settings": {k: str(v) for k, v in vars(args).items()},
        "ablation": ablation_results,
        "scaling": scaling_results,
    }
    print("\n" + tables(ablation_results, scaling_results))
    path = args.out / f"encoder_{'_'.join(args.parts)}.json"
    write_json(path, report)
    print(f"\nJSON: {path}")


if __name__ == "__main__":
    main()
