"""The mri-mednerf method as a user runs it: ns-train, ns-eval, ns-render and resuming, from the
installed package, on tiny phantoms."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mri_nerfstudio.nerf.method_config import mri_mednerf

BIN = Path(sys.executable).parent
QUIET = {**os.environ, "PYTHONWARNINGS": "ignore"}
# A small field and views so that a CPU run takes seconds; everything else is the shipped method.
TINY_TRAIN = [
    "--pipeline.model.preset", "cpu", "--pipeline.model.grid-resolutions", "16", "32",
    "--pipeline.model.num-samples", "24", "--pipeline.datamanager.train-num-rays-per-batch", "256", "--pipeline.datamanager.patch-size", "8",
    "--steps-per-eval-batch", "1000", "--steps-per-eval-image", "1000", "--steps-per-eval-all-images", "100000",
]  # fmt: skip
TINY_DATA = ["--prepare.image-size", "24"]


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([*args], capture_output=True, text=True, cwd=cwd, env=QUIET, timeout=900)
    assert result.returncode == 0, f"{args[:2]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


def test_the_shipped_method_runs_on_this_machine():
    config = mri_mednerf.config
    assert config.machine.device_type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert config.viewer.websocket_host == "127.0.0.1"
    assert config.pipeline.model.preset == ("mednerf" if torch.cuda.is_available() else "cpu")
    assert config.mixed_precision == torch.cuda.is_available()


@pytest.mark.slow
def test_train_eval_render_and_resume_from_the_command_line(phantom_root, tmp_path):
    common_data = ["mri-data", "--data", str(phantom_root), "--cache-dir", str(tmp_path / "cache"), *TINY_DATA]
    out = tmp_path / "outputs"
    train = [str(BIN / "ns-train"), "mri-mednerf", *TINY_TRAIN, "--vis", "tensorboard", "--output-dir", str(out)]
    _run(*train, "--max-num-iterations", "40", "--timestamp", "first", *common_data, cwd=tmp_path)
    run_dir = out / "unnamed" / "mri-mednerf" / "first"
    config = run_dir / "config.yml"
    assert sorted(p.name for p in (run_dir / "nerfstudio_models").glob("*.ckpt")) == ["step-000000039.ckpt"]

    _run(str(BIN / "ns-eval"), "--load-config", str(config), "--output-path", str(tmp_path / "eval.json"), cwd=tmp_path)
    results = json.loads((tmp_path / "eval.json").read_text())["results"]
    assert {"psnr", "psnr_std", "ssim", "ssim_std"} <= results.keys()
    assert 15.0 < results["psnr"] < 60.0 and 0.0 < results["ssim"] <= 1.0 and results["psnr_std"] > 0.0
    # The split, over both subjects: 15 training, 14 val and 43 test views each (volume mode: no mirror copies).
    split = {"num_train_views": 30, "num_val_views": 28, "num_test_views": 86, "num_mirror_views_excluded": 0}
    assert {key: results[key] for key in split} == split

    renders = tmp_path / "renders"
    _run(
        str(BIN / "ns-render"), "dataset", "--load-config", str(config), "--split", "test", "--image-format", "png",
        "--output-path", str(renders), "--rendered-output-names", "rgb", "volume", cwd=tmp_path,
    )  # fmt: skip
    # One folder per subject (ns-render keeps the image filenames' relative paths).
    assert len(list((renders / "test" / "rgb").rglob("*.png"))) == 2 * 43
    assert len(list((renders / "test" / "volume").rglob("*.png"))) == 2 * 43

    resumed = _run(
        *train, "--max-num-iterations", "20", "--timestamp", "resumed", "--load-dir", str(run_dir / "nerfstudio_models"),
        *common_data, cwd=tmp_path,
    )  # fmt: skip
    assert "Done loading Nerfstudio checkpoint" in resumed.stdout
    resumed_models = out / "unnamed" / "mri-mednerf" / "resumed" / "nerfstudio_models"
    # nerfstudio resumes at step 40 and runs --max-num-iterations more steps: 40..59.
    assert (resumed_models / "step-000000059.ckpt").is_file()
    state = torch.load(resumed_models / "step-000000059.ckpt", map_location="cpu", weights_only=True)
    assert state["step"] == 59
