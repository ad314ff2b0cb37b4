"""The prepared-subject cache: outputs, instant re-runs, atomicity, untouched inputs, the CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mri_nerfstudio import prepare as prepare_module
from mri_nerfstudio.cli.prepare import main as prepare_main
from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.prepare import (
    PrepareConfig,
    cache_key,
    load_prepared,
    load_volume,
    prepare_subject,
    prepare_subjects,
    preprocessing_pipeline,
    render_subject_views,
)

SMALL = PrepareConfig(image_size=24)


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def prepared(phantom_subject_dir, tmp_path_factory):
    return prepare_subject(phantom_subject_dir, tmp_path_factory.mktemp("cache"), SMALL)


def test_prepared_subject_outputs(prepared):
    assert prepared.images.shape == (72, 24, 24)
    assert prepared.images.dtype == np.float32
    assert 0.0 <= prepared.images.min() and prepared.images.max() <= 1.0
    assert prepared.images.max() > 0.1, "views must show the brain"
    folder = prepared.directory
    for name in ["manifest.json", "cameras.json", "provenance.json", "views.npy", "preprocessed_t1.nii.gz",
                 "preprocessed_mask.nii.gz", "preprocessed_seg.nii.gz"]:
        assert (folder / name).is_file(), name
    pngs = sorted((folder / "views").glob("view_*.png"))
    assert len(pngs) == 72
    png = np.asarray(Image.open(pngs[0]), dtype=np.float32) / 255
    np.testing.assert_allclose(png, prepared.images[0], atol=1 / 255)
    cameras = json.loads((folder / "cameras.json").read_text())
    assert len(cameras["frames"]) == 72
    assert "world_from_ras" in cameras["normalization"]
    steps = [record["step"] for record in json.loads((folder / "provenance.json").read_text())]
    assert steps, "provenance must record the preprocessing steps"
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")], "no temporary folder left behind"


def test_rerun_is_served_from_cache(prepared, phantom_subject_dir, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("a cached subject must not be rendered again")

    monkeypatch.setattr(prepare_module.views, "render_views", fail)
    again = prepare_subject(phantom_subject_dir, prepared.directory.parent, SMALL)
    assert again.directory == prepared.directory
    np.testing.assert_array_equal(again.images, prepared.images)
    for modality in prepared.volume.modalities:
        np.testing.assert_allclose(again.volume.images[modality], prepared.volume.images[modality])
    np.testing.assert_allclose(again.volume.affine, prepared.volume.affine)
    np.testing.assert_allclose(again.cameras.c2w, prepared.cameras.c2w)


def test_stages_run_one_by_one_give_the_prepared_subject(phantom_subject_dir, tmp_path):
    # The stage functions are what prepare_subject runs (benchmarks time them one by one): same
    # inputs, same code, so the views agree up to float reassociation. Registration is left out
    # to keep the test fast; the step list is checked in the next test.
    config = PrepareConfig(image_size=24, register=False)
    prepared = prepare_subject(phantom_subject_dir, tmp_path, config)
    volume = load_volume(phantom_subject_dir, config)
    records = []
    for step in preprocessing_pipeline(config).steps:
        volume, record = step(volume)
        records.append(record)
    assert records == prepared.provenance
    images, cameras, normalization = render_subject_views(volume, config)
    assert images.dtype == np.float32
    np.testing.assert_allclose(images, prepared.images, atol=1e-6)
    np.testing.assert_allclose(cameras.c2w, prepared.cameras.c2w)
    np.testing.assert_allclose(normalization.world_from_ras(), prepared.normalization.world_from_ras())


def test_preprocessing_pipeline_follows_the_settings():
    def names(config: PrepareConfig) -> list[str]:
        return [step.name for step in preprocessing_pipeline(config).steps]

    assert names(PrepareConfig()) == [
        "resample_anisotropic", "register_to_reference", "normalize_percentiles", "equalize_histogram"
    ]
    assert names(PrepareConfig(register=False, equalize=False)) == ["resample_anisotropic", "normalize_percentiles"]
    assert "upsample_in_plane" in names(PrepareConfig(upsample_factor=2))
    assert "resample_through_plane" in names(PrepareConfig(slice_spacing_mm=2.0))


def test_cache_key_follows_inputs_and_settings(phantom_subject_dir, phantom_root):
    key = cache_key(phantom_subject_dir, SMALL)
    assert key == cache_key(phantom_subject_dir, PrepareConfig(image_size=24))
    assert key != cache_key(phantom_subject_dir, PrepareConfig(image_size=32))
    assert key != cache_key(phantom_subject_dir, PrepareConfig(image_size=24, view_mode="mip"))
    other = sorted(p for p in phantom_root.iterdir() if p.is_dir())[1]
    assert key != cache_key(other, SMALL)


def test_crash_while_writing_leaves_nothing_half_done(phantom_subject_dir, tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare_module.np, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        prepare_subject(phantom_subject_dir, tmp_path, SMALL)
    assert list(tmp_path.iterdir()) == []


def test_inputs_are_never_modified(phantom_root, tmp_path):
    subjects = sorted(p for p in phantom_root.iterdir() if p.is_dir())
    before = {s.name: _digest(s) for s in subjects}
    prepare_subjects(phantom_root, tmp_path, SMALL)
    assert {s.name: _digest(s) for s in subjects} == before


def test_shards_split_the_subjects(phantom_root, tmp_path):
    first = prepare_subjects(phantom_root, tmp_path, SMALL, shard=(0, 2))
    second = prepare_subjects(phantom_root, tmp_path, SMALL, shard=(1, 2))
    assert len(first) == len(second) == 1
    assert first[0].name != second[0].name
    with pytest.raises(MRIInputError, match="shard"):
        prepare_subjects(phantom_root, tmp_path, SMALL, shard=(2, 2))


def test_load_prepared_rejects_other_formats(prepared, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    manifest = json.loads((prepared.directory / "manifest.json").read_text())
    manifest["format"] = 999
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MRIInputError, match="manifest.json"):
        load_prepared(copy)


def test_bad_settings_are_refused():
    with pytest.raises(MRIInputError, match="view_mode"):
        PrepareConfig(view_mode="xray")
    with pytest.raises(MRIInputError, match="image_size"):
        PrepareConfig(image_size=2)


def test_cli_prepares_and_reports(phantom_subject_dir, tmp_path, capsys):
    prepare_main(["--data", str(phantom_subject_dir), "--out", str(tmp_path), "--image-size", "24"])
    out = capsys.readouterr().out
    assert "72 views 24x24" in out
    assert len(list(tmp_path.glob("*/manifest.json"))) == 1


@pytest.mark.parametrize("make_data", ["missing", "empty"])
def test_cli_bad_data_is_one_line_exit_2(tmp_path, capsys, make_data):
    data = tmp_path / "data"
    if make_data == "empty":
        data.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        prepare_main(["--data", str(data), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and str(data) in err
