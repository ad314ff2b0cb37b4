"""Camera paths for ns-render camera-path: the orbit in perspective, the elevation sweep, the committed files
in configs/, and a few frames rendered from a trained run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from nerfstudio.cameras.camera_paths import get_path_from_json
from nerfstudio.scripts.render import RenderCameraPath
from nerfstudio.utils import install_checks
from PIL import Image

from mri_nerfstudio.camera_paths import (
    CAMERA_PATHS,
    camera_path,
    camera_path_text,
    elevation_sweep,
    turntable,
    write_camera_paths,
)
from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.views import ViewCameras, make_orbit_cameras

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _elevations_deg(path: dict) -> np.ndarray:
    """Elevation of each frame's camera above the axial plane, degrees."""
    c2w = np.array([frame["camera_to_world"] for frame in path["camera_path"]]).reshape(-1, 4, 4)
    position = c2w[:, :3, 3]
    return np.degrees(np.arcsin(position[:, 2] / np.linalg.norm(position, axis=-1)))


def test_the_turntable_is_the_training_orbit_seen_in_perspective():
    cameras = get_path_from_json(turntable())  # as ns-render camera-path reads it
    orbit = make_orbit_cameras(projection="perspective")  # PrepareConfig's defaults: 72 views, 128 px, radius 4
    assert cameras.camera_to_worlds.shape == (72, 3, 4)
    torch.testing.assert_close(cameras.camera_to_worlds, orbit.c2w, atol=1e-6, rtol=0)
    for name in ("fx", "fy", "cx", "cy"):
        torch.testing.assert_close(getattr(cameras, name).double(), torch.full((72, 1), getattr(orbit, name)).double())
    assert int(cameras.width[0]) == int(cameras.height[0]) == 128


def test_the_elevation_sweep_loops_over_the_poles_from_the_frontal_view():
    sweep = elevation_sweep()
    elevation = _elevations_deg(sweep)
    expected = np.concatenate([np.arange(0, 80, 5), np.arange(80, -80, -5), np.arange(-80, 0, 5)])
    np.testing.assert_allclose(elevation, expected, atol=1e-6)
    assert sweep["camera_path"][0] == turntable()["camera_path"][0]  # camera 0 of the orbit
    assert math.isclose(sweep["seconds"] * sweep["fps"], 64)
    c2w = np.array([frame["camera_to_world"] for frame in sweep["camera_path"]]).reshape(-1, 4, 4)
    assert np.allclose(c2w[:, 0, 3], 0.0) and np.all(c2w[:, 1, 3] > 0)  # azimuth 0: in front of the face


def test_a_wider_path_frames_the_brain_the_same_way():
    path = camera_path([90.0], [30.0], radius=2.5, image_size=64)
    cameras = get_path_from_json(path)
    expected = ViewCameras(c2w=cameras.camera_to_worlds, width=64, height=64, projection="perspective")
    assert math.isclose(float(cameras.fx[0]), expected.fx, rel_tol=1e-6)
    assert path["camera_path"][0]["fov"] == round(math.degrees(2 * math.asin(1 / 2.5)), 9)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: turntable(radius=1.0), "radius must be > 1 world unit"),
        (lambda: turntable(image_size=0), "image_size must be a whole number of pixels >= 1, got 0"),
        (lambda: turntable(n_views=0), "n_views must be a whole number >= 1, got 0"),
        (lambda: turntable(elevation_deg=90.0), "strictly between -90 and 90"),
        (lambda: camera_path([0.0], [0.0], radius=4.0, image_size=8, fps=0.0), "fps must be > 0, got 0.0"),
        (lambda: elevation_sweep(max_elevation_deg=90.0), "max_elevation_deg must lie strictly between 0 and 90"),
        (lambda: elevation_sweep(step_deg=7.0), r"must divide max_elevation_deg \(80.0\) into whole steps, got 7.0"),
        (lambda: elevation_sweep(step_deg=0.0), "step_deg must divide"),
    ],
)
def test_bad_settings_are_input_errors(make, message):
    with pytest.raises(MRIInputError, match=message):
        make()


def test_the_text_has_one_frame_per_line_and_reads_back():
    path = turntable(n_views=3)
    text = camera_path_text(path)
    assert json.loads(text) == path
    assert len(text.splitlines()) == 6 + 3 + 3  # braces, 5 settings, "camera_path": [, 3 frames, ]


def test_the_committed_paths_are_what_the_functions_write(tmp_path):
    written = write_camera_paths(tmp_path)
    assert [path.name for path in written] == list(CAMERA_PATHS)
    assert sorted(path.name for path in CONFIGS.glob("*.json")) == sorted(CAMERA_PATHS)
    for path in written:
        committed, generated = json.loads((CONFIGS / path.name).read_text()), json.loads(path.read_text())
        frames = [frame.pop("camera_to_world") for frame in generated["camera_path"]]
        committed_frames = [frame.pop("camera_to_world") for frame in committed["camera_path"]]
        assert committed == generated, path.name  # settings, fov and aspect of every frame
        np.testing.assert_allclose(committed_frames, frames, rtol=0, atol=1e-8, err_msg=path.name)


@pytest.mark.parametrize("name", list(CAMERA_PATHS))
def test_ns_render_renders_frames_of_the_path(name, trained_phantom_run, tmp_path, monkeypatch):
    # ns-render checks for ffmpeg before it renders, though images need none.
    monkeypatch.setattr(install_checks, "check_ffmpeg_installed", lambda: None)
    path = json.loads((CONFIGS / name).read_text())
    path["camera_path"] = path["camera_path"][:: len(path["camera_path"]) // 4][:4]
    path["seconds"] = len(path["camera_path"]) / path["fps"]
    few = tmp_path / f"four_frames_of_{name}"
    few.write_text(json.dumps(path))
    frames_dir = tmp_path / "frames"
    RenderCameraPath(
        load_config=trained_phantom_run, camera_path_filename=few, output_path=frames_dir, output_format="images",
        image_format="png", downscale_factor=4, rendered_output_names=["rgb"],
    ).main()  # fmt: skip
    frames = sorted(frames_dir.glob("*.png"))
    assert [frame.name for frame in frames] == [f"{i:05d}.png" for i in range(4)]
    for frame in frames:
        image = np.asarray(Image.open(frame).convert("L"), dtype=np.float64) / 255.0
        assert image.shape == (32, 32)  # 128 px / 4
        # The brain fills the middle of the frame; the corners lie outside the unit sphere: background.
        assert image[12:20, 12:20].mean() > 0.1 > image[:3, :3].mean()
