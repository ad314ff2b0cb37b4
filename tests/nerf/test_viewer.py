"""The live viewer: 127.0.0.1 binding, the ``volume`` output, the initial camera, and a real-browser screenshot."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import viewer_screenshot
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.viewer.utils import parse_object
from nerfstudio.viewer.viewer import VISER_NERFSTUDIO_SCALE_RATIO
from nerfstudio.viewer.viewer_elements import ViewerControl, ViewerDropdown
from PIL import Image

from mri_nerfstudio.nerf.method_config import mri_mednerf
from mri_nerfstudio.nerf.model import MRIMedNeRFModelConfig
from mri_nerfstudio.nerf.viewer_camera import OrbitViewerCamera, framing_distance, orbit_position
from mri_nerfstudio.views import orbit_poses

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "viewer_screenshot.py"
TINY = dict(preset="cpu", grid_resolutions=(4, 8), grid_channels=2, grid_width=8, num_samples=8)


def _model():
    torch.manual_seed(0)
    scene_box = SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
    metadata = {"view_mode": "volume", "density_scale": 3.0, "subject_names": ["s0"]}
    return MRIMedNeRFModelConfig(**TINY).setup(scene_box=scene_box, num_train_data=1, metadata=metadata).eval()


class _FakeCamera:
    """The attributes of a viser CameraHandle that OrbitViewerCamera reads and writes."""

    fov = math.radians(75.0)  # three.js' default, which viser's browser client keeps
    up_direction = position = look_at = None


def test_method_config_binds_the_viewer_to_localhost():
    config = mri_mednerf.config
    assert config.viewer.websocket_host == "127.0.0.1"
    assert config.vis == "viewer"


def test_viewer_camera_render_offers_the_volume_output():
    # The viewer fills its "Output type" dropdown with the keys of get_outputs_for_camera.
    c2w = torch.tensor(orbit_poses(n_views=1, radius=2.5)[0][:3], dtype=torch.float32)
    camera = Cameras(camera_to_worlds=c2w[None], fx=8.0, fy=8.0, cx=4.0, cy=4.0, width=8, height=8,
                     camera_type=CameraType.PERSPECTIVE)  # fmt: skip
    outputs = _model().get_outputs_for_camera(camera)
    assert {"rgb", "accumulation", "depth", "volume"} <= set(outputs)
    assert outputs["volume"].shape == (8, 8, 3)


def test_the_viewer_finds_the_initial_camera_control_on_the_model():
    controls = [control for _, control in parse_object(_model(), ViewerControl, "Custom Elements")]
    assert len(controls) == 1 and isinstance(controls[0], OrbitViewerCamera)


def test_the_viewer_finds_the_subject_and_modality_selectors_on_the_model(tiny_encoder_model):
    dropdowns = {element.name: element for _, element in parse_object(tiny_encoder_model(), ViewerDropdown, "Custom Elements")}
    assert dropdowns["Subject"].options == ["s0", "s1", "s2"] and dropdowns["Subject"].default_value == "s0"
    assert dropdowns["Scan modality"].options == ["t1", "t1ce", "t2", "flair"]


def test_orbit_position_follows_the_view_orbit():
    # Same convention as the training cameras: view i of a 72-view orbit at azimuth 5 i degrees.
    poses = orbit_poses(n_views=72, elevation_deg=15.0, radius=3.0)
    for i in (0, 7, 40):
        np.testing.assert_allclose(orbit_position(3.0, 5.0 * i, 15.0), poses[i][:3, 3], atol=1e-6)


def test_framing_distance_makes_the_unit_sphere_fill_the_requested_angle():
    fov = math.radians(75.0)
    distance = framing_distance(fov, 0.75)
    assert 2.0 * math.asin(1.0 / distance) == pytest.approx(0.75 * fov)
    with pytest.raises(ValueError, match="fill"):
        framing_distance(fov, 1.0)
    with pytest.raises(ValueError, match="fill"):
        OrbitViewerCamera(fill=0.0)


def test_new_clients_get_a_camera_outside_the_brain_looking_at_it():
    server = SimpleNamespace(connect_callbacks=[])
    server.on_client_connect = server.connect_callbacks.append
    control = OrbitViewerCamera(azimuth_deg=0.0, elevation_deg=20.0, fill=0.75)
    control._setup(SimpleNamespace(viser_server=server))
    client = SimpleNamespace(camera=_FakeCamera(), atomic=nullcontext)
    for callback in server.connect_callbacks:
        callback(client)

    position = np.asarray(client.camera.position) / VISER_NERFSTUDIO_SCALE_RATIO
    assert np.linalg.norm(position) == pytest.approx(framing_distance(_FakeCamera.fov, 0.75))
    assert np.linalg.norm(position) > 1.0  # viser's own default (0.52 world units) is inside the brain
    assert position[1] > 0 and position[2] == pytest.approx(np.linalg.norm(position) * math.sin(math.radians(20)))
    assert client.camera.look_at == (0.0, 0.0, 0.0) and client.camera.up_direction == (0.0, 0.0, 1.0)


def test_progress_table_rows_give_the_training_step():
    log = "Step (% Done)   Train Iter (time)\n\x1b[0m10 (2.50%)   2 s\r\n120 (30.00%)   1 s\x1b[0m\nViewer at: 7007\n"
    assert viewer_screenshot.last_training_step(log) == 120
    assert viewer_screenshot.last_training_step("Setting up training dataset...\n") is None


def _screen(centre_grey: float | None, texture: float = 0.1, seed: int = 0) -> np.ndarray:
    """A 100 x 160 dark screen; optionally a textured bright disk (the brain) in its centre."""
    y, x = np.mgrid[:100, :160]
    grey = np.full((100, 160), 0.02)
    if centre_grey is not None:
        disk = (x - 80) ** 2 + (y - 50) ** 2 < 35**2
        noise = np.random.default_rng(seed).uniform(-texture, texture, grey.shape)
        grey[disk] = centre_grey + noise[disk]
    grey[-8:, :8] = 1.0  # the axes gizmo in a corner must not raise the background level
    return np.repeat((grey.clip(0, 1) * 255).astype(np.uint8)[..., None], 3, axis=-1)


def test_brain_visibility_needs_a_bright_textured_centre():
    box = (0, 0, 160, 100)
    brain = viewer_screenshot.measure_brain_visibility(_screen(0.4), box)
    assert brain.visible() and brain.bright_fraction == 1.0
    assert not viewer_screenshot.measure_brain_visibility(_screen(None), box).visible()
    assert not viewer_screenshot.measure_brain_visibility(_screen(0.4, texture=0.0), box).visible()  # flat disk
    # Only the view box counts: a bright control panel to its right changes nothing.
    with_panel = np.concatenate([_screen(None), np.full((100, 60, 3), 230, np.uint8)], axis=1)
    assert not viewer_screenshot.measure_brain_visibility(with_panel, box).visible()


def _screenshot(out: Path, *arguments: str) -> subprocess.CompletedProcess:
    """scripts/viewer_screenshot.py on the template, 50 training steps before the browser."""
    command = [sys.executable, str(SCRIPT), "--out", str(out), "--cache-dir", str(out.parent / "cache"),
               "--min-steps", "50", *arguments]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed: run scripts/install_system_deps.sh")
def test_live_viewer_shows_the_brain_its_slices_and_their_uncertainty_in_headless_chromium(tmp_path: Path):
    # One browser session (its start-up and ns-train's are most of the time) picks each output in turn.
    out = tmp_path / "viewer.png"
    result = _screenshot(out, "--slice-offset-mm", "25", "--then-outputs", "slice_uncertainty")
    assert "OK: the rendered brain ('volume' output) is visible" in result.stdout
    assert Image.open(out).size == (1280, 800)
    # The slice output: a brain slice on the default (coronal) plane, and another one 25 mm further.
    assert "OK: the 'slice' output shows a brain slice and follows the plane to 25 mm" in result.stdout
    assert Image.open(tmp_path / "viewer_slice.png").size == Image.open(tmp_path / "viewer_slice_25mm.png").size
    # The uncertainty on that plane: a brain-shaped map, different from the slice before it.
    assert "OK: the rendered brain ('slice_uncertainty' output) is visible" in result.stdout
    assert Image.open(tmp_path / "viewer_slice_uncertainty.png").size == (1280, 800)
