"""The Trainer: the field's learning rate follows the model preset unless it is set, one flag either way."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from nerfstudio.configs.method_configs import method_configs
from nerfstudio.engine.trainer import Trainer

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.nerf.method_config import mri_mednerf
from mri_nerfstudio.nerf.presets import PRESETS
from mri_nerfstudio.nerf.session import TrainingSession
from mri_nerfstudio.nerf.trainer import MRITrainer, preset_optimizers


@pytest.mark.parametrize(
    ("arguments", "field_rate"),
    [
        (["mri-mednerf"], PRESETS["cpu"].learning_rate),
        (["mri-mednerf", "--pipeline.model.preset", "mednerf"], PRESETS["mednerf"].learning_rate),
        (["mri-mednerf-gpu"], PRESETS["mednerf"].learning_rate),
        (["mri-mednerf-gpu", "--pipeline.model.preset", "cpu"], PRESETS["cpu"].learning_rate),
        (["mri-mednerf", "--pipeline.model.preset", "mednerf", "--optimizers.fields.optimizer.lr", "1e-3"], 1e-3),
        (["mri-mednerf-gpu", "--optimizers.fields.optimizer.lr", "1e-3"], 1e-3),
    ],
)
def test_the_field_rate_follows_the_preset_unless_set(ns_train_cli, arguments, field_rate):
    config = ns_train_cli([*arguments, "mri-data"])
    optimizers = preset_optimizers(config)
    assert optimizers["fields"]["optimizer"].lr == field_rate
    assert optimizers["codes"]["optimizer"].lr == 1e-3
    assert config.optimizers["fields"]["optimizer"].lr == (1e-3 if field_rate == 1e-3 else None)  # not modified


def test_a_model_without_presets_needs_an_explicit_field_rate():
    config = copy.deepcopy(mri_mednerf.config)
    config.pipeline.model = copy.deepcopy(method_configs["nerfacto"].pipeline.model)
    message = "NerfactoModelConfig without presets: set --optimizers.fields.optimizer.lr"
    with pytest.raises(MRIInputError, match=message):
        preset_optimizers(config)
    config.optimizers["fields"]["optimizer"].lr = 1e-2
    assert preset_optimizers(config)["fields"]["optimizer"].lr == 1e-2


def test_an_unknown_preset_is_an_input_error():
    config = copy.deepcopy(mri_mednerf.config)
    config.pipeline.model.preset = "huge"
    with pytest.raises(MRIInputError, match=r"pipeline.model.preset must be one of \('mednerf', 'cpu'\), got 'huge'"):
        preset_optimizers(config)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """One prepared-subject cache for the module's sessions (the subject is prepared once)."""
    return tmp_path_factory.mktemp("cache")


@pytest.mark.parametrize(
    ("preset", "explicit", "expected"), [("cpu", None, 2e-2), ("mednerf", None, 5e-4), ("cpu", 7e-3, 7e-3)]
)
def test_the_trainer_builds_the_field_optimizer_at_that_rate(
    tiny_method_config, phantom_subject_dir, cache_dir, tmp_path, preset, explicit, expected
):
    config = tiny_method_config(phantom_subject_dir, cache_dir)
    config.pipeline.model.preset = preset
    config.optimizers["fields"]["optimizer"].lr = explicit
    optimizers = TrainingSession(config, tmp_path / "outputs").trainer.optimizers.optimizers
    assert optimizers["fields"].param_groups[0]["lr"] == expected
    assert optimizers["codes"].param_groups[0]["lr"] == 1e-3


@pytest.mark.parametrize(
    ("device", "cuda", "hinted"), [("cpu", True, True), ("cpu", False, False), ("cuda", True, False)]
)
def test_a_cpu_run_on_a_cuda_machine_names_the_gpu_method(monkeypatch, capsys, tmp_path, device, cuda, hinted):
    monkeypatch.setattr(Trainer, "setup", lambda self, test_mode="val": None)  # nerfstudio's: data, model, optimizers
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    config = copy.deepcopy(mri_mednerf.config)
    config.machine.device_type = device
    config.output_dir = tmp_path
    MRITrainer(config).setup()
    assert ("`ns-train mri-mednerf-gpu` trains MedNeRF's MLP" in " ".join(capsys.readouterr().out.split())) == hinted
