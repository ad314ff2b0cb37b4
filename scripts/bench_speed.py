"""Time to a held-out PSNR: MedNeRF's network (the reference) vs the fast grid field with empty-space skipping.

Both train in the same process on the same prepared subject with the shipped ``mri-mednerf`` method,
interleaved: the preset with less training time so far runs next, up to its next scoring step, so both
see the same machine load. Each is scored on the same held-out views (of the test split, as ``ns-eval``)
at a geometric series of steps (scoring is not training time). Reported per preset: wall and CPU seconds and steps to each PSNR target
(and to the reference's best PSNR, so the ratio exists even when the reference never reaches a
target), iterations/s, render rays/s, peak memory. Prints a table and writes JSON.

- ``mednerf``: GRAF / MedNeRF's 8 x 256 MLP, 64 samples, every sample evaluated (no skipping).
- ``fast``: the ``cpu`` preset (dense feature grids + a tiny MLP, 48 samples) with empty-space skipping.
- ``grid`` (``--compare fast grid``): the same without skipping, to see what skipping adds.

On CUDA the method's mixed precision is on. Defaults fit about 10 minutes on two CPU cores (48 px views
of the embedded MNI152 template); ``--gpu`` is the 128 px run with longer budgets::

    .venv/bin/python scripts/bench_speed.py --out bench_out/speed
    python3 scripts/bench_speed.py --gpu --out bench_out/speed_gpu
    python3 scripts/bench_speed.py --gpu --data brats_size/BraTS2021_00000 --out bench_out/speed_gpu_brats
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mri_nerfstudio.atomic_write import write_json
from mri_nerfstudio.benchmarking import evenly_spaced
from mri_nerfstudio.json_values import to_plain
from mri_nerfstudio.nerf.session import TrainingSession
from mri_nerfstudio.nerf.training_config import CONFIGURATIONS, named_config

REFERENCE = "mednerf"


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="default", help="BraTS subject, volume file, or 'default' (MNI152)")
    parser.add_argument("--image-size", type=int, default=48, help="view size in pixels")
    parser.add_argument("--targets", type=float, nargs="+", default=[25.0, 30.0], help="held-out PSNR targets, dB")
    parser.add_argument("--seconds", type=float, default=200.0, help="training-time budget of the reference")
    parser.add_argument("--compare", nargs="+", default=["fast"], choices=["fast", "grid"], help="against mednerf")
    parser.add_argument("--fast-seconds", type=float, default=120.0, help="training-time budget of each compared field")
    parser.add_argument("--max-steps", type=int, default=20_000, help="step budget per configuration")
    parser.add_argument("--score-growth", type=float, default=1.4, help="ratio between successive scoring steps")
    parser.add_argument("--eval-views", type=int, default=3, help="test views scored along the way")
    parser.add_argument("--render-views", type=int, default=2, help="test views rendered to time rays/s")
    parser.add_argument("--gpu", action="store_true", help="128 px views, 12 scored views, 600 s budgets")
    parser.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda when available")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench_out/speed"), help="folder for the JSON")
    parser.add_argument("--cache-dir", type=Path, default=None, help="prepared-subject cache (default: the usual)")
    args = parser.parse_args(argv)
    if args.gpu:
        args.image_size, args.eval_views, args.render_views = 128, 12, 12
        args.seconds, args.fast_seconds = 600.0, 300.0
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return args


def geometric_steps(max_steps: int, growth: float) -> list[int]:
    """Scoring steps 0, 1, 2, ... growing by ``growth`` (each at least one more), ending at ``max_steps``."""
    if not growth > 1.0:
        raise ValueError(f"growth must be > 1, got {growth}")
    steps, step = [0], 1.0
    while round(step) < max_steps:
        if round(step) > steps[-1]:
            steps.append(round(step))
        step *= growth
    return steps + [max_steps]


def first_reaching(curve: list[dict], target: float) -> dict | None:
    """The first scored point of ``curve`` after training began (step >= 1) with ``psnr >= target``, or None.

    Step 0 does not count: an untrained field that happens to score above a low target took no time.
    """
    return next((point for point in curve if point["step"] >= 1 and point["psnr"] >= target), None)


def speedup(reference: dict | None, fast: dict | None, key: str) -> float | None:
    """``reference[key] / fast[key]`` for two points reaching the same PSNR (None when either did not)."""
    if reference is None or fast is None:
        return None
    return reference[key] / max(fast[key], 1e-9)


@dataclass
class Run:
    """One configuration's session and what was measured on it."""

    name: str
    session: TrainingSession
    budget_seconds: float
    cpu_seconds: float = 0.0
    peak_cuda_bytes: int = 0
    curve: list[dict] = field(default_factory=list)
    schedule: list[int] = field(default_factory=list)

    @property
    def best_psnr(self) -> float:
        return max((point["psnr"] for point in self.curve if point["step"] >= 1), default=-math.inf)

    def out_of_budget(self, max_steps: int) -> bool:
        return self.session.train_seconds >= self.budget_seconds or self.session.step_count >= max_steps

    def advance(self, views: list[int], device: str) -> None:
        """Train to the next scoring step (or the budget), then score ``views``."""
        target = next(step for step in self.schedule if step > self.session.step_count) if self.curve else 0
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start = time.process_time()
        while self.session.step_count < target and self.session.train_seconds < self.budget_seconds:
            self.session.step()
        self.cpu_seconds += time.process_time() - start
        if device == "cuda":
            self.peak_cuda_bytes = max(self.peak_cuda_bytes, torch.cuda.max_memory_allocated())
        scores = self.session.evaluate(views)
        self.curve.append(
            {
                "step": self.session.step_count,
                "train_seconds": self.session.train_seconds,
                "cpu_seconds": self.cpu_seconds,
                **scores,
            }
        )
        print(
            f"{self.name:>8} step {self.session.step_count:6d}  {self.session.train_seconds:8.1f} s  "
            f"PSNR {scores['psnr']:6.2f}  SSIM {scores['ssim']:.3f}",
            flush=True,
        )


def fast_is_done(fast: Run, reference: Run, targets: list[float], max_steps: int) -> bool:
    """The fast field stops once it has every target and the reference's best PSNR so far (or its budget)."""
    reached = all(first_reaching(fast.curve, t) for t in targets) and fast.best_psnr >= reference.best_psnr
    return reached or fast.out_of_budget(max_steps)


@torch.no_grad()
def render_rays_per_second(session: TrainingSession, views: list[int], device: str) -> float:
    """Rays per second rendering held-out ``views`` in eval mode (one warm-up view first)."""
    model, dataset = session.pipeline.model, session.pipeline.datamanager.eval_dataset
    model.eval()
    model.get_outputs_for_camera(dataset.cameras[views[0] : views[0] + 1].to(model.device))
    if device == "cuda":
        torch.cuda.synchronize()
    rays, start = 0, time.perf_counter()
    for index in views:
        camera = dataset.cameras[index : index + 1].to(model.device)
        model.get_outputs_for_camera(camera)
        rays += int(camera.width) * int(camera.height)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    model.train()
    return rays / seconds


def summarise(run: Run, targets: list[float], device: str) -> dict:
    session = run.session
    return {
        "name": run.name,
        "preset": CONFIGURATIONS[run.name][0],
        "skip_empty_space": CONFIGURATIONS[run.name][1],
        "parameters": sum(p.numel() for p in session.pipeline.model.parameters()),
        "steps": session.step_count,
        "train_seconds": session.train_seconds,
        "cpu_seconds": run.cpu_seconds,
        "iterations_per_second": session.step_count / max(session.train_seconds, 1e-9),
        "best_psnr": run.best_psnr,
        "reached": {f"{t:g}": first_reaching(run.curve, t) for t in targets},
        "peak_cuda_bytes": run.peak_cuda_bytes if device == "cuda" else None,
        "curve": run.curve,
    }


def comparison(reference: dict, fast: dict, targets: list[float], matched_psnr: float) -> list[dict]:
    """Per target (and the reference's best PSNR): what each reached, and ``fast``'s speed-ups (wall, CPU, steps)."""
    rows = []
    labelled = [*((f"{t:g} dB", t) for t in targets), (f"{matched_psnr:.2f} dB (reference's best)", matched_psnr)]
    for label, target in labelled:
        ref_point, fast_point = first_reaching(reference["curve"], target), first_reaching(fast["curve"], target)
        rows.append(
            {
                "config": fast.get("name", "fast"),
                "target": label,
                "psnr": target,
                "reference": ref_point,
                "fast": fast_point,
                "wall_speedup": speedup(ref_point, fast_point, "train_seconds"),
                "cpu_speedup": speedup(ref_point, fast_point, "cpu_seconds"),
                "step_ratio": speedup(ref_point, fast_point, "step"),
            }
        )
    return rows


def _point(point: dict | None) -> str:
    if point is None:
        return "not reached"
    return f"{point['step']} st / {point['train_seconds']:.1f} s / {point['cpu_seconds']:.1f} cpu-s"


def _ratio(value: float | None) -> str:
    return f"{value:.1f}x" if value is not None else "-"


def table(results: list[dict], rows: list[dict], device: str) -> str:
    header = (
        f"{'config':>8} {'params':>10} {'steps':>6} {'it/s':>8} {'render rays/s':>14} {'best PSNR':>10} {'peak memory':>14}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        memory = f"{r['peak_cuda_bytes'] / 2**20:.0f} MiB" if r["peak_cuda_bytes"] is not None else "see note"
        lines.append(
            f"{r['name']:>8} {r['parameters']:>10,} {r['steps']:>6} {r['iterations_per_second']:>8.2f} "
            f"{r['render_rays_per_second']:>14,.0f} {r['best_psnr']:>10.2f} {memory:>14}"
        )
    lines += ["", f"{'held-out PSNR':<32} {'mednerf':>34} {'compared':>43} {'wall':>7} {'CPU':>7} {'steps':>7}"]
    for row in rows:
        lines.append(
            f"{row['target']:<32} {_point(row['reference']):>34} {row['config'] + ': ' + _point(row['fast']):>43} "
            f"{_ratio(row['wall_speedup']):>7} {_ratio(row['cpu_speedup']):>7} {_ratio(row['step_ratio']):>7}"
        )
    if device != "cuda":
        rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
        lines.append(f"\npeak memory (CPU): process ru_maxrss {rss_mib:.0f} MiB, all configurations together")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    runs = {}
    for name, budget in ((REFERENCE, args.seconds), *((name, args.fast_seconds) for name in args.compare)):
        torch.manual_seed(args.seed)
        config = named_config(name, args.data, args.image_size, args.device, args.cache_dir)
        session = TrainingSession(config, args.out / "runs")
        runs[name] = Run(name, session, budget, schedule=geometric_steps(args.max_steps, args.score_growth))
    reference, compared = runs[REFERENCE], [runs[name] for name in args.compare]
    held_out = len(reference.session.pipeline.datamanager.eval_dataset)
    views = evenly_spaced(held_out, args.eval_views)

    while True:
        pending = [r for r in (reference, *compared) if not (r.curve and r.out_of_budget(args.max_steps))]
        pending = [
            r
            for r in pending
            if r is reference or not (r.curve and fast_is_done(r, reference, args.targets, args.max_steps))
        ]
        if not pending:
            break
        min(pending, key=lambda r: r.session.train_seconds).advance(views, args.device)

    render_views = evenly_spaced(held_out, args.render_views)
    results = []
    for run in (reference, *compared):
        summary = summarise(run, args.targets, args.device)
        summary["render_rays_per_second"] = render_rays_per_second(run.session, render_views, args.device)
        results.append(summary)
    rows = [row for result in results[1:] for row in comparison(results[0], result, args.targets, reference.best_psnr)]
    report = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10,
        },
        "settings": to_plain(vars(args)),
        "scored_views": views,
        "results": results,
        "comparison": rows,
    }
    print("\n" + table(results, rows, args.device))
    json_path = args.out / "speed.json"
    write_json(json_path, report)
    print(f"\nJSON: {json_path}")


if __name__ == "__main__":
    main()
