import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from mri_nerfstudio import head_pose
from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.head_pose import estimate_head_pose
from mri_nerfstudio.preprocess.register import rotation_angle_deg
from mri_nerfstudio.volume import load_default_subject


@pytest.fixture(scope="module")
def template_mask():
    """The 2 mm MNI152 brain mask and its affine (the pose's reference itself: an untilted brain)."""
    volume = load_default_subject(resolution_mm=2)
    return volume.brain_mask(), volume.affine


def tilted(affine: np.ndarray, rotation: np.ndarray, shift_mm=(0.0, 0.0, 0.0)) -> np.ndarray:
    """``affine`` with its grid turned by ``rotation`` about the scanner origin, then shifted."""
    transform = np.eye(4)
    transform[:3, :3] = rotation
    transform[:3, 3] = shift_mm
    return transform @ affine


def test_a_known_tilt_is_recovered_whatever_the_shift(template_mask):
    mask, affine = template_mask
    tilt = Rotation.from_euler("xyz", [18.0, -6.0, 4.0], degrees=True).as_matrix()
    pose = estimate_head_pose(mask, tilted(affine, tilt, shift_mm=(12.0, -30.0, 25.0)))
    # the pose undoes the tilt: the brain's axes are turned back onto the template's
    assert rotation_angle_deg(pose.rotation @ tilt) < 2.0
    assert pose.angles_deg["pitch"] == pytest.approx(-18.0, abs=2.0)
    assert np.linalg.det(pose.rotation) == pytest.approx(1.0)


def test_an_untilted_brain_has_no_rotation_and_voxel_order_does_not_matter(template_mask):
    mask, affine = template_mask
    assert estimate_head_pose(mask, affine).angle_deg < 0.5
    # the same brain stored left-to-right (an LAS grid): same scanner pose, so the same rotation
    flipped = affine.copy()
    flipped[:, 0] = -affine[:, 0]
    flipped[:3, 3] = affine[:3, 3] + affine[:3, 0] * (mask.shape[0] - 1)
    assert estimate_head_pose(mask[::-1], flipped).angle_deg < 0.5


def test_the_record_says_what_was_fitted(template_mask):
    mask, affine = template_mask
    tilt = Rotation.from_euler("x", 10.0, degrees=True).as_matrix()
    record = estimate_head_pose(mask, tilted(affine, tilt)).record()
    assert record["step"] == "align_head"
    assert set(record["estimates"]) >= {"rotation_ras", "angle_deg", "pitch_deg", "roll_deg", "yaw_deg", "mismatch"}
    assert record["estimates"]["angle_deg"] == pytest.approx(10.0, abs=2.0)


def test_an_empty_mask_or_an_implausible_fit_is_a_clear_error(template_mask, monkeypatch):
    mask, affine = template_mask
    with pytest.raises(MRIInputError, match="empty"):
        estimate_head_pose(np.zeros_like(mask), affine)
    monkeypatch.setattr(head_pose, "MAX_ROTATION_DEG", 5.0)
    tilt = Rotation.from_euler("x", 20.0, degrees=True).as_matrix()
    with pytest.raises(MRIInputError, match="cut off by the field of view.*align-head off"):
        estimate_head_pose(mask, tilted(affine, tilt))
