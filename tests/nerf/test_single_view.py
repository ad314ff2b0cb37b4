"""Single-view reconstruction's building blocks: the starting code (encoder or mean), the prior, the one-subject copy."""

from __future__ import annotations

import torch
from nerfstudio.cameras.rays import RayBundle

from mri_nerfstudio import views
from mri_nerfstudio.encoder_input import EncoderInput
from mri_nerfstudio.nerf.dataparser import nerfstudio_cameras
from mri_nerfstudio.nerf.occupancy import OccupancyGrid, hull_of_views
from mri_nerfstudio.nerf.single_view import (
    code_prior,
    fit_single_view,
    initial_codes,
    initial_grid,
    input_view_occupancy,
    single_subject_model,
    trained_codes,
    trained_grids,
)
from mri_nerfstudio.nerf.single_view_settings import SingleViewSettings


def _scans_of(model, subject: int) -> EncoderInput:
    return EncoderInput(
        scans=model.encoder_scans[subject].numpy(),
        present=model.encoder_present[subject].numpy(),
        spacing_mm=model.encoder_spacing_mm[subject].numpy(),
    )


def _rays(num_rays: int = 32, subject: int | None = None) -> RayBundle:
    """Parallel rays along -y through the unit sphere, of ``subject`` (None: no subject metadata)."""
    generator = torch.Generator().manual_seed(0)
    xz = torch.rand(num_rays, 2, generator=generator) * 2 - 1
    metadata = {} if subject is None else {"subject_index": torch.full((num_rays, 1), float(subject))}
    return RayBundle(
        origins=torch.stack([xz[:, 0], torch.full((num_rays,), 4.0), xz[:, 1]], dim=-1),
        directions=torch.tensor([0.0, -1.0, 0.0]).expand(num_rays, 3).clone(),
        pixel_area=torch.ones(num_rays, 1),
        metadata=metadata,
    )


def test_a_new_subject_starts_from_the_encoder_prediction_of_its_scans(tiny_encoder_model):
    model = tiny_encoder_model()
    with torch.no_grad():
        model.subject_codes.weight[:2] += 0.3  # subjects 0, 1 trained; subject 2 never was (zero residual)
    start = initial_codes(model, _scans_of(model, 2))
    torch.testing.assert_close(start, trained_codes(model)[2])  # = how the model renders a held-out subject
    torch.testing.assert_close(initial_codes(model), trained_codes(model).mean(dim=0))  # no scans: the mean


def test_without_encoder_the_start_is_the_mean_code_and_the_prior_its_spread(tiny_encoder_model):
    model = tiny_encoder_model(encoder=type(tiny_encoder_model().config.encoder)(enabled="off"))
    assert model.encoder is None
    torch.testing.assert_close(initial_codes(model, _scans_of(model, 0)), model.subject_codes.weight.mean(dim=0))
    mean, variance = code_prior(model)
    torch.testing.assert_close(mean, model.subject_codes.weight.mean(dim=0))
    assert variance >= model.config.code_init_std**2


def test_the_one_subject_copy_renders_its_code_like_the_model_renders_that_subject(tiny_encoder_model):
    model = tiny_encoder_model().eval()
    copy = single_subject_model(model, trained_codes(model)[2], None).eval()
    assert copy.encoder is None and copy.num_subjects == 1 and not hasattr(copy, "encoder_scans")
    with torch.no_grad():
        expected = model(_rays(subject=2))
        got = copy(_rays())
    torch.testing.assert_close(got["rgb"], expected["rgb"])
    assert "scan" not in got
    assert model.encoder is not None  # the original is untouched


def test_a_new_subject_skips_the_space_outside_the_hull_of_its_own_input_views(tiny_encoder_model):
    """Its occupancy is the visual hull of the given views alone, within the space the field was trained in."""
    model = tiny_encoder_model()
    trained = torch.zeros(3, 16, 16, 16, dtype=torch.bool)
    trained[0, 1:15, 1:15, 1:15] = True
    trained[1, 3:13, 3:13, 3:13] = True
    trained[2] = trained[0] | trained[1]  # a subject held out of training: the union
    model.occupancy = OccupancyGrid(trained)
    # Two views (azimuths 0 and 90 degrees) of a ball of radius 0.4 at x = +0.3.
    index = torch.stack(torch.meshgrid(*[torch.arange(33, dtype=torch.float64)] * 3, indexing="ij"), dim=-1)
    world = index / 16 - 1
    ball = ((world - torch.tensor([0.3, 0.0, 0.0], dtype=torch.float64)).norm(dim=-1) <= 0.4).float()
    world_from_voxel = torch.eye(4, dtype=torch.float64)
    world_from_voxel[:3, :3] /= 16
    world_from_voxel[:3, 3] = -1.0
    orbit = views.make_orbit_cameras(n_views=4, step_deg=90.0, image_size=16)
    input_views = views.render_views(ball, world_from_voxel, views.ViewCameras(orbit.c2w[:2], 16, 16))
    cameras = nerfstudio_cameras(orbit)[torch.tensor([0, 1])]

    occupancy = input_view_occupancy(model, input_views, cameras)
    hull = hull_of_views(input_views, cameras, 16, model.config.occupancy_margin)
    assert torch.equal(occupancy, hull & trained[0])
    assert 0 < occupancy.sum() < trained[0].sum() and not occupancy[:4].any()  # x < -0.5: carved
    copy = single_subject_model(model, trained_codes(model)[2], occupancy)
    assert torch.equal(copy.occupancy.grids, occupancy[None])
    assert single_subject_model(model, trained_codes(model)[2], None).occupancy is None
    model.occupancy = None
    assert input_view_occupancy(model, input_views, cameras) is None  # a model that skips nothing


def test_a_new_subject_without_scans_starts_from_the_mean_subject_grid_fitted_only_with_the_field(tiny_encoder_model):
    model = tiny_encoder_model(subject_grid_resolution=4, subject_grid_channels=2)
    with torch.no_grad():
        model.subject_grids.tables.normal_()  # the training subjects' own grids
    copy = single_subject_model(model, trained_codes(model)[2], None)
    assert copy.subject_grids.tables.shape == (1, 4**3, 2) and copy.subject_grids.tables.abs().max() == 0
    orbit = views.make_orbit_cameras(n_views=4, step_deg=90.0, image_size=8)
    camera = nerfstudio_cameras(orbit)[torch.tensor([0])]
    view = torch.full((8, 8), 0.6)
    start = initial_grid(model)
    assert start.abs().max() > 0  # the subjects' grids, averaged
    code_only, _ = fit_single_view(model, view, camera, SingleViewSettings(steps=3))
    torch.testing.assert_close(code_only.subject_grids.tables[0], start)
    with_field, history = fit_single_view(model, view, camera, SingleViewSettings(steps=3, finetune_field=True))
    assert (with_field.subject_grids.tables[0] - start).abs().max() > 0 and len(history.mse) == 3


def test_the_encoder_predicts_each_subjects_grid_and_a_new_subject_starts_from_it(tiny_encoder_model):
    model = tiny_encoder_model(subject_grid_resolution=4, subject_grid_channels=2).eval()
    assert model.encoder.grid_head is not None
    with torch.no_grad():
        model.subject_grids.tables[:2].normal_()  # subjects 0, 1 trained; subject 2 never was (zero residual)
        before = model(_rays(subject=2))["rgb"]
        model.encoder.grid_head.projection.weight.normal_()  # a trained head: features of the scans in place
        predicted = model.predicted_grid_tables(torch.tensor([2, 0, 2]))
        after = model(_rays(subject=2))["rgb"]
    assert sorted(predicted) == [0, 2] and predicted[2].shape == (4**3, 2)
    assert (predicted[2] - predicted[0]).abs().max() > 1e-3  # different scans, different grids
    assert (after - before).abs().max() > 1e-4  # a held-out subject renders from its own scans' grid

    grid = initial_grid(model, _scans_of(model, 2))
    torch.testing.assert_close(grid, predicted[2])
    full = model.subject_grids.tables + torch.stack(list(model.predicted_grid_tables(torch.arange(3)).values()))
    torch.testing.assert_close(trained_grids(model), full)
    torch.testing.assert_close(initial_grid(model), full.mean(dim=0))  # no scans: the mean of the subjects' grids
    copy = single_subject_model(model, trained_codes(model)[2], None, grid).eval()
    with torch.no_grad():
        torch.testing.assert_close(copy(_rays())["rgb"], after)  # the start renders as the model renders it

    without = tiny_encoder_model(subject_grid_resolution=4, subject_grid_channels=2,
                                 encoder=type(model.config.encoder)(grid_features=False))
    assert without.encoder.grid_head is None and without.predicted_grid_tables(torch.tensor([0])) is None
    with torch.no_grad():
        without.subject_grids.tables.normal_()
    torch.testing.assert_close(initial_grid(without, _scans_of(without, 2)), without.subject_grids.tables.mean(dim=0))


def test_training_reaches_the_encoders_grid_head(tiny_encoder_model):
    model = tiny_encoder_model(subject_grid_resolution=4, subject_grid_channels=2).train()
    target = torch.full((32, 3), 0.7)
    outputs = model(_rays(subject=1))
    sum(model.get_loss_dict(outputs, {"image": target}).values()).backward()
    assert model.encoder.grid_head.projection.weight.grad.abs().max() > 0
    grouped = {id(p) for p in model.get_param_groups()["encoder"]}
    assert id(model.encoder.grid_head.projection.weight) in grouped
