"""Empty-space skipping: grids from brain masks, evaluation only where occupied, same renders with fewer samples."""

from __future__ import annotations

import pytest
import torch
from nerfstudio.field_components.field_heads import FieldHeadNames

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.nerf.occupancy import OccupancyGrid, evaluate_field, occupancy_from_mask
from mri_nerfstudio.nerf.session import TrainingSession


def _ball_mask(centre: tuple[float, float, float] = (24.0, 20.0, 18.0), size: int = 40, radius_voxels: float = 10.0):
    """A ball of ``radius_voxels`` voxels around voxel ``centre``, and voxel -> world (voxel 0.05 world units)."""
    index = torch.stack(torch.meshgrid(*[torch.arange(size, dtype=torch.float64)] * 3, indexing="ij"), dim=-1)
    centre = torch.tensor(centre, dtype=torch.float64)
    mask = (index - centre).norm(dim=-1) <= radius_voxels
    world_from_voxel = torch.eye(4, dtype=torch.float64)
    world_from_voxel[:3, :3] *= 2.0 / size
    world_from_voxel[:3, 3] = -1.0
    return mask, world_from_voxel


def test_grid_covers_the_mask_plus_margin_and_nothing_far():
    mask, world_from_voxel = _ball_mask()
    margin, resolution = 0.1, 32
    grid = OccupancyGrid(occupancy_from_mask(mask, world_from_voxel, resolution, margin)[None])
    mask_world = torch.nonzero(mask).double() @ world_from_voxel[:3, :3].T + world_from_voxel[:3, 3]
    points = torch.rand(20_000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    distance = torch.cdist(points, mask_world).min(dim=-1).values
    occupied = grid.occupied(points, torch.zeros(len(points), dtype=torch.long))

    assert occupied[distance <= margin].all()
    assert not occupied[distance > 0.5].any()
    assert 0.0 < grid.occupied_fraction() < 0.3
    assert not grid.occupied(torch.tensor([[1.5, 0.0, 0.0]]), torch.zeros(1, dtype=torch.long)).any()


def test_each_subject_reads_its_own_grid():
    mask, world_from_voxel = _ball_mask()
    shifted, _ = _ball_mask(centre=(8.0, 20.0, 18.0))  # the same ball at x = -0.6 instead of 0.2
    grid = OccupancyGrid.from_brain_masks([mask, shifted], [world_from_voxel] * 2, resolution=16, margin=0.0)
    centre = torch.tensor([[0.2, 0.0, -0.1]])
    assert grid.occupied(centre, torch.tensor([0])).item() and not grid.occupied(centre, torch.tensor([1])).item()


def test_bad_masks_are_refused():
    mask, world_from_voxel = _ball_mask()
    with pytest.raises(MRIInputError, match="brain mask is empty"):
        occupancy_from_mask(torch.zeros_like(mask), world_from_voxel, 16, 0.0)
    with pytest.raises(MRIInputError, match="world_from_voxel must be"):
        occupancy_from_mask(mask, world_from_voxel[:3], 16, 0.0)
    with pytest.raises(MRIInputError, match="one of each per subject"):
        OccupancyGrid.from_brain_masks([mask, mask], [world_from_voxel], 16, 0.0)


@pytest.fixture(scope="module")
def trained_without_skipping(tiny_method_config, phantom_subject_dir, tmp_path_factory) -> TrainingSession:
    """The tiny CPU method trained 150 steps on a phantom with every sample evaluated."""
    tmp = tmp_path_factory.mktemp("occupancy")
    config = tiny_method_config(phantom_subject_dir, tmp / "cache")
    config.pipeline.model.skip_empty_space = True  # builds the grid; switched off for training below
    session = TrainingSession(config, tmp / "outputs")
    session.pipeline.model.config.skip_empty_space = False
    for _ in range(150):
        session.step()
    return session


def _render_counting_samples(session: TrainingSession, skip: bool) -> tuple[torch.Tensor, int]:
    """Held-out view 10 rendered [H, W, 3], and the number of samples the field evaluated."""
    model = session.pipeline.model
    model.config.skip_empty_space = skip
    counted = []
    hook = model.field.backbone.density_mlp.register_forward_hook(lambda _m, inputs, _o: counted.append(len(inputs[0])))
    try:
        model.eval()
        camera = session.pipeline.datamanager.eval_dataset.cameras[10:11]
        with torch.no_grad():
            rgb = model.get_outputs_for_camera(camera)["rgb"]
    finally:
        hook.remove()
        model.config.skip_empty_space = False
    return rgb, sum(counted)


def test_skipping_renders_the_same_image_from_fewer_samples(trained_without_skipping):
    session = trained_without_skipping
    full, full_samples = _render_counting_samples(session, skip=False)
    skipped, skipped_samples = _render_counting_samples(session, skip=True)
    target = session.pipeline.datamanager.eval_dataset[10]["image"][..., :3]

    def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(-10 * torch.log10(((a - b) ** 2).mean()))

    assert psnr(full, target) > 20.0  # the field learned the brain
    assert psnr(skipped, full) > 35.0, psnr(skipped, full)
    assert abs(psnr(skipped, target) - psnr(full, target)) < 0.3
    assert skipped_samples < 0.7 * full_samples, (skipped_samples, full_samples)


def test_evaluate_field_matches_the_field_where_occupied_and_is_zero_elsewhere(trained_without_skipping):
    model = trained_without_skipping.pipeline.model.eval()
    camera = trained_without_skipping.pipeline.datamanager.eval_dataset.cameras[0:1]
    rays = camera.generate_rays(camera_indices=0).flatten()[:64]
    ray_samples = model._conditioned(model.sampler(model.collider(rays)), model.subject_codes.weight[0].expand(64, -1))
    occupied = torch.rand(ray_samples.shape, generator=torch.Generator().manual_seed(0)) < 0.5
    with torch.no_grad():
        full = evaluate_field(model.field, ray_samples)
        partial = evaluate_field(model.field, ray_samples, occupied)
    for name in (FieldHeadNames.DENSITY, FieldHeadNames.RGB):
        assert partial[name].dtype == torch.float32
        torch.testing.assert_close(partial[name][occupied], full[name][occupied])
        assert (partial[name][~occupied] == 0).all()


def test_field_outputs_are_float32_under_autocast(trained_without_skipping):
    """Mixed precision (CUDA's fp16 autocast; bfloat16 here on CPU) must not reach the renderer."""
    model = trained_without_skipping.pipeline.model.eval()
    camera = trained_without_skipping.pipeline.datamanager.eval_dataset.cameras[0:1]
    rays = camera.generate_rays(camera_indices=0).flatten()[:64]
    ray_samples = model._conditioned(model.sampler(model.collider(rays)), model.subject_codes.weight[0].expand(64, -1))
    occupied = torch.ones(ray_samples.shape, dtype=torch.bool)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        head = model.field.backbone.density_head
        assert head(torch.zeros(1, head.in_features)).dtype == torch.bfloat16  # autocast is really on
        for outputs in (evaluate_field(model.field, ray_samples), evaluate_field(model.field, ray_samples, occupied)):
            assert all(value.dtype == torch.float32 for value in outputs.values())
        rendered = model(rays)
    assert rendered["rgb"].dtype == torch.float32 and torch.isfinite(rendered["rgb"]).all()


def test_the_volume_is_zero_in_skipped_space(trained_without_skipping):
    model = trained_without_skipping.pipeline.model
    grid = model.occupancy.grids[0]
    empty = torch.nonzero(~grid)  # cells far from the brain, some of them inside the unit sphere
    centres = (empty.float() + 0.5) * (2.0 / grid.shape[0]) - 1.0
    centres = centres[centres.norm(dim=-1) < 0.95][:50]
    assert len(centres) > 0
    model.config.skip_empty_space = True
    try:
        assert (model.volume_on_grid(centres) == 0).all()
    finally:
        model.config.skip_empty_space = False
    assert (model.volume_on_grid(centres) > 0).any()  # softplus density: never exactly 0 unless skipped
