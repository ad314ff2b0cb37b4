"""BraTS label conventions: recognised from names or values, and mapped to one internal label set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.labels import (
    CONVENTIONS,
    ENHANCING,
    INTERNAL_LABELS,
    NON_ENHANCING,
    check_convention_argument,
    choose_convention,
    convention_from_names,
    convention_from_values,
    to_internal_labels,
)

SEG = Path("subject/seg.nii.gz")


def test_every_convention_maps_onto_the_internal_labels():
    assert INTERNAL_LABELS == {
        0: "background",
        1: "necrotic core",
        2: "oedema",
        3: "non-enhancing tumour",
        4: "enhancing tumour",
    }
    assert all(set(c.to_internal.values()) <= set(INTERNAL_LABELS) for c in CONVENTIONS.values())
    # Enhancing tumour is 4 inside, whatever the file says; only 2013-2016 know non-enhancing tumour.
    assert {name: c.to_internal[max(c.to_internal)] for name, c in CONVENTIONS.items()} == {
        "brats2021": ENHANCING,
        "brats2023": ENHANCING,
        "brats2013": ENHANCING,
    }
    assert [name for name, c in CONVENTIONS.items() if NON_ENHANCING in c.to_internal.values()] == ["brats2013"]


@pytest.mark.parametrize(
    "name, expected",
    [
        ("BraTS2021_00000", "brats2021"),
        ("BraTS20_Training_001_t1", "brats2021"),
        ("BraTS19_2013_10_1", "brats2021"),  # a 2019 subject whose TCIA id holds "2013"
        ("BraTS-GLI-00000-000", "brats2023"),
        ("BraTS-MEN-00004-000-seg", "brats2023"),
        ("patient7-t2f", "brats2023"),
        ("sub01_T1C", "brats2023"),
        ("BraTS2013_HG_0001", "brats2013"),
        ("BRATS_2015_pat0001", "brats2013"),
        ("brats_2013_pat0001_1", "brats2013"),
        ("t1c", None),  # a plain name says nothing about the challenge
        ("patient01", None),
    ],
)
def test_names_hint_at_a_convention(name, expected):
    assert convention_from_names([name])[0] == expected


def test_conflicting_names_hint_at_none():
    assert convention_from_names(["BraTS2021_00000", "BraTS2021_00000-t2f"]) == (None, ["brats2021", "brats2023"])


@pytest.mark.parametrize(
    "values, expected",
    [({0}, "brats2021"), ({0, 1, 2}, "brats2021"), ({0, 1, 2, 4}, "brats2021"), ({0, 1, 3, 4}, "brats2013")],
)
def test_values_decide_when_unambiguous(values, expected):
    assert convention_from_values(values, SEG) == expected


def test_label_3_without_4_is_ambiguous():
    with pytest.raises(MRIInputError, match=r"seg labels \[0, 1, 2, 3\] are ambiguous.*--label-convention") as error:
        convention_from_values([0.0, 1.0, 2.0, 3.0], SEG)
    assert str(SEG) in str(error.value)


@pytest.mark.parametrize("values", [[0, 1, 5], [0, 0.5, 2], [-1, 0]])
def test_values_of_no_convention_are_refused(values):
    with pytest.raises(MRIInputError, match="fit no label convention") as error:
        convention_from_values(values, SEG)
    assert str(values[1]) in str(error.value) and "brats2013 [0, 1, 2, 3, 4]" in str(error.value)


def test_mapping_to_internal_labels():
    seg = np.array([[[0.0, 1.0], [2.0, 3.0]]])

    assert to_internal_labels(seg, "brats2023", SEG).tolist() == [[[0, 1], [2, 4]]]
    assert to_internal_labels(seg, "brats2013", SEG).tolist() == [[[0, 1], [2, 3]]]
    assert to_internal_labels(seg, "brats2013", SEG).dtype == np.int16
    expected = r"seg labels \[3\] are not brats2021 labels; expected values in \[0, 1, 2, 4\]"
    with pytest.raises(MRIInputError, match=expected):
        to_internal_labels(seg, "brats2021", SEG)
    with pytest.raises(MRIInputError, match=r"seg labels \[0.5, 1.5\] are not brats2013 labels") as error:
        to_internal_labels(seg / 2, "brats2013", SEG)
    assert str(SEG) in str(error.value)


def test_the_argument_wins_over_names_and_names_over_values():
    assert choose_convention("brats2013", ["BraTS2021_00000"], [0, 1, 2, 4], SEG) == ("brats2013", "argument", [])
    assert choose_convention("auto", ["BraTS-GLI-00000-000"], [0, 1, 2, 4], SEG) == ("brats2023", "naming", [])
    assert choose_convention("auto", ["patient01"], [0, 1, 2, 4], SEG) == ("brats2021", "values", [])
    convention, decided_from, notes = choose_convention("auto", ["BraTS2021_1", "BraTS2013_1"], [0, 1, 3, 4], SEG)
    assert (convention, decided_from) == ("brats2013", "values") and "brats2013 and brats2021" in notes[0]
    with pytest.raises(MRIInputError, match=r"label_convention: expected one of \['auto', 'brats2021'"):
        check_convention_argument("brats2019")
