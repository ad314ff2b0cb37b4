"""Empty-space skipping: the visual hull of the training views (not the brain mask), evaluation only where
occupied, same renders with fewer samples."""

from __future__ import annotations

import copy

import pytest
import torch
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.field_components.field_heads import FieldHeadNames

from mri_nerfstudio import views
from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.nerf.dataparser import MRIDataParserConfig, nerfstudio_cameras
from mri_nerfstudio.nerf.model import MRIMedNeRFModelConfig
from mri_nerfstudio.nerf.occupancy import OccupancyGrid, evaluate_field, hull_of_views
from mri_nerfstudio.nerf.session import TrainingSession
from mri_nerfstudio.prepare import PrepareConfig
from mri_nerfstudio.visual_hull import project_points, visual_hull
from mri_nerfstudio.volume import Volume

SMALL = PrepareConfig(image_size=24)


def _ball(centre: tuple[float, float, float] = (24.0, 20.0, 18.0), size: int = 40, radius_voxels: float = 8.0):
    """A ball of intensity 0.8, ``radius_voxels`` voxels around voxel ``centre`` of a ``size``^3 grid spanning
    [-1, 1]^3, and voxel -> world [4, 4]."""
    index = torch.stack(torch.meshgrid(*[torch.arange(size, dtype=torch.float64)] * 3, indexing="ij"), dim=-1)
    ball = ((index - torch.tensor(centre, dtype=torch.float64)).norm(dim=-1) <= radius_voxels).float() * 0.8
    world_from_voxel = torch.eye(4, dtype=torch.float64)
    world_from_voxel[:3, :3] *= 2.0 / (size - 1)
    world_from_voxel[:3, 3] = -1.0
    return ball, world_from_voxel


def _training_cameras(projection: str = "orthographic", image_size: int = 32) -> views.ViewCameras:
    """The 15 training cameras of the default orbit (every fifth of 72)."""
    orbit = views.make_orbit_cameras(image_size=image_size, projection=projection)
    return views.ViewCameras(orbit.c2w[::5], orbit.width, orbit.height, orbit.projection)


def _hull(images: torch.Tensor, cameras: views.ViewCameras, resolution: int = 64, margin: float = 0.0) -> torch.Tensor:
    return visual_hull(
        images, cameras.c2w, cameras.fx, cameras.fy, cameras.cx, cameras.cy, cameras.projection, resolution, margin
    )


def _cells_of(points: torch.Tensor, resolution: int) -> tuple[torch.Tensor, ...]:
    """Index tuple of the cells of a ``resolution^3`` grid over [-1, 1]^3 holding world ``points`` [P, 3]."""
    cells = ((points + 1.0) * (resolution / 2)).floor().long().clamp(0, resolution - 1)
    return cells[:, 0], cells[:, 1], cells[:, 2]


@pytest.mark.parametrize("projection", ["orthographic", "perspective"])
def test_a_point_on_a_pixel_ray_projects_to_that_pixel(projection):
    """project_points inverts views.generate_rays, the rays the views were rendered with."""
    cameras = views.make_orbit_cameras(
        n_views=8, step_deg=45.0, elevation_deg=20.0, image_size=20, projection=projection
    )
    origins, directions = views.generate_rays(cameras)  # [N, H, W, 3]
    near, far = views.unit_sphere_chord(origins, directions)
    hits = near < far
    for fraction in (0.1, 0.5, 0.9):
        points = origins + (near + fraction * (far - near))[..., None] * directions
        columns, rows, in_front = project_points(
            points[hits], cameras.c2w, cameras.fx, cameras.fy, cameras.cx, cameras.cy, projection
        )
        view, row, column = torch.nonzero(hits).T
        picked = torch.arange(len(view))
        assert in_front[view, picked].all()
        torch.testing.assert_close(columns[view, picked], column.double() + 0.5, atol=1e-4, rtol=0)
        torch.testing.assert_close(rows[view, picked], row.double() + 0.5, atol=1e-4, rtol=0)


@pytest.mark.parametrize("projection", ["orthographic", "perspective"])
def test_hull_of_rendered_views_holds_the_object_and_carves_the_rest(projection):
    ball, world_from_voxel = _ball()
    cameras = _training_cameras(projection)
    images = views.render_views(ball, world_from_voxel, cameras)
    hull = _hull(images, cameras)
    inside = torch.nonzero(ball > 0).double() @ world_from_voxel[:3, :3].T + world_from_voxel[:3, 3]
    assert hull[_cells_of(inside, 64)].all()  # every voxel of the object, with no margin at all
    ball_fraction = float((ball > 0).double().mean()) * (39 / 40) ** 3  # of the cube's volume
    assert ball_fraction < float(hull.double().mean()) < 3 * ball_fraction
    # Each occupied cell's centre projects onto a foreground pixel or next to one, in every view.
    centres = (torch.nonzero(hull).double() + 0.5) / 32 - 1.0
    columns, rows, _ = project_points(centres, cameras.c2w, cameras.fx, cameras.fy, cameras.cx, cameras.cy, projection)
    grown = torch.nn.functional.max_pool2d(images[:, None], 3, stride=1, padding=1)[:, 0] > 0  # 1 pixel around
    seen = grown[torch.arange(len(images))[:, None], rows.long().clamp(0, 31), columns.long().clamp(0, 31)]
    assert seen.all()


def test_the_margin_dilates_the_hull_by_whole_cells():
    ball, world_from_voxel = _ball()
    cameras = _training_cameras()
    images = views.render_views(ball, world_from_voxel, cameras)
    tight, dilated = _hull(images, cameras, 32), _hull(images, cameras, 32, margin=0.1)  # 0.1 = 1.6 cells: 2
    grown = torch.nn.functional.max_pool3d(tight[None, None].float(), 5, stride=1, padding=2)[0, 0] > 0
    assert torch.equal(dilated, grown)


def test_cells_projecting_past_the_image_border_are_kept():
    """A view sees nothing past its border: a cell there is not known to be empty."""
    camera = _training_cameras().c2w[:1]  # azimuth 0: image x = world -x, image y = world z
    background = torch.zeros(1, 16, 16)
    # Zoomed in twice: the 16 px image spans only [-0.5, 0.5] world units across.
    hull = visual_hull(background, camera, 16.0, 16.0, 8.0, 8.0, "orthographic", resolution=8, margin=0.0)
    centres = (torch.arange(8) + 0.5) / 4 - 1.0
    seen = centres.abs() + 0.125 <= 0.5  # the whole cell projects inside the image
    assert not hull[seen][:, :, seen].any()  # seen as background: carved at every depth
    assert hull[~seen].all() and hull[:, :, ~seen].all()  # partly or wholly past the border: kept


def test_a_one_pixel_object_keeps_every_cell_its_pixel_touches():
    camera = _training_cameras().c2w[:1]
    image = torch.zeros(1, 16, 16)
    image[0, 5, 9] = 0.5
    hull = visual_hull(image, camera, 8.0, 8.0, 8.0, 8.0, "orthographic", resolution=32, margin=0.0)
    # Pixel (row 5, column 9) covers camera x in [1/8, 2/8] = world x in [-2/8, -1/8] (the camera looks along
    # -y, its right is world -x) and camera y = world z in [2/8, 3/8] (row 0 at the top).
    lower, upper = torch.arange(32) / 16 - 1, (torch.arange(32) + 1) / 16 - 1  # the cells' extents

    def cells_overlapping(low: float, high: float) -> torch.Tensor:
        return torch.arange(32)[(upper > low) & (lower < high)]

    x_cells, z_cells = cells_overlapping(-0.25, -0.125), cells_overlapping(0.25, 0.375)
    expected = torch.zeros(32, 32, 32, dtype=torch.bool)
    expected[x_cells[:, None], :, z_cells[None, :]] = True  # along the ray (world y), at every depth
    # Cells touching the pixel's edge are kept too (pixel squares are closed on the far side: conservative).
    assert (hull >= expected).all()
    assert hull.sum() <= 4 * expected.sum()


def test_bad_hull_input_is_refused():
    cameras = _training_cameras()
    images = torch.zeros(15, 32, 32)
    images[:, 10:20, 10:20] = 1.0
    with pytest.raises(MRIInputError, match="views must be"):
        _hull(images[0], cameras)
    with pytest.raises(MRIInputError, match="one per view"):
        _hull(images[:3], cameras)
    with pytest.raises(MRIInputError, match="c2w must be"):
        visual_hull(images, cameras.c2w[:, :2], 16.0, 16.0, 16.0, 16.0, "orthographic", 16, 0.0)
    with pytest.raises(MRIInputError, match="projection must be"):
        visual_hull(images, cameras.c2w, 16.0, 16.0, 16.0, 16.0, "fisheye", 16, 0.0)
    with pytest.raises(MRIInputError, match="fx and fy must be > 0"):
        visual_hull(images, cameras.c2w, 0.0, 16.0, 16.0, 16.0, "orthographic", 16, 0.0)
    with pytest.raises(MRIInputError, match="margin must be"):
        _hull(images, cameras, 16, margin=-0.1)
    with pytest.raises(MRIInputError, match="every cell projects to background"):
        _hull(torch.zeros(15, 32, 32), cameras)
    with pytest.raises(MRIInputError, match="one of each per subject"):
        OccupancyGrid.from_training_views([images], [], 16, 0.0)
    with pytest.raises(MRIInputError, match="no subject has training views"):
        OccupancyGrid.from_training_views([None], [None], 16, 0.0)


def test_each_subject_reads_its_own_grid_and_an_untrained_one_the_union():
    cameras = _training_cameras()
    grids = []
    for centre in ((30.0, 20.0, 18.0), (8.0, 20.0, 18.0)):  # balls at x = +0.54 and x = -0.59
        ball, world_from_voxel = _ball(centre)
        grids.append(views.render_views(ball, world_from_voxel, cameras))
    ns_cameras = nerfstudio_cameras(cameras)
    grid = OccupancyGrid.from_training_views([grids[0], grids[1], None], [ns_cameras, ns_cameras, None], 16, 0.0)
    right, left = torch.tensor([[0.54, 0.0, -0.1]]), torch.tensor([[-0.59, 0.0, -0.1]])
    assert grid.occupied(right, torch.tensor([0])).item() and not grid.occupied(right, torch.tensor([1])).item()
    assert grid.occupied(left, torch.tensor([1])).item() and not grid.occupied(left, torch.tensor([0])).item()
    assert torch.equal(grid.grids[2], grid.grids[0] | grid.grids[1])  # held out of training: the union
    assert not grid.occupied(torch.tensor([[1.5, 0.0, 0.0]]), torch.tensor([0])).any()  # outside the cube


@pytest.fixture(scope="module")
def phantom_parser(phantom_root, tmp_path_factory):
    """The mri-data parser of the two tiny phantoms (24 px views), BraTS2021_00001 held out of training."""
    config = MRIDataParserConfig(
        data=phantom_root, cache_dir=tmp_path_factory.mktemp("cache"), prepare=SMALL, train_subjects=("1",)
    )
    return config.setup()


def _model_occupancy(parser) -> OccupancyGrid:
    """The occupancy grid the shipped model config builds from the parser's training metadata."""
    metadata = parser.get_dataparser_outputs("train").metadata
    scene_box = SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
    model = MRIMedNeRFModelConfig(preset="cpu").setup(scene_box=scene_box, num_train_data=15, metadata=metadata)
    return model.occupancy


def test_the_hull_of_15_phantom_views_holds_every_brain_voxel(phantom_parser):
    """Containment: every voxel of the phantom's brain mask lies in an occupied cell of the hull of its 15
    training views at the model's default resolution and margin; without the margin, all but a few dim rim
    voxels that fall between the 24 px views' rays (what the margin is for)."""
    subject = phantom_parser.subjects[0]
    metadata = phantom_parser.get_dataparser_outputs("train").metadata
    images, cameras = metadata["training_views"][0], metadata["training_cameras"][0]
    assert images.shape == (15, 24, 24)
    mask = torch.from_numpy(subject.volume.brain_mask())
    transform = torch.from_numpy(subject.world_from_voxel)
    brain = torch.nonzero(mask).double() @ transform[:3, :3].T + transform[:3, 3]
    defaults = MRIMedNeRFModelConfig()
    resolution, margin = defaults.occupancy_resolution, defaults.occupancy_margin
    hull = hull_of_views(images, cameras, resolution, margin)
    assert hull[_cells_of(brain, resolution)].all()
    tight = hull_of_views(images, cameras, resolution, 0.0)
    assert tight[_cells_of(brain, resolution)].double().mean() > 0.999
    # Much smaller than the cube; printed with -s (brain cells 0.11, hull 0.33, hull + margin 0.46 on 2026-12-06).
    brain_cells = torch.zeros_like(hull).index_put_(_cells_of(brain, resolution), torch.tensor(True))
    brain_fraction = float(brain_cells.double().mean())
    print(f"occupied fraction of the cube: brain cells {brain_fraction:.3f}, hull {float(tight.double().mean()):.3f}, "
          f"hull + {margin} margin {float(hull.double().mean()):.3f}")
    assert float(hull.double().mean()) < 0.5


def test_the_model_occupancy_never_reads_a_brain_mask(phantom_parser, monkeypatch):
    """The model's grid comes from the training views alone: with every brain mask unreadable (the cache is
    warm, so nothing is prepared again) the same grid is built; the held-out subject gets the union."""
    before = _model_occupancy(phantom_parser).grids.clone()
    parser = copy.deepcopy(phantom_parser)
    parser._subjects = None  # load the prepared subjects again, from the cache

    def unreadable(self):
        raise AssertionError("a brain mask was read")

    monkeypatch.setattr(Volume, "brain_mask", unreadable)
    after = _model_occupancy(parser)
    assert torch.equal(after.grids, before)
    metadata = parser.get_dataparser_outputs("train").metadata
    assert metadata["training_views"][1] is None and metadata["training_cameras"][1] is None
    assert "brain_masks" not in metadata
    assert torch.equal(after.grids[1], after.grids[0])  # the held-out subject: the training subjects' union


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
    codes, subjects = model.subject_codes.weight[0].expand(64, -1), torch.zeros(64, dtype=torch.long)
    ray_samples = model._conditioned(model.sampler(model.collider(rays)), codes, subjects)
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
    codes, subjects = model.subject_codes.weight[0].expand(64, -1), torch.zeros(64, dtype=torch.long)
    ray_samples = model._conditioned(model.sampler(model.collider(rays)), codes, subjects)
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
