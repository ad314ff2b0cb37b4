"""scripts/bench_head_pose.py: its reference fit and its known tilts, on the MNI152 template pitched 20 degrees."""

from __future__ import annotations

import bench_head_pose
import numpy as np
import pytest


def test_both_fits_find_the_tilt_and_a_known_tilt_comes_back(tilted_template_folder, template_tilt_deg):
    (subject,) = bench_head_pose.folder_subjects(tilted_template_folder.parent)
    row = bench_head_pose.measure(subject, bench_head_pose.template_image())
    assert row["mask"]["pitch"] == pytest.approx(-template_tilt_deg, abs=2.0)
    assert row["brain_mi"]["pitch"] == pytest.approx(-template_tilt_deg, abs=2.0)
    assert row["agreement_deg"] < 2.0
    assert max(row["tilt_error_deg"].values()) < 3.0
    summary = bench_head_pose.summary([row])
    assert summary["subjects"] == 1 and summary["pitch_deg"]["min"] == summary["pitch_deg"]["max"]


def test_a_tilt_turns_the_grid_about_the_brains_centre(tilted_template_folder):
    (subject,) = bench_head_pose.folder_subjects(tilted_template_folder.parent)
    tilt = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    turned = bench_head_pose.tilted_affine(subject, tilt)
    centre = np.argwhere(subject.mask).mean(axis=0)
    np.testing.assert_allclose(turned[:3, :3] @ centre + turned[:3, 3],
                               subject.affine[:3, :3] @ centre + subject.affine[:3, 3], atol=1e-9)
    np.testing.assert_allclose(turned[:3, :3], tilt @ subject.affine[:3, :3], atol=1e-12)
