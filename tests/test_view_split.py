"""The orbit's train / val / test views (view_split.py): disjoint splits, mirror copies left out of val and test."""

from __future__ import annotations

import pytest

from mri_nerfstudio import views
from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.prepare import PrepareConfig
from mri_nerfstudio.view_split import count_line, orbit_view_split, restrict_training_views, split_views


def test_train_every_18_leaves_4_training_views_and_disjoint_val_and_test():
    split = split_views(views.make_orbit_cameras(), "volume", train_every=18)
    assert split.train == (0, 18, 36, 54)
    assert split.val == tuple(range(2, 72, 5)) and len(split.test) == 72 - 4 - 14
    assert not set(split.train) & set(split.val) and not set(split.val) & set(split.test)
    assert not set(split.train) & set(split.test)
    assert set(split.train) | set(split.val) | set(split.test) == set(range(72))


@pytest.mark.parametrize("view_mode", ["drr", "mip"])
def test_mirror_copies_of_training_views_are_left_out_of_test_in_drr_and_mip(view_mode):
    split = split_views(views.make_orbit_cameras(), view_mode)
    # The views from behind the training views, azimuth + 180 degrees: 36, 41, ..., 71 and 4, 9, ..., 34.
    mirrors = {(i + 36) % 72 for i in range(0, 72, 5)}
    assert set(split.test_mirror_copies) == mirrors and len(mirrors) == 15
    assert len(split.test) == 43 - 15 and not mirrors & set(split.test)
    assert split.val == tuple(range(2, 72, 5)) and split.val_mirror_copies == ()  # none of them is a copy
    line = count_line(split, "test", view_mode, subjects=1)
    assert line == f"test: 28 views (1 subject(s) x 28; 15 mirror copies of training views left out, {view_mode})"
    # Every training view's mirror is a training view when 36 is a multiple of train_every: none left out.
    assert split_views(views.make_orbit_cameras(), view_mode, train_every=18).test_mirror_copies == ()


def test_val_loses_its_mirror_copies_too():
    split = split_views(views.make_orbit_cameras(), "drr", train_every=7)
    # Views 27 and 57 (both 2 mod 5) are seen from behind training views 63 and 21; 7 and 42 are training views.
    assert split.val_mirror_copies == (27, 57) and not {27, 57} & set(split.val)
    assert len(split.val) == 14 - 2 - 2 and len(split.test_mirror_copies) == 11 - 2


@pytest.mark.parametrize(
    ("view_mode", "orbit"),
    [
        ("volume", {}),  # emission-absorption: the view from behind differs
        ("drr", {"elevation_deg": 20.0}),  # azimuth + 180 at the same elevation looks down too: other rays
        ("mip", {"projection": "perspective"}),  # rays from another centre
    ],
)
def test_views_that_are_not_mirror_copies_stay_in_test(view_mode, orbit):
    split = split_views(views.make_orbit_cameras(**orbit), view_mode)
    assert split.test_mirror_copies == () and len(split.test) == 43


def test_a_training_view_subset_trains_on_fewer_views_and_leaves_val_and_test_alone():
    split = orbit_view_split(PrepareConfig())
    subset = restrict_training_views(split, (10, 0, 35))
    assert subset.train == (0, 10, 35) and subset.val == split.val and subset.test == split.test
    for kept in ((), (0, 2), (0, 72)):  # none; a val view; off the orbit
        with pytest.raises(MRIInputError, match="train_view_subset must name views of the train split"):
            restrict_training_views(split, kept)
