"""nerf/volume_export.py: the tv-grid estimator's refusals (the exports themselves: tests/cli/test_export.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.nerf.volume_export import fit_tv_grid


@pytest.mark.parametrize("mode", ["drr", "mip"])
def test_the_tv_grid_refuses_views_it_is_not_tied_to(mode):
    prepared = SimpleNamespace(config=SimpleNamespace(view_mode=mode), directory=Path("cache/subject"))
    expected = f"cache/subject: --estimator tv-grid fits volume views; the run's views are {mode} views"
    with pytest.raises(MRIInputError, match=expected):
        fit_tv_grid(prepared, [0, 5])


def test_the_tv_grid_needs_training_views():
    prepared = SimpleNamespace(config=SimpleNamespace(view_mode="volume"), directory=Path("cache/subject"))
    with pytest.raises(MRIInputError, match="needs the run's training views"):
        fit_tv_grid(prepared, [])
