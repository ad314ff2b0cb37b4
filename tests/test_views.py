"""The orbit of views, nerfstudio-exact rays and the projection renderer."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from mri_nerfstudio import views
from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.views import (
    DEFAULT_DENSITY_SCALE,
    IDENTITY_ROTATION,
    SceneNormalization,
    ViewCameras,
    generate_rays,
    make_orbit_cameras,
    orbit_poses,
    poses_looking_at_origin,
    render_views,
    scene_normalization,
)


def _cube_grid(n: int) -> torch.Tensor:
    """world_from_voxel [4, 4] putting an n^3 grid's voxel centres on [-1, 1]^3."""
    world_from_voxel = torch.eye(4, dtype=torch.float64)
    world_from_voxel[:3, :3] *= 2.0 / (n - 1)
    world_from_voxel[:3, 3] = -1.0
    return world_from_voxel


def _sphere_phantom(n: int, radius: float, intensity: float) -> torch.Tensor:
    """[n, n, n] uniform ball on the grid of :func:`_cube_grid`, its rim a one-voxel linear ramp.

    The ramp is centred on ``radius``, so the integral of the volume along a chord is the chord's
    length through the ideal ball up to O(voxel^2 / radius).
    """
    coords = torch.linspace(-1.0, 1.0, n, dtype=torch.float64)
    x, y, z = torch.meshgrid(coords, coords, coords, indexing="ij")
    distance = (x**2 + y**2 + z**2).sqrt()
    voxel = 2.0 / (n - 1)
    return (intensity * ((radius - distance) / voxel + 0.5).clamp(0.0, 1.0)).float()


def _chord_lengths(cameras: ViewCameras, radius: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance of each pixel's ray from the origin, and its chord through a centred ball: [N, H, W]."""
    origins, directions = generate_rays(cameras)
    distance = torch.linalg.cross(origins, directions, dim=-1).norm(dim=-1)
    return distance, 2.0 * (radius**2 - distance**2).clamp(min=0.0).sqrt()


# --- poses -------------------------------------------------------------------------------------


def test_orbit_poses_step_exactly_around_world_z():
    radius, elevation = 3.0, 20.0
    c2w = orbit_poses(n_views=72, step_deg=5.0, elevation_deg=elevation, radius=radius).double()
    assert c2w.shape == (72, 3, 4)
    rotation, position = c2w[:, :, :3], c2w[:, :, 3]

    torch.testing.assert_close(position.norm(dim=-1), torch.full((72,), radius, dtype=torch.float64))
    torch.testing.assert_close(position[:, 2], torch.full((72,), radius * math.sin(math.radians(elevation))).double())
    # Consecutive cameras: +5 degrees about +Z (counter-clockwise seen from above), float32 poses.
    azimuth = torch.rad2deg(torch.atan2(-position[:, 0], position[:, 1]))
    step = torch.remainder(azimuth.diff() + 180.0, 360.0) - 180.0
    torch.testing.assert_close(step, torch.full((71,), 5.0, dtype=torch.float64), atol=1e-4, rtol=0)
    torch.testing.assert_close(azimuth[0], torch.tensor(0.0, dtype=torch.float64), atol=1e-6, rtol=0)
    # Each camera looks at the origin (OpenGL: along -Z), without roll (image x stays horizontal).
    torch.testing.assert_close(-rotation[:, :, 2], -position / radius, atol=1e-6, rtol=0)
    assert rotation[:, 2, 0].abs().max() < 1e-6
    assert (rotation[:, 2, 1] > 0).all()
    identity = torch.eye(3, dtype=torch.float64).expand(72, 3, 3)
    torch.testing.assert_close(rotation.transpose(1, 2) @ rotation, identity, atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.linalg.det(rotation), torch.ones(72, dtype=torch.float64), atol=1e-6, rtol=0)


def test_orbit_starts_frontal_and_turns_to_the_left():
    c2w = orbit_poses(n_views=4, step_deg=90.0, elevation_deg=0.0, radius=4.0)
    expected_positions = torch.tensor([[0.0, 4.0, 0.0], [-4.0, 0.0, 0.0], [0.0, -4.0, 0.0], [4.0, 0.0, 0.0]])
    torch.testing.assert_close(c2w[:, :, 3], expected_positions, atol=1e-5, rtol=0)
    # View 0 is a frontal view: image right = subject's left (-X), image up = superior (+Z).
    torch.testing.assert_close(c2w[0, :, 0], torch.tensor([-1.0, 0.0, 0.0]))
    torch.testing.assert_close(c2w[0, :, 1], torch.tensor([0.0, 0.0, 1.0]))


def test_poses_can_be_kept_in_float64():
    azimuth, elevation = [0.0, 37.0, 250.0], [0.0, 10.0, -60.0]
    exact = poses_looking_at_origin(azimuth, elevation, 4.0, dtype=torch.float64)
    assert exact.dtype == torch.float64
    torch.testing.assert_close(exact.float(), poses_looking_at_origin(azimuth, elevation, 4.0), atol=0, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_views": 0}, "n_views"),
        ({"elevation_deg": 90.0}, "elevation_deg"),
        ({"elevation_deg": -95.0}, "elevation_deg"),
        ({"radius": 1.0}, "radius"),
        ({"step_deg": math.nan}, "step_deg"),
    ],
)
def test_orbit_poses_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        orbit_poses(**kwargs)


# --- scene normalization ---------------------------------------------------------------------


def test_scene_normalization_puts_the_mask_in_the_unit_sphere():
    rng = np.random.default_rng(0)
    mask = np.zeros((20, 24, 16), dtype=bool)
    mask[3:15, 5:22, 2:12] = rng.random((12, 17, 10)) > 0.3
    # Anisotropic, oblique voxel -> RAS affine.
    angle = math.radians(25.0)
    affine = np.eye(4)
    affine[:3, :3] = np.array(
        [[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0], [0.0, 0.0, 1.0]]
    ) @ np.diag([1.2, 0.9, 3.0])
    affine[:3, 3] = [-40.0, 12.5, 7.0]
    normalization = scene_normalization(mask, affine, margin=1.05)

    voxels = np.argwhere(mask)
    world = np.c_[voxels, np.ones(len(voxels))] @ normalization.world_from_voxel(affine).T
    distance = np.linalg.norm(world[:, :3], axis=1)
    # The farthest mask voxel centre sits exactly at 1 / margin: inside, and not too loose.
    np.testing.assert_allclose(distance.max(), 1.0 / 1.05, rtol=1e-12)
    np.testing.assert_allclose(normalization.world_from_ras() @ normalization.ras_from_world(), np.eye(4), atol=1e-12)
    np.testing.assert_allclose(normalization.ras_from_world() @ normalization.world_from_ras(), np.eye(4), atol=1e-12)


def test_a_rotated_normalization_takes_a_tilted_brain_to_the_untilted_ones_world():
    rng = np.random.default_rng(1)
    mask = np.zeros((20, 24, 16), dtype=bool)
    mask[3:15, 5:22, 2:12] = rng.random((12, 17, 10)) > 0.3
    affine = np.diag([1.2, 0.9, 3.0, 1.0])
    angle = math.radians(20.0)
    cos, sin = math.cos(angle), math.sin(angle)
    tilt = np.array([[1.0, 0.0, 0.0], [0.0, cos, -sin], [0.0, sin, cos]])
    tilted_affine = np.eye(4)
    tilted_affine[:3, :3] = tilt
    tilted_affine[:3, 3] = [5.0, -8.0, 30.0]
    tilted_affine = tilted_affine @ affine
    straight = scene_normalization(mask, affine)
    turned = scene_normalization(mask, tilted_affine, rotation=tilt.T)
    # every voxel lands where it lands for the untilted brain: the world frame follows the brain
    np.testing.assert_allclose(turned.world_from_voxel(tilted_affine), straight.world_from_voxel(affine), atol=1e-9)
    np.testing.assert_allclose(turned.ras_from_world() @ turned.world_from_ras(), np.eye(4), atol=1e-12)


def test_normalization_json_round_trips_and_reads_folders_without_a_rotation():
    angle = math.radians(12.0)
    rotation = [[math.cos(angle), 0.0, math.sin(angle)], [0.0, 1.0, 0.0], [-math.sin(angle), 0.0, math.cos(angle)]]
    normalization = SceneNormalization((1.0, -2.0, 3.5), 80.0, rotation)
    values = json.loads(json.dumps(normalization.to_json()))
    assert SceneNormalization.from_json(values) == normalization
    np.testing.assert_allclose(values["world_from_ras"], normalization.world_from_ras())
    del values["rotation"]  # a folder prepared before rotations were recorded
    assert SceneNormalization.from_json(values).rotation == IDENTITY_ROTATION
    with pytest.raises(ValueError, match="rotation matrix"):
        SceneNormalization((0.0, 0.0, 0.0), 1.0, np.diag([-1.0, 1.0, 1.0]))  # a reflection


def test_scene_normalization_rejects_bad_masks():
    with pytest.raises(ValueError, match="empty"):
        scene_normalization(np.zeros((4, 4, 4), dtype=bool), np.eye(4))
    with pytest.raises(ValueError, match="3D"):
        scene_normalization(np.ones((4, 4), dtype=bool), np.eye(4))
    with pytest.raises(ValueError, match="margin"):
        scene_normalization(np.ones((4, 4, 4), dtype=bool), np.eye(4), margin=0.9)


# --- cameras and rays --------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Using a non-tuple sequence:UserWarning")  # inside nerfstudio 1.1.5
@pytest.mark.parametrize("projection", ["orthographic", "perspective"])
def test_rays_match_nerfstudio(projection):
    cameras_module = pytest.importorskip("nerfstudio.cameras.cameras")
    c2w = orbit_poses(n_views=3, step_deg=37.0, elevation_deg=15.0, radius=3.0)
    cameras = ViewCameras(c2w, width=24, height=16, projection=projection)
    camera_type = {
        "orthographic": cameras_module.CameraType.ORTHOPHOTO,
        "perspective": cameras_module.CameraType.PERSPECTIVE,
    }[projection]
    reference = cameras_module.Cameras(
        camera_to_worlds=c2w,
        fx=cameras.fx,
        fy=cameras.fy,
        cx=cameras.cx,
        cy=cameras.cy,
        width=cameras.width,
        height=cameras.height,
        camera_type=camera_type,
    )
    origins, directions = generate_rays(cameras)
    assert origins.shape == directions.shape == (3, 16, 24, 3)
    for i in range(3):
        bundle = reference.generate_rays(camera_indices=i)
        torch.testing.assert_close(origins[i], bundle.origins, atol=1e-6, rtol=0)
        torch.testing.assert_close(directions[i], bundle.directions, atol=1e-6, rtol=0)


@pytest.mark.parametrize("projection", ["orthographic", "perspective"])
def test_intrinsics_fit_the_unit_sphere_to_the_image(projection):
    size = 64
    cameras = make_orbit_cameras(n_views=1, radius=2.5, image_size=size, projection=projection)
    origins, directions = generate_rays(cameras)
    distance = torch.linalg.cross(origins[0], directions[0], dim=-1).norm(dim=-1)
    # The middle row's edge pixels lie half a pixel inside the image border, which touches the sphere.
    half_pixel = 0.5 / cameras.fx
    border = distance[size // 2, [0, -1]]
    if projection == "orthographic":
        torch.testing.assert_close(border, torch.full((2,), 1.0 - half_pixel), atol=2e-3, rtol=0)
    else:
        assert ((border < 1.0) & (border > 1.0 - 2 * half_pixel * cameras.distance)).all()


def test_cameras_json_round_trip():
    cameras = make_orbit_cameras(n_views=6, step_deg=60.0, elevation_deg=10.0, image_size=32, projection="perspective")
    data = json.loads(json.dumps(cameras.to_json()))
    assert data["camera_model"] == "PERSPECTIVE"
    assert (data["w"], data["h"], data["cx"], data["cy"]) == (32, 32, 16.0, 16.0)
    assert [frame["azimuth_deg"] for frame in data["frames"]] == pytest.approx([0, 60, 120, 180, 240, 300], abs=1e-4)
    assert np.asarray(data["frames"][1]["transform_matrix"])[3].tolist() == [0.0, 0.0, 0.0, 1.0]

    restored = ViewCameras.from_json(data)
    torch.testing.assert_close(restored.c2w, cameras.c2w, atol=0, rtol=0)
    assert (restored.width, restored.height, restored.projection) == (32, 32, "perspective")
    assert restored.fx == pytest.approx(cameras.fx)


def test_cameras_json_rejects_inconsistent_data():
    data = make_orbit_cameras(n_views=2, image_size=16).to_json()
    with pytest.raises(MRIInputError, match="camera_model"):
        ViewCameras.from_json({**data, "camera_model": "FISHEYE"})
    with pytest.raises(MRIInputError, match="fl_x"):
        ViewCameras.from_json({**data, "fl_x": 3.0})
    with pytest.raises(MRIInputError, match="frames"):
        ViewCameras.from_json({key: value for key, value in data.items() if key != "frames"})


# --- renderer ----------------------------------------------------------------------------------


def test_mip_of_opposite_views_are_mirror_images():
    generator = torch.Generator().manual_seed(0)
    volume = torch.rand(20, 24, 18, generator=generator)
    volume[:8] *= 0.3  # the subject's left (-X) darker: the views are far from symmetric
    world_from_voxel = torch.diag(torch.tensor([0.08, 0.07, 0.09, 1.0], dtype=torch.float64))
    world_from_voxel[:3, 3] = torch.tensor([-0.76, -0.805, -0.765], dtype=torch.float64)
    orbit = make_orbit_cameras(n_views=72, image_size=32)
    cameras = orbit.subset([0, 36])
    assert (cameras.width, cameras.height, cameras.projection) == (32, 32, orbit.projection)
    assert torch.equal(cameras.c2w, orbit.c2w[[0, 36]])

    front, back = render_views(volume, world_from_voxel, cameras, mode="mip")
    # Both views meet the same points, up to float32 rounding of their coordinates (~1e-5 voxel).
    torch.testing.assert_close(back, front.flip(-1), atol=1e-4, rtol=0)
    assert (front - front.flip(-1)).abs().max() > 0.1


@pytest.mark.parametrize("elevation_deg", [0.0, 30.0])  # rays in axial planes (2D atlas path) or not
def test_uniform_ball_matches_closed_form(elevation_deg):
    n, radius, intensity, k = 64, 0.8, 0.5, DEFAULT_DENSITY_SCALE
    volume = _sphere_phantom(n, radius, intensity)
    cameras = make_orbit_cameras(n_views=2, step_deg=45.0, elevation_deg=elevation_deg, image_size=32)
    distance, chord = _chord_lengths(cameras, radius)
    drr = render_views(volume, _cube_grid(n), cameras, mode="drr", density_scale=k)
    rendered = render_views(volume, _cube_grid(n), cameras, mode="volume", density_scale=k)

    # Away from the rim (d < 0.8 R, 2 x 332 pixels), the closed forms hold up to voxelisation: the
    # drr integrates the symmetric ramp to the exact chord (O(voxel^2 / R) error), while the volume
    # image loses k c^2 w / 6 / cos(incidence) ~ 0.015 to the dim, half-transparent rim of width
    # w ~ 2 voxels where the ray enters the ball.
    inner = distance < 0.8 * radius
    attenuation = 1.0 - torch.exp(-k * intensity * chord)
    assert (drr - attenuation)[inner].abs().max() < 5e-3
    assert (rendered - intensity * attenuation)[inner].abs().max() < 0.02
    # Rays that miss the ramp and its trilinear reach (half a voxel + a voxel diagonal) see nothing.
    outside = distance > radius + (0.5 + math.sqrt(3.0)) * 2.0 / (n - 1)
    assert drr[outside].abs().max() == 0.0
    assert rendered[outside].abs().max() == 0.0


def test_projection_is_nerf_quadrature():
    generator = torch.Generator().manual_seed(3)
    intensity = torch.rand(5, 40, generator=generator, dtype=torch.float64)
    delta = torch.rand(5, generator=generator, dtype=torch.float64) * 0.1
    k = 4.0
    # The textbook form: alpha_i = 1 - exp(-sigma_i delta), T_i = prod_{j<i} (1 - alpha_j).
    alpha = 1.0 - torch.exp(-k * intensity * delta[:, None])
    transmittance = torch.cumprod(torch.cat([torch.ones(5, 1, dtype=torch.float64), 1.0 - alpha[:, :-1]], 1), 1)
    expected = (transmittance * alpha * intensity).sum(dim=1)
    torch.testing.assert_close(views._project(intensity, delta, "volume", k), expected, atol=1e-12, rtol=0)
    drr = 1.0 - torch.exp(-k * (intensity * delta[:, None]).sum(dim=1))
    torch.testing.assert_close(views._project(intensity, delta, "drr", k), drr, atol=1e-12, rtol=0)
    torch.testing.assert_close(views._project(intensity, delta, "mip", k), intensity.amax(dim=1))


def test_mip_of_uniform_ball_is_its_intensity():
    n, radius, intensity = 32, 0.7, 0.6
    cameras = make_orbit_cameras(n_views=3, step_deg=33.0, image_size=24, projection="perspective")
    distance, _ = _chord_lengths(cameras, radius)
    mip = render_views(_sphere_phantom(n, radius, intensity), _cube_grid(n), cameras, mode="mip")
    # Rays within 0.8 R cross the ball's core, where all trilinear corners (so the samples) equal c.
    inner = mip[distance < 0.8 * radius]
    torch.testing.assert_close(inner, torch.full_like(inner, intensity))


@pytest.mark.parametrize(("elevation_deg", "projection"), [(0.0, "orthographic"), (-10.0, "perspective")])
def test_rendering_does_not_depend_on_chunking(elevation_deg, projection):
    generator = torch.Generator().manual_seed(1)
    volume = torch.rand(16, 16, 16, generator=generator)
    cameras = make_orbit_cameras(
        n_views=3, step_deg=50.0, elevation_deg=elevation_deg, image_size=16, projection=projection
    )
    for mode in ("volume", "drr", "mip"):
        whole = render_views(volume, _cube_grid(16), cameras, mode=mode)
        chunked = render_views(volume, _cube_grid(16), cameras, mode=mode, samples_per_chunk=100)
        torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=0)
        assert whole.shape == (3, 16, 16)
        assert 0.0 <= whole.min() and whole.max() <= 1.0


def test_axial_rays_render_like_oblique_rays():
    # Rays of the orthographic orbit at elevation 0 keep their voxel Z and are sampled through a 2D
    # atlas of axial slices; at elevation 1e-3 deg they drift by ~5e-4 voxel and take the 3D path.
    # On a smooth volume the views must agree far below the 8-bit level.
    coords = torch.linspace(-1.0, 1.0, 24)
    x, y, z = torch.meshgrid(coords, coords[:20], coords[:18], indexing="ij")
    volume = torch.exp(-4.0 * ((x - 0.3) ** 2 + (y + 0.2) ** 2 + 2.0 * z**2)) * (0.6 + 0.4 * torch.sin(3.0 * x + z))
    axial_cameras = make_orbit_cameras(n_views=4, step_deg=35.0, image_size=32)
    oblique_cameras = make_orbit_cameras(n_views=4, step_deg=35.0, elevation_deg=1e-3, image_size=32)
    for mode in ("volume", "drr", "mip"):
        axial = render_views(volume, _cube_grid(24), axial_cameras, mode=mode)
        oblique = render_views(volume, _cube_grid(24), oblique_cameras, mode=mode)
        torch.testing.assert_close(axial, oblique, atol=2e-4, rtol=0)


def test_denser_sampling_converges():
    generator = torch.Generator().manual_seed(2)
    volume = torch.rand(12, 12, 12, generator=generator)
    cameras = make_orbit_cameras(n_views=2, step_deg=30.0, image_size=16)
    default = render_views(volume, _cube_grid(12), cameras)
    fine = render_views(volume, _cube_grid(12), cameras, step=0.01)
    # White noise is the worst case for the midpoint rule (the trilinear field kinks at every voxel
    # face, with slopes up to 1 per voxel); half-voxel steps (0.09 world units) still stay within
    # 0.02 of a 9x finer quadrature, and within 2e-3 on average.
    assert (default - fine).abs().max() < 0.02
    assert (default - fine).abs().mean() < 2e-3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "xray"}, "mode"),
        ({"density_scale": -1.0}, "density_scale"),
        ({"volume": torch.zeros(4, 4)}, "3D"),
        ({"volume": torch.zeros(4, 4, 4, dtype=torch.int64)}, "float"),
        ({"world_from_voxel": torch.eye(3)}, "world_from_voxel"),
        ({"step": 0.0}, "step"),
    ],
)
def test_render_views_rejects_bad_inputs(kwargs, message):
    arguments = {
        "volume": torch.zeros(4, 4, 4),
        "world_from_voxel": _cube_grid(4),
        "cameras": make_orbit_cameras(n_views=1, image_size=8),
        **kwargs,
    }
    with pytest.raises(ValueError, match=message):
        render_views(**arguments)


def test_scene_normalization_accepts_arrays_and_is_json_ready():
    normalization = SceneNormalization(np.array([1.0, -2.0, 3.5]), 80.0)
    assert normalization.centre_mm == (1.0, -2.0, 3.5)
    world = normalization.world_from_ras() @ np.array([81.0, -2.0, 3.5, 1.0])
    np.testing.assert_allclose(world, [1.0, 0.0, 0.0, 1.0], atol=1e-12)
