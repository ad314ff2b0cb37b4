"""The methods as nerfstudio sees them (entry points ``nerfstudio.method_configs``), one per model preset.

Named variants, as nerfstudio's ``nerfacto`` / ``nerfacto-big``: each fixes its preset, device and steps,
so a ``config.yml`` trains the same way on any machine and nothing is probed at import.

- ``mri-mednerf``: the ``cpu`` preset (feature grids), 1,000 steps on the CPU: minutes on two cores.
- ``mri-mednerf-gpu``: the ``mednerf`` preset (GRAF / MedNeRF's MLP), 30,000 steps on CUDA with mixed
  precision.

The field's learning rate follows the preset (:mod:`~mri_nerfstudio.nerf.presets`) unless
``--optimizers.fields.optimizer.lr`` is set, so any setting is one flag::

    ns-train mri-mednerf --pipeline.model.preset mednerf ...       # MedNeRF's MLP on the CPU, at its rate
    ns-train mri-mednerf-gpu --pipeline.model.preset cpu ...       # the grids on CUDA
    ns-train mri-mednerf --machine.device-type cuda ...            # the grids on CUDA, without mixed precision
"""

from __future__ import annotations

from typing import Literal

from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.plugins.types import MethodSpecification

from mri_nerfstudio.nerf.datamanager import MRIDataManagerConfig
from mri_nerfstudio.nerf.dataparser import MRIDataParserConfig
from mri_nerfstudio.nerf.model import MRIMedNeRFModelConfig
from mri_nerfstudio.nerf.optimizers import FieldOptimizerConfig, RMSpropOptimizerConfig, SwitchableOptimizerConfig
from mri_nerfstudio.nerf.pipeline import MRIPipelineConfig
from mri_nerfstudio.nerf.presets import PresetName
from mri_nerfstudio.nerf.trainer import MRITrainer


def trainer_config(
    method_name: str, preset: PresetName, device_type: Literal["cpu", "cuda"], max_num_iterations: int
) -> TrainerConfig:
    """The method ``method_name``: ``preset`` trained ``max_num_iterations`` steps on ``device_type`` (mixed
    precision on CUDA: fp16 autocast, the field's outputs cast back to float32 before rendering)."""
    return TrainerConfig(
        _target=MRITrainer,
        method_name=method_name,
        steps_per_eval_batch=500,
        steps_per_save=2000,
        max_num_iterations=max_num_iterations,
        mixed_precision=device_type == "cuda",
        machine=MachineConfig(device_type=device_type),
        viewer=ViewerConfig(websocket_host="127.0.0.1"),
        pipeline=MRIPipelineConfig(
            datamanager=MRIDataManagerConfig(
                dataparser=MRIDataParserConfig(),
                # MedNeRF's 32 x 32 scaled patches (the adversarial loss needs them). With pure MSE they
                # match random rays on held-out views (CPU preset, 1000 steps: 38.0 vs 37.9 dB); 8 x 8 at
                # scales near 1 samples a coarse lattice and loses 3 dB.
                patch_size=32,
                train_num_rays_per_batch=1024,
                eval_num_rays_per_batch=1024,
            ),
            # With two or more subjects each has its own 32^3 feature grid: 24 real brains in one field gain 6.8 dB
            # on their val views after 500 steps (scripts/bench_subjects.py); one subject is unchanged.
            model=MRIMedNeRFModelConfig(preset=preset, subject_grid_resolution=32),
        ),
        optimizers={
            # Adam by default; MedNeRF's generator optimizer with --optimizers.fields.optimizer.algorithm rmsprop.
            # The learning rate is the preset's unless set (MRITrainer fills it in).
            "fields": {"optimizer": FieldOptimizerConfig(eps=1e-15), "scheduler": None},
            "codes": {"optimizer": SwitchableOptimizerConfig(lr=1e-3, eps=1e-15), "scheduler": None},
            # Used only with the adversarial loss (--pipeline.adversarial.lambda-adv > 0); MedNeRF's D optimizer.
            "discriminator": {"optimizer": RMSpropOptimizerConfig(lr=1e-4), "scheduler": None},
            # Used only when the slice encoder is on (two or more subjects, or --pipeline.model.encoder.enabled on).
            "encoder": {"optimizer": SwitchableOptimizerConfig(lr=1e-3, eps=1e-15), "scheduler": None},
        },
        vis="viewer",
    )


mri_mednerf = MethodSpecification(
    config=trainer_config("mri-mednerf", preset="cpu", device_type="cpu", max_num_iterations=1_000),
    description="MedNeRF-style radiance field of brain MRI: feature grids (cpu preset), 1,000 steps on the CPU",
)

mri_mednerf_gpu = MethodSpecification(
    config=trainer_config("mri-mednerf-gpu", preset="mednerf", device_type="cuda", max_num_iterations=30_000),
    description="MedNeRF-style radiance field of brain MRI: MedNeRF's MLP (mednerf preset), 30,000 steps on CUDA",
)
