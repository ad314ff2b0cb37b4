"""``mri-demo``: the whole loop on the embedded MNI152 template, offline, on a CPU in minutes.

1. prepare the default subject (load -> preprocess -> 72 views at 5 degrees) into the demo's cache;
2. ``ns-train mri-mednerf`` on its 15 training views (evaluating on the 14 val views);
3. ``ns-eval`` on the 43 test views (PSNR, SSIM and their std, FID, KID, as JSON);
4. ``ns-render dataset --split test`` (rendered and ground-truth PNGs of the test views);
5. print the test scores next to MedNeRF's published ones, labelled as what they are (not a like-for-like
   comparison: one noise-free template here, real BraTS patients there), and where every file is.

The nerfstudio steps run as the same commands a user would type (printed before each one), so the
demo doubles as a worked example. Every run writes into its own timestamped folder.
With ``--viewer`` training stays open in nerfstudio's browser viewer until Ctrl-C, then steps 3-5 run.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import tyro

from mri_nerfstudio.cli.errors import exit_on_input_error
from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.metrics import MEDNERF_REFERENCE
from mri_nerfstudio.prepare import PrepareConfig, prepare_subject
from mri_nerfstudio.view_split import orbit_view_split

# Deprecation warnings that nerfstudio 1.1.5 raises on every call with torch 2.14, not ours to fix.
NERFSTUDIO_NOISE = "ignore::UserWarning:nerfstudio.cameras.cameras,ignore::FutureWarning"

HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "fid": False, "kid": False}


@dataclass
class DemoCommand:
    """Train, evaluate and render mri-mednerf on the embedded MNI152 template (no download; CPU is fine)."""

    out: Path = Path("demo_out")
    """Folder for everything the demo writes (cache, runs)."""
    image_size: int = 128
    """View size in pixels."""
    iterations: int = 1000
    """Training steps (the CPU preset beats the reference's figures on test views after about 500)."""
    viewer: bool = False
    """Keep nerfstudio's browser viewer open during and after training (Ctrl-C to go on to evaluation)."""
    viewer_port: int = 7007
    """Port of the viewer on 127.0.0.1 (with --viewer)."""


@dataclass(frozen=True)
class DemoRun:
    """Where one demo run writes its files."""

    directory: Path
    """The run folder: ``<out>/runs/MNI152/mri-mednerf/<timestamp>``."""

    @property
    def config(self) -> Path:
        return self.directory / "config.yml"

    @property
    def eval_json(self) -> Path:
        return self.directory / "eval.json"

    @property
    def renders(self) -> Path:
        return self.directory / "renders"


def nerfstudio_command(name: str) -> str:
    """Absolute path of a nerfstudio console script (``ns-train`` ...), next to this Python first."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        raise MRIInputError(f"{name}: not found next to {sys.executable} or on PATH; is nerfstudio installed?")
    return found


class Log:
    """Progress lines stamped with the seconds since the demo started."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def __call__(self, message: str) -> None:
        print(f"[mri-demo {self.elapsed():6.1f} s] {message}", flush=True)


def run_step(arguments: list[str], log: Log) -> None:
    """Run one nerfstudio command, streaming its output; stop the demo if it fails."""
    log(f"$ {Path(arguments[0]).name} {shlex.join(arguments[1:])}")
    result = subprocess.run(arguments, env={**os.environ, "PYTHONWARNINGS": NERFSTUDIO_NOISE})
    if result.returncode != 0:
        raise MRIInputError(f"{Path(arguments[0]).name} failed with exit status {result.returncode} (its output is above)")


def train_arguments(command: DemoCommand, cache: Path, timestamp: str) -> list[str]:
    """The ``ns-train mri-mednerf ... mri-data ...`` command line of the demo."""
    if command.viewer:
        vis = ["--vis", "viewer", "--viewer.websocket-port", str(command.viewer_port)]
    else:
        vis = ["--vis", "tensorboard"]
    return [
        nerfstudio_command("ns-train"),
        "mri-mednerf",
        "--output-dir", str(command.out / "runs"),
        "--experiment-name", "MNI152",
        "--timestamp", timestamp,
        "--max-num-iterations", str(command.iterations),
        # MedNeRF's 32 x 32 patches, or the whole view when it is smaller.
        "--pipeline.datamanager.patch-size", str(min(32, command.image_size)),
        "--steps-per-save", str(command.iterations),
        *vis,
        "--viewer.quit-on-train-completion", str(not command.viewer),
        "mri-data",
        "--cache-dir", str(cache),
        "--prepare.image-size", str(command.image_size),
    ]  # fmt: skip


def train(command: DemoCommand, cache: Path, run: DemoRun, log: Log) -> None:
    arguments = train_arguments(command, cache, run.directory.name)
    if not command.viewer:
        run_step(arguments, log)
        return
    log(f"viewer: http://127.0.0.1:{command.viewer_port} (Ctrl-C once training is done to evaluate)")
    try:
        run_step(arguments, log)
    except KeyboardInterrupt:
        log("Ctrl-C: viewer closed")
    if not list((run.directory / "nerfstudio_models").glob("*.ckpt")):
        raise MRIInputError(f"{run.directory}: no checkpoint; training was stopped before its end")


def read_scores(eval_json: Path) -> dict[str, float]:
    """``results`` of an ``ns-eval`` JSON (psnr, psnr_std, ssim, ssim_std, ...)."""
    try:
        return {key: float(value) for key, value in json.loads(eval_json.read_text())["results"].items()}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise MRIInputError(f"{eval_json}: expected ns-eval's JSON with a 'results' object ({error})") from error


def score_table(scores: dict[str, float]) -> str:
    """Test-view scores next to MedNeRF's (those ns-eval reported), then the volume's fidelity.

    Not a like-for-like comparison: print :func:`comparison_caveat` with it."""
    lines = [f"{'test views':<16}{'mri-nerfstudio':>20}{'MedNeRF (poster)':>18}"]
    for metric, (reference, _) in MEDNERF_REFERENCE.items():
        if metric not in scores:
            continue
        spread = scores.get(f"{metric}_std")
        ours = f"{scores[metric]:.3f}" + ("" if spread is None else f" +- {spread:.3f}")
        better = scores[metric] > reference if HIGHER_IS_BETTER[metric] else scores[metric] < reference
        lines.append(f"{metric.upper():<16}{ours:>20}{reference:>18.3f}   {'better' if better else 'NOT better'}")
    for metric in ("volume_psnr", "volume_ssim"):
        if metric in scores:
            lines.append(f"{metric.replace('_', ' '):<16}{scores[metric]:>20.3f}{'(not reported)':>18}")
    return "\n".join(lines)


def comparison_caveat(scores: dict[str, float]) -> str:
    """What the two columns of :func:`score_table` measure: the reason they are not like for like."""
    views = scores.get("num_test_views")
    count = "its test views" if views is None else f"{int(views)} test views"
    images = ""
    if "fid" in scores and views is not None:
        images = f"; FID and KID over {int(views)} images (too few for a stable FID)"
    return (
        "NOT a like-for-like comparison:\n"
        f"  mri-nerfstudio: one noise-free template (MNI152), scored on {count}{images}\n"
        "  MedNeRF (poster): real BraTS 2021 patients, as its authors report them"
    )


def run(command: DemoCommand) -> DemoRun:
    if command.iterations < 1 or command.image_size < 8:
        raise MRIInputError(f"--iterations must be >= 1 and --image-size >= 8, got {command.iterations}, {command.image_size}")
    log = Log()
    cache = command.out / "cache"
    log("1/4 preparing the embedded MNI152 template")
    subject = prepare_subject(None, cache, PrepareConfig(image_size=command.image_size), progress=log)
    log(f"prepared {subject.name}: {len(subject.images)} views in {subject.directory}")

    split = orbit_view_split(subject.config)
    timestamp = time.strftime("%Y-%m-%d_%H%M%S")
    run = DemoRun(command.out / "runs" / "MNI152" / "mri-mednerf" / timestamp)
    log(f"2/4 training {command.iterations} steps on {len(split.train)} views ({len(split.val)} val views)")
    train(command, cache, run, log)

    log(f"3/4 evaluating on the {len(split.test)} test views")
    ns_eval = [nerfstudio_command("ns-eval"), "--load-config", str(run.config), "--output-path", str(run.eval_json)]
    run_step(ns_eval, log)
    log("4/4 rendering the test views")
    ns_render = [
        nerfstudio_command("ns-render"), "dataset", "--load-config", str(run.config), "--split", "test",
        "--output-path", str(run.renders), "--image-format", "png", "--rendered-output-names", "rgb", "gt-rgb", "volume",
    ]  # fmt: skip
    run_step(ns_render, log)

    scores = read_scores(run.eval_json)
    print(f"\n{score_table(scores)}\n{comparison_caveat(scores)}\n")
    print(f"done in {log.elapsed():.0f} s")
    print(f"  config:      {run.config}")
    print(f"  scores:      {run.eval_json}")
    print(f"  renders:     {run.renders / 'test'}  (rgb/, gt-rgb/, volume/)")
    print(f"  views:       {subject.directory / 'views'}")
    print(f"  volume:      {subject.directory / 'preprocessed_t1.nii.gz'}")
    print(f"  viewer:      ns-viewer --load-config {run.config}")
    return run


def main(argv: list[str] | None = None) -> None:
    exit_on_input_error(run, tyro.cli(DemoCommand, args=argv, description=__doc__))


if __name__ == "__main__":
    main(sys.argv[1:])
