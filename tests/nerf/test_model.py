"""The MedNeRF model: presets, subject codes, fitting a tiny ray batch, metrics, param groups, volume export."""

from __future__ import annotations

import math

import pytest
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.field_components.field_heads import FieldHeadNames

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.nerf.encoder import SliceEncoderConfig
from mri_nerfstudio.nerf.field import FeatureGridBackbone, MLPBackbone
from mri_nerfstudio.nerf.model import MRIMedNeRFModel, MRIMedNeRFModelConfig
from mri_nerfstudio.nerf.renderers import AttenuationRenderer, EmissionAbsorptionRenderer, MaxIntensityRenderer
from mri_nerfstudio.views import orbit_poses

TINY = dict(preset="cpu", grid_resolutions=(4, 8), grid_channels=2, grid_width=8, num_samples=8)
SCENE_BOX = SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))


def _model(view_mode: str = "volume", num_subjects: int = 2, **overrides) -> MRIMedNeRFModel:
    torch.manual_seed(0)
    config = MRIMedNeRFModelConfig(**{**TINY, **overrides})
    metadata = {"view_mode": view_mode, "density_scale": 3.0, "subject_names": [f"s{i}" for i in range(num_subjects)]}
    return config.setup(scene_box=SCENE_BOX, num_train_data=4, metadata=metadata)


def _rays(num_rays: int = 64, subject_index: list[int] | None = None, seed: int = 0) -> RayBundle:
    """Parallel rays along -y from y = 4, spread over the sphere's silhouette (and a few beyond it)."""
    generator = torch.Generator().manual_seed(seed)
    xz = (torch.rand(num_rays, 2, generator=generator) * 2 - 1) * 1.1
    origins = torch.stack([xz[:, 0], torch.full((num_rays,), 4.0), xz[:, 1]], dim=-1)
    metadata = {}
    if subject_index is not None:
        metadata["subject_index"] = torch.tensor(subject_index, dtype=torch.float32)[:, None]
    return RayBundle(
        origins=origins,
        directions=torch.tensor([0.0, -1.0, 0.0]).expand(num_rays, 3).clone(),
        pixel_area=torch.ones(num_rays, 1),
        metadata=metadata,
    )


def _target(bundle: RayBundle) -> torch.Tensor:
    """A smooth grey image over the rays: brighter towards +x, black outside the sphere's silhouette."""
    x, z = bundle.origins[:, 0], bundle.origins[:, 2]
    inside = (x**2 + z**2 < 1).float()
    return (inside * (0.4 + 0.3 * x))[:, None].expand(-1, 3)


def test_presets_pick_backbone_samples_and_code_sizes():
    cpu = _model()
    assert isinstance(cpu.field.backbone, FeatureGridBackbone)
    assert cpu.sampler.num_samples == 8 and cpu.subject_codes.weight.shape == (2, 16)
    mednerf = _model(preset="mednerf", num_samples=None, num_subjects=3)
    assert isinstance(mednerf.field.backbone, MLPBackbone)
    assert mednerf.sampler.num_samples == 64 and mednerf.subject_codes.weight.shape == (3, 256)
    generator_size = sum(p.numel() for p in mednerf.field.parameters())
    assert abs(generator_size - 680_000) / 680_000 < 0.01
    assert float(mednerf.subject_codes.weight.std()) == pytest.approx(0.01, rel=0.2)


def test_renderer_follows_the_view_mode():
    assert isinstance(_model("volume").renderer, EmissionAbsorptionRenderer)
    assert isinstance(_model("drr").renderer, AttenuationRenderer)
    assert isinstance(_model("mip").renderer, MaxIntensityRenderer)
    with pytest.raises(MRIInputError, match="view_mode"):
        _model("ultrasound")


@pytest.mark.parametrize("view_mode", ["volume", "drr", "mip"])
def test_outputs_have_per_ray_shapes(view_mode):
    model = _model(view_mode).eval()
    outputs = model(_rays(10, subject_index=[0] * 10))
    assert outputs["rgb"].shape == (10, 3) and outputs["volume"].shape == (10, 3)
    assert outputs["accumulation"].shape == (10, 1) and outputs["depth"].shape == (10, 1)
    assert all(torch.isfinite(value).all() for value in outputs.values())


@pytest.mark.parametrize("preset", ["cpu", "mednerf"])
def test_a_few_steps_fit_a_tiny_ray_batch(preset):
    overrides = {} if preset == "cpu" else dict(preset="mednerf", num_samples=8, density_noise_std=0.0)
    model = _model(**overrides)
    if preset == "mednerf":  # a smaller MLP keeps the test fast; the optimisation path is the same
        model.field.backbone = MLPBackbone(128, 128, width=32, depth=3, skip_after=1, colour_width=16)
    groups = model.get_param_groups()
    optimizer = torch.optim.Adam(
        [{"params": groups["fields"], "lr": 0.05 if preset == "cpu" else 5e-3}, {"params": groups["codes"], "lr": 1e-2}]
    )
    bundle = _rays(128, subject_index=[0] * 128)
    batch = {"image": _target(bundle)}
    losses = []
    for _ in range(30):
        loss_dict = model.get_loss_dict(model(bundle.flatten()), batch)
        loss = sum(loss_dict.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss_dict["rgb_loss"]))
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("view_mode", ["volume", "mip"])
def test_tied_colour_renders_density_over_k_as_the_views_were_formed(view_mode):
    """``volume``: the pixel is emission-absorption with colour = density / k; ``mip``: the largest density / k."""
    model = _model(view_mode, colour="tied").eval()
    assert model.field.colour == "tied" and model.field.density_scale == 3.0
    bundle = _rays(32, subject_index=[0] * 32)
    subjects = torch.zeros(32).long()
    samples = model._conditioned(model.sampler(model.collider(bundle)), model.codes_of(subjects), subjects)
    with torch.no_grad():
        intensity = model.field(samples)[FieldHeadNames.DENSITY] / 3.0  # [32, S, 1]
        rgb = model(bundle)["rgb"]
    if view_mode == "volume":
        expected = (samples.get_weights(3.0 * intensity) * intensity).sum(dim=-2)
    else:
        expected = (intensity * (samples.deltas > 0)).amax(dim=-2)
    torch.testing.assert_close(rgb, expected.expand(32, 3))


def test_a_few_steps_fit_a_tiny_ray_batch_with_the_tied_colour():
    model = _model(colour="tied")
    groups = model.get_param_groups()
    optimizer = torch.optim.Adam([{"params": groups["fields"], "lr": 0.05}, {"params": groups["codes"], "lr": 1e-2}])
    bundle = _rays(128, subject_index=[0] * 128)
    batch = {"image": _target(bundle)}
    losses = []
    for _ in range(30):
        loss_dict = model.get_loss_dict(model(bundle.flatten()), batch)
        optimizer.zero_grad()
        sum(loss_dict.values()).backward()
        optimizer.step()
        losses.append(float(loss_dict["rgb_loss"]))
    assert losses[-1] < 0.5 * losses[0], losses


def test_missing_subject_index_renders_subject_zero():
    model = _model().eval()
    with torch.no_grad():
        model.subject_codes.weight[1] += 1.0  # make subject 1 clearly different
    default = model(_rays(16))["rgb"]
    torch.testing.assert_close(default, model(_rays(16, subject_index=[0] * 16))["rgb"])
    assert (default - model(_rays(16, subject_index=[1] * 16))["rgb"]).abs().max() > 1e-4


def test_subject_index_out_of_range_is_refused():
    model = _model(num_subjects=2).eval()
    with pytest.raises(MRIInputError, match="subject_index"):
        model(_rays(4, subject_index=[0, 1, 2, 0]))


def test_image_metrics_are_psnr_and_ssim_of_the_rendered_view():
    model = _model().eval()
    size = 16
    camera = Cameras(
        camera_to_worlds=orbit_poses(n_views=1, radius=4.0),
        fx=size / 2,
        fy=size / 2,
        cx=size / 2,
        cy=size / 2,
        width=size,
        height=size,
        camera_type=CameraType.ORTHOPHOTO,
        metadata={"subject_index": torch.zeros(1, 1)},
    )
    outputs = model.get_outputs_for_camera(camera)
    assert outputs["rgb"].shape == (size, size, 3)
    image = (outputs["rgb"] + 0.05).clamp(0, 1)
    metrics, images = model.get_image_metrics_and_images(outputs, {"image": image})
    assert set(metrics) == {"psnr", "ssim"}
    mse = float(((image - outputs["rgb"].clamp(0, 1)) ** 2).mean())
    assert metrics["psnr"] == pytest.approx(10 * math.log10(1 / mse), abs=1e-3)
    assert 0.0 < metrics["ssim"] <= 1.0
    assert images["img"].shape == (size, 2 * size, 3)
    assert {"accumulation", "depth", "volume"} <= set(images)


def test_param_groups_cover_every_trainable_parameter_once():
    for preset in ("cpu", "mednerf"):
        model = _model(preset=preset, num_samples=None)
        grouped = [p for params in model.get_param_groups().values() for p in params]
        assert len({id(p) for p in grouped}) == len(grouped)
        # Model's device_indicator_param is an empty tensor that only tracks the device.
        trainable = {id(p) for p in model.parameters() if p.requires_grad and p is not model.device_indicator_param}
        assert {id(p) for p in grouped} == trainable


def test_density_noise_decays_linearly_to_zero():
    model = _model(preset="mednerf", num_samples=None, density_noise_std=1.0, density_noise_steps=100)
    (callback,) = model.get_training_callbacks(None)
    for step, expected in ((0, 1.0), (25, 0.75), (100, 0.0), (150, 0.0)):
        callback.run_callback(step)
        assert model.field.density_noise_std == pytest.approx(expected)
    assert _model(density_noise_std=0.0).get_training_callbacks(None) == []


def test_volume_on_grid_is_density_over_k_inside_the_sphere():
    model = _model().eval()
    points = torch.tensor([[0.0, 0.0, 0.0], [0.3, -0.2, 0.5], [0.9, 0.9, 0.0], [0.0, 0.0, 1.2]])
    volume = model.volume_on_grid(points, subject=1, points_per_chunk=3)
    assert volume.shape == (4,)
    shape_code = model.subject_codes.weight[1, :8].expand(4, -1)
    density, _ = model.field.density(points, shape_code)
    torch.testing.assert_close(volume[:2], density[:2, 0].detach() / 3.0)
    assert volume[2] == 0 and volume[3] == 0  # |p| > 1: outside the scene
    with pytest.raises(MRIInputError, match="subject"):
        model.volume_on_grid(points, subject=2)


def test_encoder_is_on_for_several_subjects_with_scans_and_residual_codes_start_at_zero(tiny_encoder_model):
    _encoder_model = tiny_encoder_model
    model = _encoder_model()
    assert model.encoder is not None and "encoder" in model.get_param_groups()
    assert not model.subject_codes.weight.any()
    assert _model(num_subjects=2).encoder is None  # no scans in the metadata
    assert _encoder_model(num_subjects=1).encoder is None  # auto: one subject
    assert _encoder_model(num_subjects=1, encoder=SliceEncoderConfig(enabled="on")).encoder is not None
    assert _encoder_model(encoder=SliceEncoderConfig(enabled="off")).encoder is None
    with pytest.raises(MRIInputError, match="no encoder_scans"):
        _model(num_subjects=2, encoder=SliceEncoderConfig(enabled="on"))


def test_codes_are_the_encoder_prediction_plus_the_residual_and_the_encoder_runs_once_per_subject(tiny_encoder_model):
    model = tiny_encoder_model()
    calls = []
    model.encoder.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    subjects = torch.tensor([2, 0, 2, 2, 0])
    codes = model.codes_of(subjects)
    assert calls == [2]
    predicted = model.encoder(model.encoder_scans, model.encoder_present, model.encoder_spacing_mm)
    torch.testing.assert_close(codes, predicted[subjects])
    with torch.no_grad():
        model.subject_codes.weight[0] += 0.5
    torch.testing.assert_close(model.codes_of(torch.tensor([0])), predicted[:1] + 0.5)


def test_viewer_subject_and_modality_dropdowns_change_the_rendering(tiny_encoder_model):
    model = tiny_encoder_model().eval()
    with torch.no_grad():
        model.subject_codes.weight[2] += 1.0
        first = model(_rays(16))
        assert "scan" in first and first["scan"].shape == (16, 3)
        assert 0.0 <= float(first["scan"].min()) and float(first["scan"].max()) <= 1.0
        model.viewer_subject.value = "s2"  # as the viewer's "Subject" dropdown sets it
        second = model(_rays(16))
        assert (first["rgb"] - second["rgb"]).abs().max() > 1e-4
        assert (first["scan"] - second["scan"]).abs().max() > 1e-4
        model.viewer_modality.value = "flair"
        assert (model(_rays(16))["scan"] - second["scan"]).abs().max() > 1e-4
    assert "scan" not in model.train()(_rays(4))
