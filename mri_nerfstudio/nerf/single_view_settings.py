"""How a single-view reconstruction is fitted (:mod:`mri_nerfstudio.nerf.single_view`).

Kept apart from the fit itself, with no nerfstudio or torch import, so that ``mri-reconstruct`` takes these
settings as its own command-line flags and still checks its arguments before loading nerfstudio.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SingleViewSettings:
    """How the new subject's code (and optionally the field) is fitted to its view(s)."""

    steps: int = 300
    """Optimisation steps."""
    rays_per_step: int = 1024
    """Random pixels of the view per step (all of them when the view has fewer)."""
    code_learning_rate: float = 5e-3
    """Adam learning rate of the subject code."""
    prior_weight: float = 1e-3
    """Weight of the Gaussian prior on the code, fitted to the training subjects' codes (0: none)."""
    finetune_field: bool = False
    """Also fine-tune the field's weights (as MedNeRF fine-tunes its generator) and, for a model with subject
    grids (several training subjects), the new subject's own feature grid from its start (the encoder's grid
    from its scans, else the mean of the subjects' grids)."""
    field_learning_rate: float = 1e-3
    """Adam learning rate of the field when fine-tuned."""
    subject_grid_learning_rate: float = 2e-2
    """Adam learning rate of the new subject's own feature grid, fitted with the field (models with subject grids)."""
    seed: int = 0
    """Seed of the random pixels drawn at each step."""
