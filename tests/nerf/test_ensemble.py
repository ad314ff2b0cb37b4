"""Short fits of a run for its uncertainty map (nerf/ensemble.py): own seeds, own view subsets, eval mode."""

from __future__ import annotations

import pytest
import torch

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.nerf.ensemble import EnsembleSettings, member_steps, train_ensemble


def test_members_train_from_their_own_seeds_on_their_own_views(tiny_method_config, phantom_subject_dir, tmp_path):
    config = tiny_method_config(phantom_subject_dir, tmp_path / "cache")
    training_views = list(range(0, 72, 5))
    members = train_ensemble(config, training_views, EnsembleSettings(members=2, steps=5, view_fraction=0.6))
    assert [(m.seed, m.steps, len(m.views)) for m in members] == [(1, 5, 9), (2, 5, 9)]
    assert members[0].views != members[1].views and all(set(m.views) <= set(training_views) for m in members)
    assert all(not m.model.training and m.seconds > 0 for m in members)
    first, second = (dict(m.model.field.named_parameters()) for m in members)
    assert any(not torch.equal(first[name], second[name]) for name in first)  # different fits
    assert config.pipeline.datamanager.dataparser.train_view_subset == ()  # the run's config is left alone
    assert not list(tmp_path.glob("**/*.ckpt"))  # members write nothing


def test_members_default_to_half_the_runs_steps_and_refuse_empty_settings(tiny_method_config, phantom_subject_dir,
                                                                          tmp_path):
    config = tiny_method_config(phantom_subject_dir, tmp_path)
    config.max_num_iterations = 300
    assert member_steps(config, EnsembleSettings()) == 150
    assert member_steps(config, EnsembleSettings(steps=7)) == 7
    for settings in ({"members": 0}, {"steps": 0}, {"view_fraction": 0.0}, {"view_fraction": 1.2}):
        with pytest.raises(MRIInputError):
            EnsembleSettings(**settings)
