"""Tumour label conventions of BraTS seg files, and the one internal label set they all map to.

The challenges changed their label values over the years:

========================  =============================================================
``brats2021``             0 background, 1 necrotic core, 2 oedema, 4 enhancing (2017-2021)
``brats2023``             0 background, 1 necrotic core, 2 oedema, 3 enhancing (2023 on)
``brats2013``             0 background, 1 necrosis, 2 oedema, 3 non-enhancing, 4 enhancing
                          (2013-2016)
========================  =============================================================

Every loaded seg is mapped to :data:`INTERNAL_LABELS` (the 2013 set, a superset of the others), so
2021 and 2013 files load unchanged and a 2023 file's 3 becomes 4. No nerfstudio here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mri_nerfstudio.errors import MRIInputError

BACKGROUND, NECROTIC_CORE, OEDEMA, NON_ENHANCING, ENHANCING = 0, 1, 2, 3, 4
INTERNAL_LABELS: dict[int, str] = {
    BACKGROUND: "background",
    NECROTIC_CORE: "necrotic core",
    OEDEMA: "oedema",
    NON_ENHANCING: "non-enhancing tumour",
    ENHANCING: "enhancing tumour",
}
"""Internal label value -> tissue: what every :class:`~mri_nerfstudio.volume.Volume` seg holds."""


@dataclass(frozen=True)
class LabelConvention:
    """One challenge's label values and their internal meaning.

    Attributes:
        name: ``brats2021``, ``brats2023`` or ``brats2013`` (the ``--label-convention`` value).
        description: the values in words, for messages.
        to_internal: file label value -> internal label value (see :data:`INTERNAL_LABELS`).
    """

    name: str
    description: str
    to_internal: dict[int, int]

    @property
    def values(self) -> list[int]:
        """The label values a seg file of this convention may hold, sorted."""
        return sorted(self.to_internal)


CONVENTIONS: dict[str, LabelConvention] = {
    convention.name: convention
    for convention in (
        LabelConvention(
            "brats2021", "BraTS 2017-2021: 1 necrotic core, 2 oedema, 4 enhancing", {0: 0, 1: 1, 2: 2, 4: 4}
        ),
        LabelConvention(
            "brats2023", "BraTS 2023 on: 1 necrotic core, 2 oedema, 3 enhancing", {0: 0, 1: 1, 2: 2, 3: 4}
        ),
        LabelConvention(
            "brats2013",
            "BraTS 2013-2016: 1 necrosis, 2 oedema, 3 non-enhancing, 4 enhancing",
            {0: 0, 1: 1, 2: 2, 3: 3, 4: 4},
        ),
    )
}
LABEL_CONVENTION_CHOICES: tuple[str, ...] = ("auto", *CONVENTIONS)
"""Values of the ``label_convention`` argument: ``auto`` decides from the names, else the values."""

# Name patterns (searched case-insensitively in folder names and file stems). BraTS 2019 names hold a
# TCIA id such as "BraTS19_2013_10_1": "2013" there is not the challenge year, hence "brats" right before it.
_NAME_HINTS: dict[str, tuple[re.Pattern[str], ...]] = {
    "brats2021": (re.compile(r"brats[_-]?(2017|2018|2019|2020|2021)"), re.compile(r"brats(17|18|19|20|21)_")),
    "brats2023": (
        re.compile(r"brats[_-]?20(2[3-9])"),
        re.compile(r"brats-[a-z]{2,4}-\d"),  # BraTS-GLI-00000-000, BraTS-MEN-..., BraTS-PED-...
        re.compile(r"[-_](t1n|t1c|t2w|t2f)$"),  # the 2023 modality suffixes
    ),
    "brats2013": (re.compile(r"brats[_-]?(2013|2014|2015|2016)"),),
}


def check_convention_argument(label_convention: str) -> None:
    """Raise :class:`MRIInputError` unless ``label_convention`` is one of :data:`LABEL_CONVENTION_CHOICES`."""
    if label_convention not in LABEL_CONVENTION_CHOICES:
        raise MRIInputError(
            f"label_convention: expected one of {list(LABEL_CONVENTION_CHOICES)}, got {label_convention!r}"
        )


def convention_from_names(names: Iterable[str]) -> tuple[str | None, list[str]]:
    """The convention the folder / file ``names`` point to, if they agree on one.

    Args:
        names: folder names and file stems (image suffix removed), e.g. ``BraTS-GLI-00000-000-t1n``.

    Returns:
        The convention name (None when no name or conflicting names hint at one) and every
        convention some name hinted at, sorted.
    """
    hinted = sorted(
        {
            convention
            for name in names
            for convention, patterns in _NAME_HINTS.items()
            if any(pattern.search(name.lower()) for pattern in patterns)
        }
    )
    return (hinted[0] if len(hinted) == 1 else None), hinted


def convention_from_values(values: Iterable[float], path: Path) -> str:
    """The convention a seg's label ``values`` give away, or :class:`MRIInputError` when they do not.

    A subset of {0, 1, 2, 4} is ``brats2021`` (1 and 2 mean the same in every convention); 3 together
    with 4 is ``brats2013``. 3 without 4 is enhancing tumour (2023) or non-enhancing tumour (2013):
    ambiguous. Anything else is no convention's.
    """
    found = sorted({_plain(v) for v in values})
    if set(found) <= set(CONVENTIONS["brats2021"].values):
        return "brats2021"
    if set(found) <= set(CONVENTIONS["brats2013"].values):
        if ENHANCING in found:
            return "brats2013"
        raise MRIInputError(
            f"seg labels {found} are ambiguous: 3 is enhancing tumour in BraTS 2023 but non-enhancing tumour in "
            "BraTS 2013-2016, and no folder or file name says which; expected --label-convention brats2023 or "
            "brats2013",
            path,
        )
    expected = "; ".join(f"{c.name} {c.values}" for c in CONVENTIONS.values())
    raise MRIInputError(f"seg labels {found} fit no label convention; expected the values of one of: {expected}", path)


def choose_convention(
    label_convention: str, names: Iterable[str], values: Iterable[float], path: Path
) -> tuple[str, str, list[str]]:
    """The convention of one seg file: the argument, else (``auto``) the names, else the values.

    Args:
        label_convention: one of :data:`LABEL_CONVENTION_CHOICES`.
        names: the subject's folder name and file stems, searched for year / naming hints.
        values: the seg's label values.
        path: the seg file, for messages.

    Returns:
        The convention name, how it was decided (``argument``, ``naming`` or ``values``) and notes
        (one line each) worth telling the user.
    """
    check_convention_argument(label_convention)
    if label_convention != "auto":
        return label_convention, "argument", []
    from_names, hinted = convention_from_names(names)
    if from_names is not None:
        return from_names, "naming", []
    notes = []
    if hinted:
        notes.append(f"file and folder names hint at {' and '.join(hinted)}; label convention decided from the values")
    return convention_from_values(values, path), "values", notes


def to_internal_labels(seg: np.ndarray, convention: str, path: Path, decided_from: str = "argument") -> np.ndarray:
    """``seg`` ([X, Y, Z] label values as read, any dtype) mapped to int16 :data:`INTERNAL_LABELS`.

    Args:
        seg: the seg file's values.
        convention: a key of :data:`CONVENTIONS`.
        path: the seg file, for messages.
        decided_from: how the convention was chosen (``naming``, ``values``, ``argument``), for messages.

    Raises:
        MRIInputError: naming the file, the values outside the convention and its expected set.
    """
    table = CONVENTIONS[convention].to_internal
    values = np.unique(seg)
    outside = [_plain(v) for v in values if _plain(v) not in table]
    if outside:
        hint = ""
        if decided_from == "naming":
            hint = " (decided from the file names; set --label-convention if they mislead)"
        raise MRIInputError(
            f"seg labels {outside[:5]} are not {convention} labels{hint}; expected values in "
            f"{CONVENTIONS[convention].values}, found {[_plain(v) for v in values[:10]]}",
            path,
        )
    lookup = np.zeros(max(table) + 1, dtype=np.int16)
    for value, internal in table.items():
        lookup[value] = internal
    return lookup[np.asarray(seg).astype(np.intp)]


def _plain(value: float) -> int | float:
    """A label value as it reads best in messages and tables: int when integral."""
    return int(value) if float(value).is_integer() else float(value)
