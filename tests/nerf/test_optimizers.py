"""Optimizer configs: the generator's algorithm is a command-line switch (Adam or MedNeRF's RMSprop); the
field's learning rate may be left to the preset."""

from __future__ import annotations

import copy

import pytest
import torch
import tyro
import yaml
from nerfstudio.engine.trainer import TrainerConfig

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.nerf.method_config import mri_mednerf
from mri_nerfstudio.nerf.optimizers import FieldOptimizerConfig, RMSpropOptimizerConfig, SwitchableOptimizerConfig


def _parameters() -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.zeros(3))]


def test_switchable_config_builds_adam_or_rmsprop_with_its_settings():
    adam = SwitchableOptimizerConfig(lr=2e-2, eps=1e-15).setup(_parameters())
    assert type(adam) is torch.optim.Adam
    assert adam.param_groups[0]["lr"] == 2e-2 and adam.param_groups[0]["eps"] == 1e-15
    rmsprop = SwitchableOptimizerConfig(algorithm="rmsprop", lr=5e-4, alpha=0.9).setup(_parameters())
    assert type(rmsprop) is torch.optim.RMSprop
    assert rmsprop.param_groups[0]["lr"] == 5e-4 and rmsprop.param_groups[0]["alpha"] == 0.9
    assert rmsprop.param_groups[0]["momentum"] == 0


def test_unknown_algorithm_is_a_clear_error():
    with pytest.raises(MRIInputError, match="'adam' or 'rmsprop', got 'sgd'"):
        SwitchableOptimizerConfig(algorithm="sgd").setup(_parameters())  # type: ignore[arg-type]


def test_discriminator_config_is_rmsprop_and_a_saved_run_config_loads_it():
    assert type(RMSpropOptimizerConfig(lr=1e-4).setup(_parameters())) is torch.optim.RMSprop
    shipped = mri_mednerf.config.optimizers["discriminator"]["optimizer"]
    saved = yaml.dump(shipped)  # as ns-train writes config.yml
    assert "mri_nerfstudio.nerf.optimizers.RMSpropOptimizerConfig" in saved
    assert yaml.load(saved, Loader=yaml.Loader) == shipped  # as ns-eval reads it


def test_ns_train_switches_the_generator_to_rmsprop_from_the_command_line():
    groups = mri_mednerf.config.optimizers
    for group in ("fields", "codes", "encoder"):
        assert groups[group]["optimizer"].algorithm == "adam"
    arguments = ["--optimizers.fields.optimizer.algorithm", "rmsprop", "--optimizers.fields.optimizer.lr", "5e-4"]
    config = tyro.cli(TrainerConfig, default=copy.deepcopy(mri_mednerf.config), args=arguments)
    optimizer = config.optimizers["fields"]["optimizer"]
    assert optimizer.algorithm == "rmsprop" and optimizer.lr == 5e-4
    assert type(optimizer.setup(_parameters())) is torch.optim.RMSprop
    assert config.optimizers["codes"]["optimizer"].algorithm == "adam"


def test_the_field_optimizer_needs_its_rate_filled_in_before_setup():
    with pytest.raises(MRIInputError, match="optimizers.fields.optimizer.lr is None"):
        FieldOptimizerConfig().setup(_parameters())
    rmsprop = FieldOptimizerConfig(lr=5e-4, algorithm="rmsprop").setup(_parameters())
    assert type(rmsprop) is torch.optim.RMSprop and rmsprop.param_groups[0]["lr"] == 5e-4
    saved = yaml.dump(FieldOptimizerConfig(eps=1e-15))
    assert yaml.load(saved, Loader=yaml.Loader) == FieldOptimizerConfig(eps=1e-15)  # None survives config.yml
