"""nerfstudio's Trainer, with the field's learning rate following the model preset unless it is set.

The ``fields`` optimizer's ``lr`` is None in the shipped methods (:class:`~mri_nerfstudio.nerf.optimizers.
FieldOptimizerConfig`): a ``config.yml`` keeps None, so it trains at the rate of the preset it names on any
machine, and ``--pipeline.model.preset`` alone switches both. :class:`MRITrainer` fills the rate in where
nerfstudio builds the optimizers, and prints a hint when a run is set to the CPU on a machine with CUDA
(``mri-mednerf`` trains on the CPU wherever it runs; ``mri-mednerf-gpu`` is the method for CUDA). Everything else
is nerfstudio's ``Trainer``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch
from nerfstudio.engine.optimizers import Optimizers
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils.rich_utils import CONSOLE

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.nerf.model import MRIMedNeRFModelConfig
from mri_nerfstudio.nerf.presets import PRESETS


def preset_optimizers(config: TrainerConfig) -> dict[str, dict[str, Any]]:
    """``config.optimizers`` with the ``fields`` learning rate filled in from the model preset where it is None.

    A new dict (changed entries are copies); ``config`` is not modified.
    """
    optimizers = dict(config.optimizers)
    fields = optimizers.get("fields")
    if fields is None or fields["optimizer"].lr is not None:
        return optimizers
    model = config.pipeline.model
    if not isinstance(model, MRIMedNeRFModelConfig):
        raise MRIInputError(
            f"optimizers.fields.optimizer.lr is None (the model preset's), but the model is a "
            f"{type(model).__name__} without presets: set --optimizers.fields.optimizer.lr"
        )
    if model.preset not in PRESETS:
        raise MRIInputError(f"pipeline.model.preset must be one of {tuple(PRESETS)}, got {model.preset!r}")
    optimizer = dataclasses.replace(fields["optimizer"], lr=PRESETS[model.preset].learning_rate)
    optimizers["fields"] = {**fields, "optimizer": optimizer}
    return optimizers


CPU_RUN_ON_A_CUDA_MACHINE = (
    "This run trains on the CPU although CUDA is available: `ns-train mri-mednerf-gpu` trains MedNeRF's MLP on "
    "CUDA, `--machine.device-type cuda` this run's preset there."
)


class MRITrainer(Trainer):
    """nerfstudio's ``Trainer``; the optimizers are built from :func:`preset_optimizers`."""

    def setup(self, test_mode: Literal["test", "val", "inference"] = "val") -> None:
        if self.device == "cpu" and torch.cuda.is_available():
            CONSOLE.print(CPU_RUN_ON_A_CUDA_MACHINE)
        super().setup(test_mode)

    def setup_optimizers(self) -> Optimizers:
        return Optimizers(preset_optimizers(self.config), self.pipeline.get_param_groups())
