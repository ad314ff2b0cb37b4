"""Per-subject feature grids: a code that varies in space, for fields that hold many brains.

A subject's code (a few numbers) can move the shared field between brains only as far as the tiny MLP
after the shared grids lets it: with 24 real brains the field settles on their average. Each subject
here also has its own coarse dense grid of features over ``[-1, 1]^3``; the model appends the features
at a point to the subject's shape code, so the field can place that subject's own anatomy. The grids
start at zero: a subject never trained on reads zeros, i.e. its code alone, and single-view
reconstruction fits a fresh one. With the slice encoder's grid head, the model adds the encoder's
prediction from the subject's scans (:func:`vertex_tables` of its feature volume) to the learned grid, so a
subject never trained on reads features of its own anatomy.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mri_nerfstudio.nerf.field import trilinear_interpolation


class SubjectFeatureGrids(nn.Module):
    """One dense feature grid per subject, read by trilinear interpolation.

    Args:
        num_subjects: S.
        resolution: R >= 2 vertices per axis, spanning ``[-1, 1]^3``.
        channels: C features per vertex.
    """

    def __init__(self, num_subjects: int, resolution: int, channels: int):
        super().__init__()
        if num_subjects < 1 or resolution < 2 or channels < 1:
            raise ValueError(
                f"subject grids need >= 1 subject, resolution >= 2 and >= 1 channel, got {num_subjects}, "
                f"{resolution}, {channels}"
            )
        self.resolution = resolution
        self.channels = channels
        self.tables = nn.Parameter(torch.zeros(num_subjects, resolution**3, channels))

    @property
    def num_subjects(self) -> int:
        return self.tables.shape[0]

    def forward(self, positions: Tensor, subjects: Tensor, predicted: Mapping[int, Tensor] | None = None) -> Tensor:
        """Features of each point in its subject's grid.

        Args:
            positions: [..., 3] world units (clamped onto the cube outside it).
            subjects: [...] int64 subject of each point, broadcastable to ``positions.shape[:-1]``.
            predicted: {subject: [R^3, C]} added to those subjects' learned grids (the encoder's prediction);
                it must hold every subject in ``subjects``.

        Returns:
            [..., C], in the dtype of the grids.
        """
        batch = positions.shape[:-1]
        flat_positions = positions.reshape(-1, 3).to(self.tables.dtype)
        flat_subjects = subjects.expand(batch).reshape(-1)
        features = flat_positions.new_empty(len(flat_positions), self.channels)
        for subject in torch.unique(flat_subjects).tolist():
            points = flat_subjects == subject
            table = self.tables[subject] if predicted is None else self.tables[subject] + predicted[subject]
            features[points] = trilinear_interpolation(table, self.resolution, flat_positions[points])
        return features.reshape(*batch, self.channels)

    def total_variation(self) -> Tensor:
        """Mean squared difference between neighbouring vertices of every subject's grid, summed over axes (scalar)."""
        r = self.resolution
        volume = self.tables.view(self.num_subjects, r, r, r, self.channels)
        return sum(volume.diff(dim=axis).square().mean() for axis in (1, 2, 3))


def vertex_tables(volumes: Tensor, resolution: int) -> Tensor:
    """Volumes on the encoder's working grid, resampled at a subject grid's vertices.

    Args:
        volumes: [B, C, G, G, G], axes (world z, x, y), cell centres spanning ``[-1, 1]^3``
            (:mod:`~mri_nerfstudio.encoder_input`).
        resolution: R >= 2, vertices per axis of the subject grids.

    Returns:
        [B, R^3, C] in the row order of :func:`~mri_nerfstudio.nerf.field.trilinear_interpolation`
        (trilinear; beyond the outermost cell centres, the border value).
    """
    axis = torch.linspace(-1.0, 1.0, resolution, device=volumes.device, dtype=volumes.dtype)
    x, y, z = torch.meshgrid(axis, axis, axis, indexing="ij")  # row (i R + j) R + k: x, then y, then z
    # grid_sample reads a [Z, X, Y] volume's coordinates as (y, x, z).
    grid = torch.stack([y, x, z], dim=-1).reshape(1, 1, 1, -1, 3).expand(len(volumes), -1, -1, -1, -1)
    sampled = F.grid_sample(volumes, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return sampled.reshape(volumes.shape[0], volumes.shape[1], -1).transpose(1, 2)
