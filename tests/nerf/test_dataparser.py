"""The ``mri-data`` dataparser: splits, cameras, in-memory images, and its registration in ns-train."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from mri_nerfstudio import views
from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.nerf.dataparser import MRIDataParserConfig
from mri_nerfstudio.nerf.dataset import MRIViewDataset
from mri_nerfstudio.prepare import PrepareConfig

SMALL = PrepareConfig(image_size=24)


@pytest.fixture(scope="module")
def parser(phantom_root, tmp_path_factory):
    config = MRIDataParserConfig(data=phantom_root, cache_dir=tmp_path_factory.mktemp("cache"), prepare=SMALL)
    return config.setup()


def test_brats_root_splits_into_15_train_14_val_and_43_test_views_per_subject(parser):
    n_subjects = len(parser.subjects)
    assert n_subjects == 2
    train = parser.get_dataparser_outputs("train")
    val = parser.get_dataparser_outputs("val")
    test = parser.get_dataparser_outputs("test")
    assert len(train.image_filenames) == len(train.cameras) == 15 * n_subjects
    assert len(val.image_filenames) == len(val.cameras) == 14 * n_subjects
    assert len(test.image_filenames) == len(test.cameras) == 43 * n_subjects
    assert train.metadata["images"].shape == (15 * n_subjects, 24, 24)
    subject_index = test.cameras.metadata["subject_index"].squeeze(-1)
    assert sorted(set(subject_index.tolist())) == [0.0, 1.0]
    train_views = set(train.metadata["view_index"].tolist())
    val_views = set(val.metadata["view_index"].tolist())
    test_views = set(test.metadata["view_index"].tolist())
    assert train_views == set(range(0, 72, 5)) and val_views == set(range(2, 72, 5))
    assert not train_views & test_views and not val_views & test_views
    assert train_views | val_views | test_views == set(range(72))
    assert parser.split_view_counts() == {
        "num_train_views": 30, "num_val_views": 28, "num_test_views": 86, "num_mirror_views_excluded": 0
    }  # fmt: skip
    assert all(p.is_file() for p in train.image_filenames)
    # Empty-space skipping gets each subject's training views and their cameras, never its brain mask.
    hull_views, hull_cameras = train.metadata["training_views"], train.metadata["training_cameras"]
    assert len(hull_views) == len(hull_cameras) == n_subjects and "brain_masks" not in train.metadata
    torch.testing.assert_close(hull_views[1], torch.from_numpy(parser.subjects[1].images[0::5]))
    torch.testing.assert_close(hull_cameras[1].camera_to_worlds, parser.subjects[1].cameras.c2w[0::5])


def test_dataset_serves_the_exact_views(parser):
    outputs = parser.get_dataparser_outputs("train")
    dataset = MRIViewDataset(outputs)
    item = dataset[3]
    assert item["image"].shape == (24, 24, 3)
    subject = parser.subjects[0]
    torch.testing.assert_close(item["image"][..., 0], torch.from_numpy(subject.images[15]))


def test_camera_rays_reproduce_the_prepared_views(parser):
    """Rays of the nerfstudio cameras give back the views rendered by ``views.py`` (same geometry)."""
    outputs = parser.get_dataparser_outputs("test")
    subject = parser.subjects[0]
    camera_index = 7
    bundle = outputs.cameras.generate_rays(camera_indices=camera_index)
    origins, directions = views.generate_rays(subject.cameras)
    view = int(outputs.metadata["view_index"][camera_index])
    torch.testing.assert_close(bundle.origins, origins[view].float(), atol=1e-5, rtol=0)
    torch.testing.assert_close(bundle.directions, directions[view].float(), atol=1e-5, rtol=0)


def test_train_every_must_hold_out_views(phantom_root, tmp_path):
    with pytest.raises(MRIInputError, match="train_every"):
        MRIDataParserConfig(data=phantom_root, cache_dir=tmp_path, train_every=1).setup()


def test_drr_views_from_behind_are_exact_mirror_images(phantom_subject_dir, parser, capsys):
    """The reason for the exclusion: the prepared view 36 (azimuth 180) is view 0 flipped left to right."""
    config = MRIDataParserConfig(
        data=phantom_subject_dir, cache_dir=parser.config.cache_dir, prepare=PrepareConfig(image_size=24, view_mode="drr")
    )
    drr = config.setup()
    images = drr.subjects[0].images
    assert images[0].max() > 0.1
    np.testing.assert_allclose(images[36], images[0][:, ::-1], atol=1e-5)
    np.testing.assert_allclose(images[41], images[5][:, ::-1], atol=1e-5)
    test = drr.get_dataparser_outputs("test")
    assert len(test.cameras) == 28 and not {0, 5, 36, 41} & set(test.metadata["view_index"].tolist())
    printed = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert "test: 28 views (1 subject(s) x 28; 15 mirror copies of training views left out, drr)" in printed
    assert drr.split_view_counts()["num_mirror_views_excluded"] == 15


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"train_every": 2, "prepare": PrepareConfig(n_views=4)},
            "train_every=2, val_every=5, val_offset=2 over n_views=4 leave no val view",
        ),
        ({"val_every": 1}, "val_every must be >= 2"),
        ({"val_offset": 5}, r"val_offset must lie in 0..4"),
        ({"val_every": 5, "val_offset": 0}, "val_offset=0 over n_views=72 leave no val view"),
        ({"train_every": 2, "val_every": 2, "val_offset": 1}, "leave no test view"),
    ],
)
def test_settings_that_leave_val_or_test_empty_are_refused(phantom_root, tmp_path, settings, message):
    with pytest.raises(MRIInputError, match=message):
        MRIDataParserConfig(data=phantom_root, cache_dir=tmp_path, **settings).setup()


def test_ns_train_lists_the_method_and_its_dataparser(ns_train_cli, capsys):
    # In-process, as ns-train builds its parser; the installed ns-train runs mri-data in test_method_config.py.
    with pytest.raises(SystemExit):
        ns_train_cli(["mri-mednerf", "mri-data", "--help"])
    help_text = capsys.readouterr().out
    assert "--train-every" in help_text and "--prepare.image-size" in help_text


def test_subject_split_trains_on_the_chosen_subjects_and_evaluates_everyone(phantom_root, parser):
    config = MRIDataParserConfig(
        data=phantom_root, cache_dir=parser.config.cache_dir, prepare=SMALL, train_subjects=("BraTS2021_00001",)
    )
    split = config.setup()
    train, test = split.get_dataparser_outputs("train"), split.get_dataparser_outputs("test")
    assert set(train.cameras.metadata["subject_index"].squeeze(-1).tolist()) == {1.0}
    assert len(train.cameras) == 15 and len(test.cameras) == 2 * 43
    assert train.metadata["train_subjects"] == [1]
    first_n = MRIDataParserConfig(data=phantom_root, cache_dir=parser.config.cache_dir, prepare=SMALL, train_subjects=("1",))
    assert first_n.setup().training_subjects() == [0]


def test_subjects_limits_what_is_prepared_and_evaluated(phantom_root, parser):
    config = MRIDataParserConfig(
        data=phantom_root, cache_dir=parser.config.cache_dir, prepare=SMALL, subjects=("BraTS2021_00001",)
    )
    dataparser = config.setup()
    test = dataparser.get_dataparser_outputs("test")
    assert [subject.name for subject in dataparser.subjects] == ["BraTS2021_00001"]
    assert len(test.cameras) == 43 and dataparser.training_subjects() == [0]


def test_encoder_inputs_of_every_subject_are_in_the_metadata_and_cached(parser):
    metadata = parser.get_dataparser_outputs("train").metadata
    assert metadata["encoder_scans"].shape == (2, 4, 32, 32, 32)
    assert metadata["encoder_present"].tolist() == [[1.0] * 4] * 2
    assert metadata["encoder_spacing_mm"].shape == (2, 3)
    assert all((subject.directory / "encoder_input_32.npz").is_file() for subject in parser.subjects)


@pytest.mark.parametrize(
    ("train_subjects", "message"),
    [(("BraTS2021_00007",), r"\['BraTS2021_00007'\] not in the data"), (("3",), "3 requested, expected 1..2")],
)
def test_subject_split_naming_a_missing_subject_is_an_error(phantom_root, parser, train_subjects, message):
    config = MRIDataParserConfig(
        data=phantom_root, cache_dir=parser.config.cache_dir, prepare=SMALL, train_subjects=train_subjects
    )
    with pytest.raises(MRIInputError, match=message):
        config.setup().get_dataparser_outputs("train")


def test_encoder_grid_size_must_be_a_multiple_of_8(phantom_root, tmp_path):
    with pytest.raises(MRIInputError, match="encoder_grid_size"):
        MRIDataParserConfig(data=phantom_root, cache_dir=tmp_path, encoder_grid_size=20).setup()


def test_subjects_with_different_modality_sets_train_together_with_presence_flags(phantom_root, tmp_path):
    root = tmp_path / "brats"
    shutil.copytree(phantom_root, root)
    (root / "BraTS2021_00001" / "BraTS2021_00001_flair.nii.gz").unlink()
    metadata = MRIDataParserConfig(data=root, cache_dir=tmp_path / "cache", prepare=SMALL).setup().get_dataparser_outputs(
        "train"
    ).metadata
    assert metadata["encoder_present"].tolist() == [[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0]]
    assert not metadata["encoder_scans"][1, 3].any() and metadata["encoder_scans"][0, 3].any()


def test_preparation_warnings_print_as_lines_among_the_progress(phantom_subject_dir, tmp_path, capsys):
    # The tiny phantom's brain fills its grid, so the field of view cuts it off.
    parser = MRIDataParserConfig(data=phantom_subject_dir, cache_dir=tmp_path, prepare=SMALL).setup()
    assert parser.subjects
    printed = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert "[mri-data] warning: " in printed and "the brain is cut off by the field of view on the" in printed
