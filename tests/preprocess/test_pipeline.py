"""The default preprocessing pipeline end to end, its provenance records and its parameter dict."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import SimpleITK as sitk
from nilearn.datasets import load_mni152_brain_mask, load_mni152_template

from mri_nerfstudio.preprocess.pipeline import PreprocessPipeline, default_pipeline, write_provenance
from mri_nerfstudio.preprocess.register import RegisterToReference, from_sitk, to_sitk
from mri_nerfstudio.volume import Volume


@pytest.fixture(scope="module")
def subject() -> Volume:
    """3 modalities at 4 mm (MNI152 T1 block-averaged); the T2-like one rotated 5 deg, shifted 4 mm."""
    template = load_mni152_template(resolution=2)
    t1 = np.asarray(template.dataobj, dtype=np.float32)[12:88, 12:106, :80]
    mask = np.asarray(load_mni152_brain_mask(resolution=2).dataobj)[12:88, 12:106, :80] > 0
    t1 = (t1 * mask).reshape(38, 2, 47, 2, 40, 2).mean(axis=(1, 3, 5)) * 1000.0
    mask = mask.reshape(38, 2, 47, 2, 40, 2).mean(axis=(1, 3, 5)) > 0.5
    affine = template.affine @ np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] += template.affine[:3, :3] @ [12.5, 12.5, 0.5]  # block centres: half a 2 mm voxel in

    t2 = np.where(mask, 1100.0 - t1, 0.0).astype(np.float32)
    flair = np.where(mask, np.sqrt(np.abs(t1 - 550.0)), 0.0).astype(np.float32)
    motion = sitk.Euler3DTransform()
    fixed = to_sitk(t1, affine)
    motion.SetCenter(fixed.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in fixed.GetSize()]))
    motion.SetRotation(np.radians(5.0), 0.0, 0.0)
    motion.SetTranslation([0.0, 4.0, 0.0])
    t2 = from_sitk(sitk.Resample(to_sitk(t2, affine), fixed, motion))[0]
    seg = np.where(t1 > 700.0, 2, 0).astype(np.int16) * mask
    return Volume("synthetic", {"t1": t1, "t2": t2, "flair": flair}, affine, affine, t1.shape, seg=seg, mask=mask)


def test_default_pipeline_runs_and_records_every_step(subject, tmp_path) -> None:
    original = copy.deepcopy(subject)
    pipeline = default_pipeline(upsample_factor=2)

    result, records = pipeline(subject)

    names = ["upsample_in_plane", "brain_mask", "register_to_reference", "normalize_percentiles", "equalize_histogram"]
    assert [record["step"] for record in records] == names
    for record in records:
        assert set(record) == {"step", "params", "estimates", "before", "after"}
    # An isotropic grid keeps the axial convention: X and Y up-sampled.
    assert records[0]["after"]["shape"] == [76, 94, 40] and result.shape == (76, 94, 40)
    assert records[0]["estimates"]["axes"] == [0, 1]
    assert records[1]["estimates"]["decision"] == "given: a mask given in memory"
    assert records[2]["estimates"]["t2"]["transform"]["rotation_deg"] == pytest.approx(5.0, abs=1.0)

    path = write_provenance(records, tmp_path / "subject" / "provenance.json")
    assert json.loads(path.read_text()) == json.loads(json.dumps(records, allow_nan=False))
    assert [p.name for p in path.parent.iterdir()] == ["provenance.json"]  # no temporary file left

    for modality, image in result.images.items():
        assert image.dtype == np.float32 and image.min() >= 0.0 and image.max() <= 1.0
        np.testing.assert_array_equal(image[~result.mask], 0.0)
    assert result.seg.shape == result.shape and result.seg.dtype == np.int16
    for modality in subject.images:
        np.testing.assert_array_equal(subject.images[modality], original.images[modality])
    np.testing.assert_array_equal(subject.mask, original.mask)
    np.testing.assert_array_equal(subject.affine, original.affine)


def test_thick_sagittal_subject_is_resampled_then_registered(subject) -> None:
    keep = (slice(None, None, 3), slice(None), slice(None))  # 12 x 4 x 4 mm: sagittal thick slices
    affine = subject.affine @ np.diag([3.0, 1.0, 1.0, 1.0])
    images = {modality: array[keep] for modality, array in subject.images.items()}
    thick = subject.replace(images=images, affine=affine, seg=subject.seg[keep], mask=subject.mask[keep])
    assert thick.shape == (13, 47, 40)

    result, records = default_pipeline(target_spacing_mm=4.0)(thick)

    names = [
        "resample_anisotropic", "brain_mask", "register_to_reference", "normalize_percentiles", "equalize_histogram"
    ]
    assert [record["step"] for record in records] == names
    resampling = records[0]["estimates"]
    assert resampling["thick_axis"]["index"] == 0 and resampling["thick_axis"]["slices"] == "sagittal"
    assert resampling["spacing_after_mm"] == pytest.approx([4.0, 4.0, 4.0])
    assert result.shape == (39, 47, 40) and result.seg.shape == result.shape
    # Registration ran on the resampled grid: the 5 degree in-plane rotation about R is found.
    assert records[2]["before"]["shape"] == [39, 47, 40]
    assert records[2]["estimates"]["t2"]["transform"]["rotation_deg"] == pytest.approx(5.0, abs=1.0)


def test_registration_is_reproducible(subject) -> None:
    first, record = RegisterToReference()(subject)
    again, record_again = RegisterToReference()(subject)
    # Seeded sampling: equal up to the last bits of multi-threaded sums.
    np.testing.assert_allclose(again.images["t2"], first.images["t2"], atol=1e-6 * first.images["t2"].max())
    np.testing.assert_allclose(
        record_again["estimates"]["t2"]["transform"]["matrix_ras"],
        record["estimates"]["t2"]["transform"]["matrix_ras"],
        atol=1e-9,
    )


def test_provenance_overwrites_atomically(tmp_path) -> None:
    path = tmp_path / "provenance.json"
    write_provenance([{"step": "a", "value": np.float32(0.5), "shape": (1, 2)}], path)
    write_provenance([{"step": "b", "value": np.int64(3), "missing": float("nan")}], path)
    assert json.loads(path.read_text()) == [{"step": "b", "value": 3, "missing": None}]
    assert [p.name for p in tmp_path.iterdir()] == ["provenance.json"]


def test_pipeline_parameters_form_a_stable_dict() -> None:
    first = default_pipeline(upsample_factor=2, slice_spacing_mm=1.0)
    again = default_pipeline(upsample_factor=2, slice_spacing_mm=1.0)
    assert json.dumps(first.to_dict(), sort_keys=True) == json.dumps(again.to_dict(), sort_keys=True)
    assert first.to_dict() != default_pipeline(upsample_factor=2).to_dict()
    assert first.to_dict() != default_pipeline(upsample_factor=2, slice_spacing_mm=1.0, equalize=False).to_dict()
    steps = first.to_dict()["steps"]
    assert [s["step"] for s in steps] == [
        "upsample_in_plane",
        "resample_through_plane",
        "brain_mask",
        "register_to_reference",
        "normalize_percentiles",
        "equalize_histogram",
    ]
    assert steps[0]["params"] == {"factor": 2, "axes": None}  # axes and slice axis from the spacing
    assert steps[1]["params"]["axis"] is None


def test_default_order_resamples_before_registering() -> None:
    def names(**settings) -> list[str]:
        return [step["step"] for step in default_pipeline(**settings).to_dict()["steps"]]

    assert names() == [
        "resample_anisotropic", "brain_mask", "register_to_reference", "normalize_percentiles", "equalize_histogram"
    ]
    assert names(resample_anisotropic=False)[:2] == ["brain_mask", "register_to_reference"]
    first_steps = ["correct_slice_motion", "resample_anisotropic", "brain_mask"]
    assert names(correct_slice_motion=True)[:3] == first_steps
    # Explicit resampling replaces the automatic one.
    assert names(slice_spacing_mm=2.0)[:2] == ["resample_through_plane", "brain_mask"]
    automatic = default_pipeline(target_spacing_mm=0.8).to_dict()["steps"][0]
    assert automatic["params"] == {"target_spacing_mm": 0.8, "min_ratio": 2.0}


def test_empty_pipeline_returns_the_input() -> None:
    image = np.ones((2, 2, 2), dtype=np.float32)
    volume = Volume("one", {"t1": image}, np.eye(4), np.eye(4), image.shape)
    result, records = PreprocessPipeline([])(volume)
    assert result is volume and records == []
