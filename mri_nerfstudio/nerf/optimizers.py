"""Optimizer configs for nerfstudio's ``optimizers`` dict.

nerfstudio picks an optimizer by the config's class, which ``ns-train`` cannot change from the command
line; :class:`SwitchableOptimizerConfig` makes the algorithm a field instead, so that the generator can
train with Adam (our default) or RMSprop (MedNeRF / GRAF's) with
``--optimizers.fields.optimizer.algorithm rmsprop``. :class:`FieldOptimizerConfig` is the field's: its
learning rate follows the model preset unless it is set (:mod:`~mri_nerfstudio.nerf.trainer` fills it in).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, Optional, Type

import torch
import tyro
from nerfstudio.engine.optimizers import OptimizerConfig

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.nerf.presets import PRESETS


@dataclass
class RMSpropOptimizerConfig(OptimizerConfig):
    """RMSprop (MedNeRF / GRAF's optimizer for both networks), as a nerfstudio optimizer config."""

    _target: Type = torch.optim.RMSprop
    alpha: float = 0.99
    """Smoothing constant of the squared-gradient average."""


@dataclass
class SwitchableOptimizerConfig(OptimizerConfig):
    """Adam or RMSprop, chosen by ``algorithm`` (a command-line switch, unlike the config's class)."""

    algorithm: Literal["adam", "rmsprop"] = "adam"
    """``adam``: torch's Adam. ``rmsprop``: torch's RMSprop without momentum (MedNeRF's generator optimizer)."""
    alpha: float = 0.99
    """RMSprop only: smoothing constant of the squared-gradient average."""

    def setup(self, params) -> torch.optim.Optimizer:
        if self.algorithm == "rmsprop":
            return torch.optim.RMSprop(params, lr=self.lr, eps=self.eps, alpha=self.alpha)
        if self.algorithm == "adam":
            return torch.optim.Adam(params, lr=self.lr, eps=self.eps)
        raise MRIInputError(f"optimizer algorithm must be 'adam' or 'rmsprop', got {self.algorithm!r}")


PRESET_LEARNING_RATES = ", ".join(f"{name} {preset.learning_rate:g}" for name, preset in PRESETS.items())
"""The field learning rate of every model preset, for ``--help`` (e.g. ``mednerf 0.0005, cpu 0.02``)."""


@dataclass
class FieldOptimizerConfig(SwitchableOptimizerConfig):
    """The optimizer of the ``fields`` parameter group, whose learning rate follows the model preset unless set."""

    lr: Annotated[
        Optional[float],
        tyro.conf.arg(help=f"Learning rate; None: the model preset's ({PRESET_LEARNING_RATES})."),
    ] = None

    def setup(self, params) -> torch.optim.Optimizer:
        if self.lr is None:
            raise MRIInputError(
                "optimizers.fields.optimizer.lr is None (the model preset's): train with the method's Trainer "
                "(mri_nerfstudio.nerf.trainer.MRITrainer), which fills it in, or set a learning rate"
            )
        return super().setup(params)
