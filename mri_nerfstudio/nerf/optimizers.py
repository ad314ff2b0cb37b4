"""Optimizer configs for nerfstudio's ``optimizers`` dict.

nerfstudio picks an optimizer by the config's class, which ``ns-train`` cannot change from the command
line; :class:`SwitchableOptimizerConfig` makes the algorithm a field instead, so that the generator can
train with Adam (our default) or RMSprop (MedNeRF / GRAF's) with
``--optimizers.fields.optimizer.algorithm rmsprop``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Type

import torch
from nerfstudio.engine.optimizers import OptimizerConfig

from mri_nerfstudio.errors import MRIInputError


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
