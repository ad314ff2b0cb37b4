"""to_plain: numpy, paths, tuples and mappings as plain JSON types; non-finite floats as null."""

from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pytest

from mri_nerfstudio.json_values import to_plain


def test_numpy_paths_tuples_and_mappings_become_json_types():
    value = {
        1: (np.int16(3), np.float32(0.5), np.bool_(True)),
        "array": np.arange(4).reshape(2, 2),
        "path": Path("a/b.nii.gz"),
        "mapping": MappingProxyType({"t1": [np.float64(1.5)]}),
        "none": None,
    }
    plain = to_plain(value)

    assert plain == {"1": [3, 0.5, True], "array": [[0, 1], [2, 3]], "path": "a/b.nii.gz",
                     "mapping": {"t1": [1.5]}, "none": None}  # fmt: skip
    assert type(plain["1"][0]) is int and type(plain["1"][2]) is bool
    assert json.loads(json.dumps(plain, allow_nan=False)) == plain


def test_non_finite_floats_become_null_and_other_types_are_refused():
    assert to_plain([float("nan"), np.float32("inf"), -1.0]) == [None, None, -1.0]
    with pytest.raises(TypeError, match="cannot store set as JSON"):
        to_plain({"bad": {1, 2}})
