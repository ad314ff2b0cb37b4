"""The ``mri-mednerf`` method as nerfstudio sees it (entry point ``nerfstudio.method_configs``).

The model preset follows the machine: ``cpu`` (feature grids, minutes on two cores) when no CUDA
device is visible, ``mednerf`` (GRAF / MedNeRF's MLP) otherwise. To train MedNeRF's network on a CPU
anyway, or the grid on a GPU, pick the preset and its learning rate together::

    ns-train mri-mednerf --pipeline.model.preset mednerf --optimizers.fields.optimizer.lr 5e-4 ...
    ns-train mri-mednerf --pipeline.model.preset cpu --optimizers.fields.optimizer.lr 2e-2 ...
"""

from __future__ import annotations

import torch
from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.plugins.types import MethodSpecification

from mri_nerfstudio.nerf.datamanager import MRIDataManagerConfig
from mri_nerfstudio.nerf.dataparser import MRIDataParserConfig
from mri_nerfstudio.nerf.model import MRIMedNeRFModelConfig
from mri_nerfstudio.nerf.optimizers import RMSpropOptimizerConfig, SwitchableOptimizerConfig
from mri_nerfstudio.nerf.pipeline import MRIPipelineConfig

CUDA = torch.cuda.is_available()
PRESET = "mednerf" if CUDA else "cpu"
# Adam learning rate of the field per preset: MedNeRF's generator rate for the MLP; grids want a larger step.
FIELD_LEARNING_RATE = {"mednerf": 5e-4, "cpu": 2e-2}

mri_mednerf = MethodSpecification(
    config=TrainerConfig(
        method_name="mri-mednerf",
        steps_per_eval_batch=500,
        steps_per_save=2000,
        max_num_iterations=30_000 if CUDA else 1_000,
        # fp16 autocast on CUDA (the field's outputs are cast back to float32 before rendering); none on CPU.
        mixed_precision=CUDA,
        machine=MachineConfig(device_type="cuda" if CUDA else "cpu"),
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
            model=MRIMedNeRFModelConfig(preset=PRESET, subject_grid_resolution=32),
        ),
        optimizers={
            # Adam by default; MedNeRF's generator optimizer with --optimizers.fields.optimizer.algorithm rmsprop.
            "fields": {
                "optimizer": SwitchableOptimizerConfig(lr=FIELD_LEARNING_RATE[PRESET], eps=1e-15),
                "scheduler": None,
            },
            "codes": {"optimizer": SwitchableOptimizerConfig(lr=1e-3, eps=1e-15), "scheduler": None},
            # Used only with the adversarial loss (--pipeline.adversarial.lambda-adv > 0); MedNeRF's D optimizer.
            "discriminator": {"optimizer": RMSpropOptimizerConfig(lr=1e-4), "scheduler": None},
            # Used only when the slice encoder is on (two or more subjects, or --pipeline.model.encoder.enabled on).
            "encoder": {"optimizer": SwitchableOptimizerConfig(lr=1e-3, eps=1e-15), "scheduler": None},
        },
        vis="viewer",
    ),
    description="MedNeRF-style radiance field of brain MRI",
)
