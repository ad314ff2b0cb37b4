from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.phantom import make_phantom
from mri_nerfstudio.preprocess.skull_strip import (
    ExtractBrainMask,
    derive_brain_mask,
    extract_brain,
    head_foreground,
    is_skull_stripped,
    spacing_of,
)
from mri_nerfstudio.volume import Volume

MASK_FILE = "/data/subject/brain.nii.gz"


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.fixture(scope="module")
def stripped_phantom(phantom_config_tiny):
    """A skull-stripped BraTS-like phantom (0 outside the brain, with a tumour) on the tiny 4 mm grid."""
    return make_phantom(0, phantom_config_tiny)


def _volume(image: np.ndarray, affine: np.ndarray, mask: np.ndarray | None = None, mask_file: str | None = None):
    sources = {"t1": "/data/subject/subject_t1.nii.gz"}
    if mask_file is not None:
        sources["mask"] = mask_file
    return Volume(
        name="subject",
        images={"t1": image},
        affine=affine,
        scanner_affine=affine,
        scanner_shape=image.shape,
        mask=mask,
        sources=sources,
    )


def _padded(array: np.ndarray) -> np.ndarray:
    """The tiny phantom's brain fills its grid: three empty slices (12 mm) added to each side."""
    return np.pad(array, 3)


def test_whole_head_is_detected_and_its_brain_extracted(head_phantom):
    image = head_phantom.images["t1"]

    mask, record = derive_brain_mask(image, head_phantom.affine, "auto")

    assert record["decision"] == "auto: whole head, brain extracted"
    assert record["evidence"]["background_share"] < 0.01  # noisy air: no constant background
    assert record["evidence"]["foreground_ml"] > 3000
    # The phantom's brain is the MNI152 template's own, so this checks the machinery, not the accuracy
    # on real heads (that is scripts/bench_brain_mask.py on IXI).
    assert _dice(mask, head_phantom.brain) >= 0.93
    assert record["brain_ml"] == pytest.approx(mask.sum() * 0.064)
    assert record["share_of_foreground"] == pytest.approx(mask.sum() / (record["foreground_ml"] / 0.064))
    assert 0.3 < record["share_of_foreground"] < 0.7


@pytest.mark.parametrize("modality", ["t2", "flair"])
def test_other_contrasts_of_a_whole_head(head_phantom, modality):
    mask, record = derive_brain_mask(head_phantom.images[modality], head_phantom.affine, "auto")

    assert record["decision"] == "auto: whole head, brain extracted"
    assert _dice(mask, head_phantom.brain) >= 0.9


def test_skull_stripped_scan_is_its_own_foreground(stripped_phantom):
    mask, record = derive_brain_mask(stripped_phantom.images["t1"], stripped_phantom.affine, "auto")

    assert record["decision"] == "auto: already skull-stripped"
    assert record["evidence"]["background_value"] == 0.0 and record["evidence"]["constant_background"]
    assert _dice(mask, stripped_phantom.brain) >= 0.97
    assert record["share_of_foreground"] == 1.0


@pytest.mark.parametrize("over", ["grid", "brain"])
def test_z_scored_scan_keeps_its_negative_brain_voxels(stripped_phantom, over):
    image = stripped_phantom.images["t1"].astype(np.float64)
    # BraTS 2013 is z-scored over the brain: about half of it goes negative, the background is a constant.
    statistics = image if over == "grid" else image[stripped_phantom.brain]
    z_scored = ((image - statistics.mean()) / statistics.std()).astype(np.float32)

    mask, record = derive_brain_mask(z_scored, stripped_phantom.affine, "auto")

    assert record["decision"] == "auto: already skull-stripped"
    assert record["evidence"]["background_value"] < 0
    assert _dice(mask, stripped_phantom.brain) >= 0.97
    assert np.any(mask & (z_scored <= 0)) and not np.array_equal(mask, z_scored > 0)
    if over == "brain":
        assert _dice(z_scored > 0, stripped_phantom.brain) < 0.8


def test_noisy_air_and_thick_slices_do_not_fill_the_box(head_phantom_config):
    thick = make_phantom(0, dataclasses.replace(head_phantom_config, slice_thickness_mm=8.0, noise_std=0.03))
    image = thick.images["t1"]

    foreground = head_foreground(image, spacing_of(thick.affine))
    stripped, evidence = is_skull_stripped(image, spacing_of(thick.affine), foreground)

    assert foreground.mean() < 0.6 and (image > 0).mean() > 0.99
    assert np.all(foreground[thick.brain])
    assert not stripped and not evidence["constant_background"]
    assert _dice(extract_brain(image, thick.affine), thick.brain) >= 0.93


def test_forcing_the_method(head_phantom, stripped_phantom):
    off, off_record = derive_brain_mask(head_phantom.images["t1"], head_phantom.affine, "off")
    on, on_record = derive_brain_mask(stripped_phantom.images["t1"], stripped_phantom.affine, "on")

    assert off_record["decision"] == "off: foreground" and off_record["share_of_foreground"] == 1.0
    assert off.sum() > 1.5 * head_phantom.brain.sum()  # the whole head
    assert on_record["decision"] == "on: brain extracted" and "registration" in on_record["method"]
    assert _dice(on, stripped_phantom.brain) >= 0.9


def test_constant_image_has_no_foreground():
    assert not head_foreground(np.full((8, 8, 8), 3.0, dtype=np.float32), (2.0, 2.0, 2.0)).any()


def test_step_derives_the_mask_and_records_it(stripped_phantom):
    volume = _volume(stripped_phantom.images["t1"], stripped_phantom.affine)

    result, record = ExtractBrainMask()(volume)

    assert volume.mask is None  # the input is not modified
    assert _dice(result.mask, stripped_phantom.brain) >= 0.97
    assert record["step"] == "brain_mask" and record["params"] == {"skull_strip": "auto"}
    assert record["estimates"]["decision"] == "auto: already skull-stripped"
    assert 800 < record["estimates"]["brain_ml"] < 2000
    json.dumps(record)


def test_step_keeps_a_given_mask(stripped_phantom):
    given = stripped_phantom.brain.copy()
    given[:, :, : 2 * given.shape[2] // 3] = False
    volume = _volume(stripped_phantom.images["t1"], stripped_phantom.affine, given, mask_file=MASK_FILE)

    with pytest.warns(UserWarning, match="subject_t1.nii.gz"):  # a third of a brain is too small
        result, estimates = ExtractBrainMask(skull_strip="on").apply(volume)

    np.testing.assert_array_equal(result.mask, given)
    assert estimates["decision"] == f"given: {MASK_FILE}"
    assert estimates["brain_ml"] == pytest.approx(given.sum() * 0.064)
    assert estimates["share_of_foreground"] == pytest.approx(given.sum() / stripped_phantom.brain.sum(), rel=0.02)


def test_step_rejects_an_empty_given_mask(stripped_phantom):
    image = stripped_phantom.images["t1"]
    volume = _volume(image, stripped_phantom.affine, np.zeros(image.shape, bool), mask_file=MASK_FILE)

    with pytest.raises(MRIInputError, match="brain.nii.gz.*empty"):
        ExtractBrainMask().apply(volume)


@pytest.mark.parametrize("bad", ["yes", "", None, True])
def test_bad_skull_strip_values_are_rejected(stripped_phantom, bad):
    with pytest.raises(MRIInputError, match="skull_strip"):
        ExtractBrainMask(skull_strip=bad)
    with pytest.raises(MRIInputError, match="skull_strip"):
        derive_brain_mask(stripped_phantom.images["t1"], stripped_phantom.affine, bad)


def test_implausible_brain_volume_is_warned_about_naming_the_file(stripped_phantom):
    # The same scan with 1 mm voxels instead of 4: a brain of under 30 ml.
    affine = stripped_phantom.affine @ np.diag([0.25, 0.25, 0.25, 1.0])
    volume = _volume(stripped_phantom.images["t1"], affine)

    with pytest.warns(UserWarning, match=r"subject_t1\.nii\.gz: brain mask of \d+ ml .*expected 800 to 2000 ml"):
        ExtractBrainMask(skull_strip="off")(volume)


def test_a_brain_cut_off_by_the_field_of_view_is_recorded_and_warned_about(stripped_phantom):
    image, brain = _padded(stripped_phantom.images["t1"]), _padded(stripped_phantom.brain)
    keep = 2 * image.shape[2] // 3  # the grid stops two thirds of the way up the brain
    volume = _volume(image[:, :, :keep], stripped_phantom.affine, brain[:, :, :keep], mask_file=MASK_FILE)

    with pytest.warns(UserWarning, match=r"subject_t1\.nii\.gz: the brain is cut off by the field of view on the "
                      r"superior side \(\d+ cm2"):
        _, record = ExtractBrainMask()(volume)

    assert list(record["estimates"]["cut_by_field_of_view"]) == ["superior"]
    json.dumps(record)


def test_a_whole_brain_is_not_cut_off(stripped_phantom):
    image, brain = _padded(stripped_phantom.images["t1"]), _padded(stripped_phantom.brain)
    _, record = ExtractBrainMask()(_volume(image, stripped_phantom.affine, brain, mask_file=MASK_FILE))
    assert record["estimates"]["cut_by_field_of_view"] == {}


def test_an_extracted_brain_reaches_the_cut_of_a_field_of_view_that_stops_below_the_vertex(head_phantom):
    top = np.flatnonzero(head_phantom.brain.any(axis=(0, 1)))[-1]
    keep = top - 8  # the grid stops 32 mm below the top of the brain
    image, truth = head_phantom.images["t1"][:, :, :keep], head_phantom.brain[:, :, :keep]

    mask = extract_brain(image, head_phantom.affine)

    # The refinement's morphology once shaved the mask off the cut by its largest radius (6 mm).
    assert mask[:, :, -1].sum() >= 0.8 * truth[:, :, -1].sum()
    assert _dice(mask, truth) >= 0.9


def test_a_modality_that_leaves_part_of_the_brain_at_0_is_recorded_and_warned_about(stripped_phantom):
    image, brain = _padded(stripped_phantom.images["t1"]), _padded(stripped_phantom.brain)
    flair = _padded(stripped_phantom.images["flair"]).copy()
    flair[:, :, flair.shape[2] // 2 :] = 0.0  # a FLAIR stack that stops half way up
    volume = _volume(image, stripped_phantom.affine, brain, mask_file=MASK_FILE)
    volume = volume.replace(images={"t1": image, "flair": flair})

    with pytest.warns(UserWarning, match=r"flair is 0 on \d+% of the brain: the brain lies partly outside its field"):
        _, record = ExtractBrainMask()(volume)

    assert list(record["estimates"]["brain_outside_modality"]) == ["flair"]
    assert 0.3 < record["estimates"]["brain_outside_modality"]["flair"] < 0.7
    assert record["estimates"]["cut_by_field_of_view"] == {}
