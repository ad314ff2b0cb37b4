"""The methods, one per preset, machine-independent; mri-mednerf as a user runs it: ns-train, ns-eval,
ns-render and resuming, from the installed package, on tiny phantoms."""

from __future__ import annotations

import copy
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from mri_nerfstudio.nerf import method_config
from mri_nerfstudio.nerf.method_config import mri_mednerf, mri_mednerf_gpu
from mri_nerfstudio.nerf.presets import PRESETS
from mri_nerfstudio.nerf.trainer import MRITrainer, preset_optimizers

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


def _learning_rates(config) -> dict[str, float]:
    """The learning rate each param group trains at (the field's from the preset unless set)."""
    return {name: group["optimizer"].lr for name, group in preset_optimizers(config).items()}


@pytest.mark.parametrize(
    ("method", "preset", "device", "steps"),
    [(mri_mednerf, "cpu", "cpu", 1_000), (mri_mednerf_gpu, "mednerf", "cuda", 30_000)],
)
def test_each_method_fixes_its_preset_device_steps_and_field_rate(method, preset, device, steps):
    config = method.config
    assert config.pipeline.model.preset == preset
    assert (config.machine.device_type, config.mixed_precision) == (device, device == "cuda")
    assert config.max_num_iterations == steps
    assert config.viewer.websocket_host == "127.0.0.1"
    assert config._target is MRITrainer
    assert config.optimizers["fields"]["optimizer"].lr is None  # the preset's, filled in by MRITrainer
    assert _learning_rates(config) == {
        "fields": PRESETS[preset].learning_rate, "codes": 1e-3, "discriminator": 1e-4, "encoder": 1e-3,
    }  # fmt: skip


def test_the_methods_are_the_same_whatever_the_machine(monkeypatch):
    shipped = {name: yaml.dump(method.config) for name, method in (("cpu", mri_mednerf), ("gpu", mri_mednerf_gpu))}
    for cuda in (True, False):
        monkeypatch.setattr(torch.cuda, "is_available", lambda cuda=cuda: cuda)
        reloaded = importlib.reload(method_config)
        assert yaml.dump(reloaded.mri_mednerf.config) == shipped["cpu"]
        assert yaml.dump(reloaded.mri_mednerf_gpu.config) == shipped["gpu"]


@pytest.mark.parametrize("method", [mri_mednerf, mri_mednerf_gpu])
@pytest.mark.parametrize("field_rate", [None, 3e-3])
def test_a_saved_config_loads_with_its_preset_and_learning_rates(method, field_rate):
    config = copy.deepcopy(method.config)
    config.optimizers["fields"]["optimizer"].lr = field_rate
    # What ns-train writes (config.yml) and ns-eval / ns-train --load-config read back.
    loaded = yaml.load(yaml.dump(config), Loader=yaml.Loader)
    assert loaded.pipeline.model.preset == config.pipeline.model.preset
    assert loaded.machine.device_type == config.machine.device_type
    assert _learning_rates(loaded) == _learning_rates(config)
    assert _learning_rates(loaded)["fields"] == (field_rate or PRESETS[config.pipeline.model.preset].learning_rate)


def _assert_the_help_shows_each_preset_with_its_learning_rate(help_text: str) -> None:
    text = " ".join(help_text.replace("│", " ").split())  # without rich's box and line breaks
    for name, preset in PRESETS.items():
        assert f"{name}: {preset.summary()}" in text  # under --pipeline.model.preset
        assert f"{name} {preset.learning_rate:g}" in text  # under --optimizers.fields.optimizer.lr
    assert "--optimizers.fields.optimizer.lr {None}|FLOAT" in text


# In-process, as ns-train builds its parser: the installed entry point itself runs in the command-line test below.
@pytest.mark.parametrize("method", ["mri-mednerf", "mri-mednerf-gpu"])
def test_the_help_shows_each_preset_with_its_learning_rate(ns_train_cli, capsys, method):
    with pytest.raises(SystemExit):
        ns_train_cli([method, "--help"])
    _assert_the_help_shows_each_preset_with_its_learning_rate(capsys.readouterr().out)


@pytest.mark.slow
def test_train_eval_render_and_resume_from_the_command_line(phantom_root, tmp_path):
    common_data = ["mri-data", "--data", str(phantom_root), "--cache-dir", str(tmp_path / "cache"), *TINY_DATA]
    out = tmp_path / "outputs"
    train = [str(BIN / "ns-train"), "mri-mednerf", *TINY_TRAIN, "--vis", "tensorboard", "--output-dir", str(out)]
    # FID / KID through ns-eval are the demo's (tests/cli/test_demo.py): here ns-eval scores views and volumes.
    first = ["--max-num-iterations", "40", "--timestamp", "first", "--pipeline.image-set-metrics", "False"]
    trained = _run(*train, *first, *common_data, cwd=tmp_path)
    assert "train: 30 views (2 subject(s) x 15)" in trained.stdout
    # During training nerfstudio asks for the "val" split: the 14 val views, none of the 43 test views.
    assert "val: 28 views (2 subject(s) x 14)" in trained.stdout
    run_dir = out / "unnamed" / "mri-mednerf" / "first"
    config = run_dir / "config.yml"
    assert sorted(p.name for p in (run_dir / "nerfstudio_models").glob("*.ckpt")) == ["step-000000039.ckpt"]
    state = torch.load(run_dir / "nerfstudio_models" / "step-000000039.ckpt", map_location="cpu", weights_only=True)
    assert state["optimizers"]["fields"]["param_groups"][0]["lr"] == 2e-2  # the cpu preset's rate

    _run(str(BIN / "ns-eval"), "--load-config", str(config), "--output-path", str(tmp_path / "eval.json"), cwd=tmp_path)
    results = json.loads((tmp_path / "eval.json").read_text())["results"]
    assert {"psnr", "psnr_std", "ssim", "ssim_std", "volume_psnr"} <= results.keys() and "fid" not in results
    assert 15.0 < results["psnr"] < 60.0 and 0.0 < results["ssim"] <= 1.0 and results["psnr_std"] > 0.0
    # The split, over both subjects: 15 training, 14 val and 43 test views each (volume mode: no mirror copies).
    split = {"num_train_views": 30, "num_val_views": 28, "num_test_views": 86, "num_mirror_views_excluded": 0}
    assert {key: results[key] for key in split} == split

    renders = tmp_path / "renders"
    # The val split (14 views a subject) is enough here; the demo renders the test split.
    _run(
        str(BIN / "ns-render"), "dataset", "--load-config", str(config), "--split", "val", "--image-format", "png",
        "--output-path", str(renders), "--rendered-output-names", "rgb", "volume", cwd=tmp_path,
    )  # fmt: skip
    # One folder per subject (ns-render keeps the image filenames' relative paths).
    for output in ("rgb", "volume"):
        images = [path.relative_to(renders / "val" / output) for path in (renders / "val" / output).rglob("*.png")]
        assert len(images) == 2 * 14 and len({image.parts[0] for image in images}) == 2

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
