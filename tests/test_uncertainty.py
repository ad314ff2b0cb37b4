"""The uncertainty map's terms (blend, ensemble), its member view subsets and its calibration against the error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.uncertainty import (
    BLEND_WEIGHT,
    blend_spread,
    ensemble_spread,
    member_view_subsets,
    predictive_spread,
    uncertainty_calibration,
)


def test_member_view_subsets_are_distinct_reproducible_draws_of_the_training_views():
    train = list(range(0, 72, 5))
    subsets = member_view_subsets(train, members=4, fraction=0.8, seed=1)
    assert len(subsets) == 4 and all(len(subset) == 12 for subset in subsets)
    assert all(set(subset) <= set(train) and list(subset) == sorted(subset) for subset in subsets)
    assert len(set(subsets)) > 1
    assert subsets == member_view_subsets(train, members=4, fraction=0.8, seed=1)
    assert member_view_subsets(train, members=1, fraction=1.0) == [tuple(train)]
    assert member_view_subsets([0], members=2, fraction=0.1) == [(0,), (0,)]  # at least one view each
    for members, fraction in ((0, 0.8), (2, 0.0), (2, 1.5)):
        with pytest.raises(MRIInputError):
            member_view_subsets(train, members, fraction)


def test_blend_spread_peaks_between_tissues_and_vanishes_at_black_and_white():
    estimate = np.array([-0.2, 0.0, 0.25, 0.5, 1.0, 1.3])
    expected = np.sqrt(BLEND_WEIGHT * np.array([0.0, 0.0, 0.1875, 0.25, 0.0, 0.0]))
    np.testing.assert_allclose(blend_spread(estimate), expected)
    torch.testing.assert_close(blend_spread(torch.from_numpy(estimate)), torch.from_numpy(expected))


def test_ensemble_spread_is_the_unbiased_std_and_adds_to_the_blend_as_variances():
    volumes = [np.zeros((2, 2, 2)), np.ones((2, 2, 2)), np.full((2, 2, 2), 2.0)]
    spread = ensemble_spread(volumes)
    assert spread.dtype == np.float32
    np.testing.assert_allclose(spread, 1.0)
    estimate = np.full((2, 2, 2), 0.5)
    np.testing.assert_allclose(predictive_spread(estimate), blend_spread(estimate), rtol=1e-6)
    np.testing.assert_allclose(predictive_spread(estimate, spread), np.sqrt(BLEND_WEIGHT * 0.25 + 1.0), rtol=1e-6)
    with pytest.raises(MRIInputError, match="two or more"):
        ensemble_spread(volumes[:1])
    with pytest.raises(MRIInputError, match="one shape"):
        ensemble_spread([np.zeros((2, 2, 2)), np.zeros((2, 2, 3))])


def test_calibration_ranks_errors_and_bins_them_by_uncertainty_decile():
    rng = np.random.default_rng(0)
    uncertainty = rng.uniform(0.01, 1.0, size=(20, 20, 20))
    error = np.abs(rng.normal(0.0, uncertainty))  # errors drawn with the stated spread
    mask = np.zeros(uncertainty.shape, dtype=bool)
    mask[2:18, 2:18, 2:18] = True
    calibration = uncertainty_calibration(uncertainty, error, mask)
    assert calibration["voxels"] == mask.sum() == sum(d["voxels"] for d in calibration["deciles"])
    assert 0.4 < calibration["spearman"] < 1.0
    errors = [d["abs_error"] for d in calibration["deciles"]]
    assert errors[-1] > 3 * errors[0]
    # Gaussian errors: the mean absolute error is sqrt(2 / pi) times the spread, decile by decile.
    for decile in calibration["deciles"]:
        assert decile["abs_error"] == pytest.approx(np.sqrt(2 / np.pi) * decile["uncertainty"], rel=0.15)
    noise = uncertainty_calibration(rng.uniform(size=uncertainty.shape), error, mask)
    assert abs(noise["spearman"]) < 0.1
    with pytest.raises(MRIInputError, match="at least 10 voxels"):
        uncertainty_calibration(uncertainty, error, np.zeros_like(mask))
