"""The viewer's slice outputs: plane controls, ray-plane crossings, and the field / scan / difference images."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.viewer.utils import parse_object
from nerfstudio.viewer.viewer_elements import ViewerElement

from mri_nerfstudio.nerf.trained_run import load_mednerf_run
from mri_nerfstudio.nerf.viewer_slice import difference_colours, oblique_normal, ray_plane_crossings
from mri_nerfstudio.uncertainty import blend_spread
from mri_nerfstudio.views import orbit_poses


def test_rays_cross_the_plane_where_they_meet_it_inside_the_sphere():
    origins = torch.tensor([[0.0, 3.0, 0.2], [0.0, 3.0, 0.0], [0.0, 3.0, 0.0], [0.0, -3.0, 0.0], [0.9, 3.0, 0.9]])
    directions = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, -2.0, 0.0], [0.0, -1.0, 0.0]])
    points, hits = ray_plane_crossings(origins, directions, torch.tensor([0.0, 1.0, 0.0]), offset=0.25)
    # Through the plane y = 0.25; parallel to it; pointing away; behind its origin; crossing outside the sphere.
    assert hits.tolist() == [True, False, False, False, False]
    torch.testing.assert_close(points[0], torch.tensor([0.0, 0.25, 0.2]))
    torch.testing.assert_close(points[1:], origins[1:])


def test_oblique_tilts_turn_the_axial_normal_about_the_image_axes():
    np.testing.assert_allclose(oblique_normal(0.0, 0.0), [0.0, 0.0, 1.0])
    # The axial image's x axis is RAS (-1, 0, 0): a right-handed +30 degrees about it leans the normal anterior.
    np.testing.assert_allclose(oblique_normal(30.0, 0.0), [0.0, math.sin(math.radians(30)), math.cos(math.radians(30))],
                               atol=1e-12)
    # Its y axis is RAS (0, -1, 0): 90 degrees about it lay the normal along x, a sagittal plane.
    np.testing.assert_allclose(np.abs(oblique_normal(0.0, 90.0)), [1.0, 0.0, 0.0], atol=1e-12)


def test_difference_colours_are_white_at_zero_red_above_blue_below_and_black_off_the_plane():
    hits = torch.tensor([True, True, True, True, False])
    colours = difference_colours(torch.tensor([0.0, 0.5, -0.5, 0.25, 0.3]), hits)
    torch.testing.assert_close(colours, torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0],
                                                      [1.0, 0.5, 0.5], [0.0, 0.0, 0.0]]))  # fmt: skip


def _facing_camera(size: int = 24) -> Cameras:
    """An orthographic camera at azimuth 0 and elevation 0 (on +Y, looking along -Y), its image spanning the
    unit sphere: it faces the coronal plane."""
    c2w = torch.tensor(orbit_poses(n_views=1, radius=3.0)[0][:3], dtype=torch.float32)
    return Cameras(camera_to_worlds=c2w[None], fx=size / 2, fy=size / 2, cx=size / 2, cy=size / 2,
                   width=size, height=size, camera_type=CameraType.ORTHOPHOTO)  # fmt: skip


@pytest.fixture(scope="module")
def trained(trained_phantom_run):
    run = load_mednerf_run(trained_phantom_run)
    run.model.eval()
    return run.model


def test_the_viewer_finds_the_slice_controls_on_the_model(trained):
    names = {element.name for _, element in parse_object(trained, ViewerElement, "Custom Elements")}
    assert {"Slice plane", "Slice offset (mm)", "Oblique tilt, image x (deg)", "Oblique tilt, image y (deg)"} <= names
    assert trained.viewer_slice.offset_mm.max >= 60  # the brain's radius in mm, not in world units


def test_the_slice_output_shows_the_field_on_the_chosen_plane_and_follows_the_controls(trained):
    controls = trained.viewer_slice
    controls.plane.value, controls.offset_mm.value = "coronal", 0.0
    camera = _facing_camera()
    outputs = trained.get_outputs_for_camera(camera)
    assert {"slice", "slice_scan", "slice_difference"} <= set(outputs)
    image, scan = outputs["slice"][..., 0], outputs["slice_scan"][..., 0]
    # Each pixel is the field at the point where its ray crosses y = 0.
    rays = camera.generate_rays(camera_indices=0)
    points, hits = ray_plane_crossings(rays.origins.reshape(-1, 3), rays.directions.reshape(-1, 3),
                                       torch.tensor([0.0, 1.0, 0.0]), 0.0)  # fmt: skip
    expected = trained.volume_on_grid(points, 0) * hits
    torch.testing.assert_close(image.reshape(-1), expected, atol=1e-5, rtol=0)
    # A brain: bright, structured, and like the input scan on the same plane.
    assert image.max() > 0.3 and image[hits.reshape(image.shape)].std() > 0.05
    assert np.corrcoef(image.flatten().numpy(), scan.flatten().numpy())[0, 1] > 0.5

    controls.offset_mm.value = 30.0  # 30 mm anterior: another slice
    moved = trained.get_outputs_for_camera(camera)["slice"][..., 0]
    assert (moved - image).abs().mean() > 0.02
    controls.plane.value = "axial"  # edge-on from this camera: every ray runs along the plane or misses it
    edge_on = trained.get_outputs_for_camera(camera)
    assert float(edge_on["slice"].abs().max()) == 0.0
    controls.plane.value, controls.offset_mm.value = "coronal", 0.0


def test_the_slice_uncertainty_output_is_the_blend_spread_of_the_slice(trained):
    controls = trained.viewer_slice
    controls.plane.value, controls.offset_mm.value = "coronal", 0.0
    outputs = trained.get_outputs_for_camera(_facing_camera())
    uncertainty, image = outputs["slice_uncertainty"], outputs["slice"][..., 0]
    assert uncertainty.shape == (*image.shape, 1)  # one channel: the viewer offers its colormaps
    torch.testing.assert_close(uncertainty[..., 0], blend_spread(image), atol=1e-6, rtol=0)
    assert float(uncertainty.max()) > 0.05 and float(uncertainty[image == 0].abs().max()) == 0.0
