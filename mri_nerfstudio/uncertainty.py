"""Per-voxel uncertainty of a reconstruction, and how well it ranks the error.

A reconstruction from 15 views of 64 px is blurred: a voxel's estimate is a blend of the tissues within
a few millimetres (README, "What 15 views determine"). Two terms make the map, as standard deviations
in the volume's intensity units ([0, 1]):

- **blend** (:func:`blend_spread`): the estimate ``e`` is close to the mean of the true intensities
  around the voxel, which lie in [0, 1]; their variance is at most ``e (1 - e)`` (the Bhatia-Davis
  bound, reached by a blend of black and white). Where the estimate lies between dark and bright, the
  voxel is a blend the views do not resolve and its true value may be either side; where it is dark or
  bright, it cannot be far off. The map takes ``BLEND_WEIGHT`` of that bound. It costs nothing and is
  known wherever the field is (the viewer's ``slice_uncertainty``).
- **ensemble** (:func:`ensemble_spread`): fits that differ in their seed and in which training views they
  see (:func:`member_view_subsets`) land on different volumes where the views leave it free. It costs a
  few short trainings (``mri-export --uncertainty-members``).

:func:`predictive_spread` adds the two variances. :func:`uncertainty_calibration` scores a map against a
known truth: the Spearman rank correlation of uncertainty and absolute error, and the error per
uncertainty decile.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.stats import spearmanr

from mri_nerfstudio.errors import MRIInputError

DECILES = 10
BLEND_WEIGHT = 0.1
"""Share of the bound ``e (1 - e)`` in the map: its scale (a rank correlation does not depend on it). Fitted
on a validation subject (IXI132, ``scripts/bench_uncertainty.py``: 0.11) so that the mean absolute error
of each uncertainty decile is a Gaussian's ``sqrt(2 / pi) * sigma``."""


def member_view_subsets(
    train_views: Sequence[int], members: int, fraction: float, seed: int = 0
) -> list[tuple[int, ...]]:
    """Each ensemble member's training views: ``round(fraction * len(train_views))`` of them (at least one),
    drawn without replacement, a different draw per member (reproducible from ``seed``), ascending."""
    if members < 1:
        raise MRIInputError(f"an ensemble needs at least one member, got {members}")
    if not 0.0 < fraction <= 1.0:
        raise MRIInputError(f"the members' view fraction must be in (0, 1], got {fraction}")
    views = np.asarray(sorted(train_views))
    count = max(1, round(fraction * len(views)))
    generator = np.random.default_rng(seed)
    return [tuple(int(v) for v in np.sort(generator.choice(views, count, replace=False))) for _ in range(members)]


def ensemble_spread(volumes: Sequence[np.ndarray]) -> np.ndarray:
    """[X, Y, Z] float32: the per-voxel standard deviation (unbiased) of two or more volumes of one shape."""
    if len(volumes) < 2 or len({np.shape(volume) for volume in volumes}) != 1:
        raise MRIInputError(f"the spread needs two or more volumes of one shape, got {[np.shape(v) for v in volumes]}")
    return np.std(np.stack(volumes).astype(np.float64), axis=0, ddof=1).astype(np.float32)


def blend_spread(estimate, weight: float = BLEND_WEIGHT):
    """``sqrt(weight * e * (1 - e))`` with ``e`` the estimate clipped to [0, 1]: a numpy array or torch tensor
    of any shape in, the same kind and shape out (0 where the estimate is 0 or 1)."""
    blend = estimate.clip(0.0, 1.0)
    return (weight * blend * (1.0 - blend)) ** 0.5


def predictive_spread(estimate: np.ndarray, ensemble_std: np.ndarray | None = None) -> np.ndarray:
    """[X, Y, Z] float32: ``sqrt(blend ** 2 + ensemble_std ** 2)`` (:func:`blend_spread` of ``estimate``, plus
    the ensemble's spread when there is one)."""
    variance = blend_spread(np.asarray(estimate, dtype=np.float64)) ** 2
    if ensemble_std is not None:
        variance = variance + np.asarray(ensemble_std, dtype=np.float64) ** 2
    return np.sqrt(variance).astype(np.float32)


def uncertainty_calibration(uncertainty: np.ndarray, error: np.ndarray, mask: np.ndarray) -> dict:
    """How well ``uncertainty`` ranks ``error`` (absolute errors, same shape) inside ``mask``.

    Returns:
        ``spearman``: rank correlation of uncertainty and error over the masked voxels; ``deciles``: for
        each tenth of those voxels by uncertainty (lowest first), its mean uncertainty, mean absolute
        error and voxel count; ``voxels``. Ties in the uncertainty are broken by voxel order.
    """
    inside = np.asarray(mask, dtype=bool)
    values, errors = np.asarray(uncertainty, dtype=np.float64)[inside], np.asarray(error, dtype=np.float64)[inside]
    if len(values) < DECILES:
        raise MRIInputError(f"the calibration needs at least {DECILES} voxels in the mask, got {len(values)}")
    order = np.argsort(values, kind="stable")
    deciles = [
        {"uncertainty": float(values[part].mean()), "abs_error": float(errors[part].mean()), "voxels": len(part)}
        for part in np.array_split(order, DECILES)
    ]
    return {"spearman": float(spearmanr(values, errors).statistic), "deciles": deciles, "voxels": int(len(values))}
