"""Per-subject feature grids: interpolation per subject, zero start, the model's shape code and training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.data.scene_box import SceneBox

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.nerf.field import trilinear_interpolation
from mri_nerfstudio.nerf.model import MRIMedNeRFModelConfig
from mri_nerfstudio.nerf.subject_grids import SubjectFeatureGrids, vertex_tables

TINY = dict(preset="cpu", grid_resolutions=(4, 8), grid_channels=2, grid_width=8, num_samples=8)
SCENE_BOX = SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))


def _model(num_subjects: int, **overrides):
    torch.manual_seed(0)
    config = MRIMedNeRFModelConfig(**{**TINY, **overrides})
    metadata = {"view_mode": "volume", "density_scale": 3.0, "subject_names": [f"s{i}" for i in range(num_subjects)]}
    return config.setup(scene_box=SCENE_BOX, num_train_data=4, metadata=metadata)


def _rays(subjects: list[int]) -> RayBundle:
    """Parallel rays along -y, spread over the sphere's silhouette, one subject each."""
    count = len(subjects)
    xz = (torch.rand(count, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1) * 0.8
    return RayBundle(
        origins=torch.stack([xz[:, 0], torch.full((count,), 4.0), xz[:, 1]], dim=-1),
        directions=torch.tensor([0.0, -1.0, 0.0]).expand(count, 3).clone(),
        pixel_area=torch.ones(count, 1),
        metadata={"subject_index": torch.tensor(subjects, dtype=torch.float32)[:, None]},
    )


def test_each_point_reads_its_own_subjects_grid():
    grids = SubjectFeatureGrids(num_subjects=3, resolution=5, channels=2)
    with torch.no_grad():
        grids.tables.normal_()
    points = torch.rand(4, 6, 3) * 2 - 1
    subjects = torch.tensor([2, 0, 1, 2])[:, None]  # per ray, broadcast over its 6 samples
    features = grids(points, subjects)
    assert features.shape == (4, 6, 2)
    for ray, subject in enumerate([2, 0, 1, 2]):
        expected = trilinear_interpolation(grids.tables[subject], 5, points[ray])
        torch.testing.assert_close(features[ray], expected)


def test_vertex_tables_sample_a_working_grid_volume_at_the_grid_vertices():
    """A volume equal to world x (channel 0) and world z (channel 1) at its cell centres, axes (z, x, y)."""
    g, r = 8, 5
    centres = (torch.arange(g) + 0.5) / g * 2 - 1
    z, x, _ = torch.meshgrid(centres, centres, centres, indexing="ij")
    tables = vertex_tables(torch.stack([x, z])[None], r)
    assert tables.shape == (1, r**3, 2)
    vertices = torch.linspace(-1, 1, r)
    i, j, k = torch.meshgrid(torch.arange(r), torch.arange(r), torch.arange(r), indexing="ij")
    inner = ((i > 0) & (i < r - 1) & (k > 0) & (k < r - 1)).flatten()  # beyond the outer centres: the border value
    torch.testing.assert_close(tables[0, inner, 0], vertices[i.flatten()[inner]])
    torch.testing.assert_close(tables[0, inner, 1], vertices[k.flatten()[inner]])
    torch.testing.assert_close(tables[0, ~inner].abs().max(), torch.tensor(1 - 1 / g))
    # Read back through the subject grids' interpolation: the same linear function inside the inner vertices.
    points = torch.rand(20, 3) - 0.5
    torch.testing.assert_close(trilinear_interpolation(tables[0], r, points), points[:, [0, 2]])


def test_grids_start_at_zero_and_refuse_bad_sizes():
    grids = SubjectFeatureGrids(2, 4, 3)
    assert grids(torch.rand(10, 3), torch.tensor(1)).abs().max() == 0
    assert float(grids.total_variation()) == 0.0
    with pytest.raises(ValueError, match="resolution >= 2"):
        SubjectFeatureGrids(2, 1, 3)


def test_model_builds_subject_grids_only_for_several_subjects():
    assert _model(1, subject_grid_resolution=6).subject_grids is None
    assert _model(3).subject_grids is None  # off by default in the model config
    model = _model(3, subject_grid_resolution=6, subject_grid_channels=2)
    assert model.subject_grids.tables.shape == (3, 6**3, 2)
    assert model.field.backbone.shape_code_dim == model.preset.shape_code_dim + 2
    grouped = {id(p) for params in model.get_param_groups().values() for p in params}
    assert id(model.subject_grids.tables) in grouped
    with pytest.raises(MRIInputError, match="subject_grid_resolution must be 0"):
        _model(3, subject_grid_resolution=1)
    with pytest.raises(MRIInputError, match="subject_grid_channels >= 1, got 6 and 0"):
        _model(3, subject_grid_resolution=6, subject_grid_channels=0)


def test_a_subjects_grid_changes_only_that_subjects_renders_and_volume():
    model = _model(2, subject_grid_resolution=6, subject_grid_channels=2)
    model.eval()
    before = model(_rays([0, 0, 1, 1]))["rgb"]
    points = torch.rand(50, 3) - 0.5
    volume_before = model.volume_on_grid(points, subject=0)
    with torch.no_grad():
        model.subject_grids.tables[1].normal_()
    after = model(_rays([0, 0, 1, 1]))["rgb"]
    torch.testing.assert_close(after[:2], before[:2])
    assert (after[2:] - before[2:]).abs().max() > 1e-4
    torch.testing.assert_close(model.volume_on_grid(points, subject=0), volume_before)
    assert (model.volume_on_grid(points, subject=1) - model.volume_on_grid(points, subject=0)).abs().max() > 1e-4


def test_training_fills_the_trained_subjects_grid_and_leaves_the_others_at_zero():
    model = _model(3, subject_grid_resolution=6, subject_grid_channels=2)
    model.train()
    optimizer = torch.optim.Adam([p for params in model.get_param_groups().values() for p in params], lr=1e-2)
    bundle = _rays([0] * 32 + [1] * 32)
    target = torch.linspace(0.2, 0.8, 64)[:, None].expand(-1, 3)
    losses = []
    for _ in range(30):
        outputs = model(bundle)
        loss = F.mse_loss(outputs["rgb"], target) + sum(model.get_loss_dict(outputs, {"image": target}).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]
    tables = model.subject_grids.tables.detach()
    assert tables[0].abs().max() > 0 and tables[1].abs().max() > 0
    assert tables[2].abs().max() == 0  # never trained on: it renders from its code alone
