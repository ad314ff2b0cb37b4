"""The model presets: the field's network, its sizes and its learning rate (``--pipeline.model.preset``).

- ``mednerf``: GRAF / MedNeRF's 8 x 256 MLP (0.68 M parameters), 64 samples per ray, codes 128 + 128,
  density noise 1.0 annealed over 5,000 steps, field learning rate 5e-4 (MedNeRF's generator rate). Meant
  for a GPU: the ``mri-mednerf-gpu`` method.
- ``cpu``: dense feature grids + a tiny MLP (:class:`~mri_nerfstudio.nerf.field.FeatureGridBackbone`),
  48 samples per ray, codes 8 + 8, field learning rate 2e-2 (grids want a larger step): a 128 px brain in
  minutes on two CPU cores. The ``mri-mednerf`` method.

The field's learning rate follows the preset unless ``--optimizers.fields.optimizer.lr`` is set
(:mod:`~mri_nerfstudio.nerf.trainer`), so changing the preset is one flag.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PresetName = Literal["mednerf", "cpu"]


@dataclass(frozen=True)
class FieldPreset:
    """The settings a preset fixes. Each but ``learning_rate`` can be overridden by the model config field of
    the same name; ``learning_rate`` by ``--optimizers.fields.optimizer.lr``."""

    backbone: Literal["mlp", "grid"]
    num_samples: int
    """Uniform samples per ray."""
    num_importance_samples: int
    """Extra samples per ray drawn from the first pass's weights (0: none)."""
    shape_code_dim: int
    appearance_code_dim: int
    density_noise_std: float
    """Std of the noise on the density logits at step 0."""
    density_noise_steps: int
    """Steps over which the density noise decays linearly to 0."""
    learning_rate: float
    """Learning rate of the ``fields`` parameter group (the field and the subject grids), Adam or RMSprop."""

    def summary(self) -> str:
        """One line for ``--help``: network, samples per ray, code sizes, learning rate."""
        network = "GRAF / MedNeRF's MLP" if self.backbone == "mlp" else "feature grids + a tiny MLP"
        return (
            f"{network}, {self.num_samples} samples per ray, codes {self.shape_code_dim} + "
            f"{self.appearance_code_dim}, field learning rate {self.learning_rate:g}"
        )


PRESETS: dict[str, FieldPreset] = {
    "mednerf": FieldPreset(
        backbone="mlp",
        num_samples=64,
        num_importance_samples=0,
        shape_code_dim=128,
        appearance_code_dim=128,
        density_noise_std=1.0,
        density_noise_steps=5000,
        learning_rate=5e-4,
    ),
    "cpu": FieldPreset(
        backbone="grid",
        num_samples=48,
        num_importance_samples=0,
        shape_code_dim=8,
        appearance_code_dim=8,
        density_noise_std=0.0,
        density_noise_steps=0,
        learning_rate=2e-2,
    ),
}

PRESETS_HELP = "; ".join(f"{name}: {preset.summary()}" for name, preset in PRESETS.items())
"""Every preset with its network, sizes and learning rate, on one line (the ``--help`` of the flags it sets)."""
