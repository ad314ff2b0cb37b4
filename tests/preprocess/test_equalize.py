"""Percentile normalisation and histogram equalisation inside the brain mask."""

from __future__ import annotations

import numpy as np
import pytest
from nilearn.datasets import load_mni152_brain_mask, load_mni152_template

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.preprocess.equalize import EqualizeHistogram, NormalizePercentiles
from mri_nerfstudio.volume import Volume


@pytest.fixture(scope="module")
def brain_volume() -> Volume:
    """MNI152 T1 at 2 mm with its brain mask and an inverted second contrast (raw, not in [0, 1])."""
    template = load_mni152_template(resolution=2)
    t1 = np.asarray(template.dataobj, dtype=np.float32) * 800.0
    mask = np.asarray(load_mni152_brain_mask(resolution=2).dataobj) > 0
    t2 = np.where(mask, 900.0 - t1, 0.0).astype(np.float32)
    return Volume("mni", {"t1": t1, "t2": t2}, template.affine, template.affine, t1.shape, mask=mask)


def test_equalization_matches_the_hand_computed_transfer_function() -> None:
    # 9 brain voxels; x * 255 rounds to levels 0, 51, 51 (0.199 * 255 = 50.7), 102, 153, 153, 153, 204, 255.
    brain = np.array([0.0, 0.2, 0.199, 0.4, 0.6, 0.6, 0.6, 0.8, 1.0], dtype=np.float32)
    background = np.array([0.7, 0.0, 0.3], dtype=np.float32)  # outside the mask, whatever their value
    image = np.concatenate([brain, background]).reshape(3, 4, 1)
    mask = np.concatenate([np.ones(9, bool), np.zeros(3, bool)]).reshape(3, 4, 1)
    volume = Volume("hand", {"t1": image}, np.eye(4), np.eye(4), image.shape, mask=mask)

    result, record = EqualizeHistogram(levels=256)(volume)

    # C(r) = fraction of the 9 brain voxels with level <= r: 1/9, 3/9, 4/9, 7/9, 8/9, 9/9 for levels
    # 0, 51, 102, 153, 204, 255; T = round(255 * C) = 28.33, 85, 113.33, 198.33, 226.67, 255.
    expected_levels = np.array([28, 85, 85, 113, 198, 198, 198, 227, 255])
    output = result.images["t1"].reshape(-1)
    np.testing.assert_array_equal(output[:9], (expected_levels / 255).astype(np.float32))
    np.testing.assert_array_equal(output[9:], 0.0)
    assert result.images["t1"].dtype == np.float32
    transfer = record["estimates"]["t1"]["transfer"]
    assert [transfer[r] for r in (0, 51, 102, 153, 204, 255)] == [28, 85, 113, 198, 227, 255]


def test_normalization_maps_brain_percentiles_to_0_and_1(brain_volume) -> None:
    result, record = NormalizePercentiles(low=0.5, high=99.5)(brain_volume)
    mask = brain_volume.mask
    for modality in ("t1", "t2"):
        image = result.images[modality]
        low, high = np.percentile(brain_volume.images[modality][mask], [0.5, 99.5])
        assert record["estimates"][modality] == {"low_value": pytest.approx(low), "high_value": pytest.approx(high)}
        assert image.dtype == np.float32 and image.min() == 0.0 and image.max() == 1.0
        np.testing.assert_array_equal(image[~mask], 0.0)
        # 0.5% of brain voxels lie at or below the low percentile (ties allow a little more).
        assert 0.004 < np.mean(image[mask] == 0.0) < 0.01
    np.testing.assert_array_equal(result.mask, mask)


def test_equalized_brain_histogram_is_near_uniform(brain_volume) -> None:
    normalized, _ = NormalizePercentiles()(brain_volume)
    before = {m: a.copy() for m, a in normalized.images.items()}

    result, _ = EqualizeHistogram()(normalized)

    mask = brain_volume.mask
    for modality, image in result.images.items():
        counts, _ = np.histogram(image[mask], bins=8, range=(0.0, 1.0))
        # Each eighth of [0, 1] holds 12.5% of the brain; quantisation to 256 levels leaves +-3%.
        np.testing.assert_allclose(counts / mask.sum(), 0.125, atol=0.03)
        np.testing.assert_array_equal(image[~mask], 0.0)
        assert 0.0 <= image.min() and image.max() == 1.0
        np.testing.assert_array_equal(normalized.images[modality], before[modality])


def test_equalization_rejects_unnormalized_input(brain_volume) -> None:
    with pytest.raises(MRIInputError, match=r"expected \[0, 1\]"):
        EqualizeHistogram()(brain_volume)


def test_normalization_rejects_a_constant_modality() -> None:
    image = np.ones((4, 4, 4), dtype=np.float32)
    volume = Volume("flat", {"t1": image}, np.eye(4), np.eye(4), image.shape, sources={"t1": "flat_t1.nii.gz"})
    with pytest.raises(MRIInputError, match="flat_t1.nii.gz: modality 't1' is constant"):
        NormalizePercentiles()(volume)


def test_empty_brain_mask_is_rejected() -> None:
    image = np.zeros((4, 4, 4), dtype=np.float32)
    volume = Volume("empty", {"t1": image}, np.eye(4), np.eye(4), image.shape)
    with pytest.raises(MRIInputError, match="brain mask is empty"):
        NormalizePercentiles()(volume)
