"""Is the brain cut off by a field of view: the sides from the mask and the affine, and modalities at 0."""

from __future__ import annotations

import numpy as np
import pytest

from mri_nerfstudio.preprocess.field_of_view import (
    CUT_AREA_CM2,
    brain_cut_by_field_of_view,
    brain_outside_modalities,
    describe_cuts,
)

SPACING_MM = 2.0


def _ball(shape=(40, 48, 40), radius=14) -> np.ndarray:
    """[X, Y, Z] bool: a ball of ``radius`` voxels in the middle of the grid."""
    grid = np.stack(np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in shape], indexing="ij"))
    return np.linalg.norm(grid, axis=0) <= radius


def _ras_affine(spacing=SPACING_MM) -> np.ndarray:
    return np.diag([spacing, spacing, spacing, 1.0])


def _edge_area_cm2(mask: np.ndarray, axis: int, end: int, spacing=SPACING_MM) -> float:
    return np.count_nonzero(np.take(mask, end, axis=axis)) * spacing**2 / 100


def test_a_brain_inside_the_field_of_view_is_not_cut():
    assert brain_cut_by_field_of_view(_ball(), _ras_affine()) == {}


def test_a_field_of_view_that_stops_below_the_vertex_cuts_the_superior_side():
    cut = _ball()[:, :, :26]  # the top of the ball is outside the grid

    cuts = brain_cut_by_field_of_view(cut, _ras_affine())

    assert list(cuts) == ["superior"]
    assert cuts["superior"] == pytest.approx(_edge_area_cm2(cut, 2, -1))


def test_sides_are_named_from_the_affine_not_the_array():
    cut = _ball()[:, :, :26]
    flipped = cut[::-1, :, ::-1]  # LAI: array axis 0 runs to the left, axis 2 downwards
    affine = np.diag([-SPACING_MM, SPACING_MM, -SPACING_MM, 1.0])
    assert list(brain_cut_by_field_of_view(flipped, affine)) == ["superior"]

    angle = np.deg2rad(20)  # an oblique acquisition, tilted about the left-right axis
    tilt = np.eye(4)
    tilt[1:3, 1:3] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    assert list(brain_cut_by_field_of_view(cut, tilt @ _ras_affine())) == ["superior"]

    lateral = _ball()[12:, :, :]  # the left of the ball (low x: RAS runs to the right) is outside the grid
    assert list(brain_cut_by_field_of_view(lateral, _ras_affine())) == ["left"]


def test_a_mask_that_stops_a_voxel_or_two_short_of_a_cut_is_cut():
    mask = _ball()[:, :, :26]
    mask[:, :, 24:] = False  # a mask that stops 2 slices (4 mm) short of the edge
    assert list(brain_cut_by_field_of_view(mask, _ras_affine())) == ["superior"]


def test_an_abrupt_end_far_from_the_edge_is_not_a_cut():
    mask = _ball()[:, :, 5:]  # the ball's bottom now touches the grid's
    mask[:, :, :5] = False  # a skull stripping's flat cut below the cerebellum, 10 mm above the grid's bottom
    assert _edge_area_cm2(mask, 2, 5) >= CUT_AREA_CM2
    assert brain_cut_by_field_of_view(mask, _ras_affine()) == {}


def test_a_thin_stem_reaching_the_bottom_is_not_a_cut():
    mask = _ball()
    mask[19:22, 22:25, :20] = True  # a 6 x 6 mm column down to the inferior edge: 0.36 cm2
    assert _edge_area_cm2(mask, 2, 0) < CUT_AREA_CM2
    assert brain_cut_by_field_of_view(mask, _ras_affine()) == {}


def test_several_sides_are_reported_in_the_grids_axis_order():
    cut = _ball()[12:, :, :26]
    assert list(brain_cut_by_field_of_view(cut, _ras_affine())) == ["left", "superior"]


def test_cuts_in_words():
    assert describe_cuts({"superior": 23.4}) == "superior side (23 cm2 of brain on its last slice)"
    assert describe_cuts({"right": 7.0, "superior": 23.4}) == (
        "right and superior sides (7 and 23 cm2 of brain on their last slices)"
    )


def test_a_modality_whose_field_of_view_leaves_part_of_the_brain_at_0_is_reported():
    brain = _ball()
    t1 = np.where(brain, 0.8, 0.0)
    flair = np.where(brain, 0.6, 0.2)  # a bright background, as FLAIR's can be
    flair[:, :, 26:] = 0.0  # beyond its field of view, resampled onto the T1's grid
    expected_share = brain[:, :, 26:].sum() / brain.sum()

    shares = brain_outside_modalities({"t1": t1, "flair": flair}, brain)

    assert list(shares) == ["flair"]
    assert shares["flair"] == pytest.approx(expected_share)
    assert brain_outside_modalities({"t1": t1, "flair": flair}, brain, min_share=0.9) == {}
