"""Camera paths for ``ns-render camera-path``: the orbit's turntable and an elevation sweep, as JSON.

nerfstudio 1.1.5's camera-path JSON (``get_path_from_json`` in ``nerfstudio/cameras/camera_paths.py``, read
by ``nerfstudio/scripts/render.py``): ``render_width`` and ``render_height`` (pixels), ``seconds`` (the
video's length: frames / seconds is its frame rate), ``camera_type`` and per frame ``camera_to_world`` (the
4 x 4 camera-to-world matrix, rows flattened to 16 numbers, OpenGL convention) and ``fov`` (the vertical
field of view, degrees; ``fx = fy = (render_height / 2) / tan(fov / 2)``, principal point at the centre).
It has no orthographic camera, so the paths are perspective, as training views with ``--prepare.projection
perspective`` are (:class:`~mri_nerfstudio.views.ViewCameras`): cameras at ``radius`` world units from the
origin, looking at it with world +Z up, with a field of view of ``2 asin(1 / radius)``, so the unit sphere
(the brain's scene) just fills the image. Frame ``i`` of the turntable is camera ``i`` of the orbit
(:func:`~mri_nerfstudio.views.orbit_poses`); ``scripts/write_camera_paths.py`` writes them to ``configs/``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike

from mri_nerfstudio.atomic_write import write_atomically
from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.views import ViewCameras, poses_looking_at_origin

DECIMALS = 9
"""Decimals kept of every number in a path (the poses are computed in float64)."""
DEFAULT_FPS = 12.0
"""Frames per second of the rendered video: the 72-frame turntable lasts 6 s."""


def camera_path(
    azimuth_deg: ArrayLike, elevation_deg: ArrayLike, radius: float, image_size: int, fps: float = DEFAULT_FPS
) -> dict[str, Any]:
    """A camera-path dict of square perspective frames looking at the origin from a sphere of ``radius``.

    Args:
        azimuth_deg: [N] degrees around world Z (0: in front of the face, 90: on the subject's left).
        elevation_deg: [N] degrees above the axial plane, each strictly between -90 and 90.
        radius: world units from the origin (the brain's bounding radius is 1), > 1.
        image_size: width and height of the rendered frames, pixels, >= 1.
        fps: frames per second of the video, > 0 (sets ``seconds``).
    """
    if not (math.isfinite(radius) and radius > 1.0):
        raise MRIInputError(f"camera path: radius must be > 1 world unit (outside the brain), got {radius}")
    if int(image_size) != image_size or image_size < 1:
        raise MRIInputError(f"camera path: image_size must be a whole number of pixels >= 1, got {image_size}")
    if not (math.isfinite(fps) and fps > 0):
        raise MRIInputError(f"camera path: fps must be > 0, got {fps}")
    elevation = np.asarray(elevation_deg, dtype=np.float64)
    if not np.all(np.abs(elevation) < 90.0):
        raise MRIInputError(f"camera path: elevations must lie strictly between -90 and 90 degrees, got {elevation}")
    c2w = poses_looking_at_origin(azimuth_deg, elevation, radius, dtype=torch.float64)
    cameras = ViewCameras(c2w=c2w, width=int(image_size), height=int(image_size), projection="perspective")
    fov_deg = math.degrees(2.0 * math.atan(cameras.cy / cameras.fy))
    bottom = torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    frames = [
        {
            "camera_to_world": _rounded(torch.cat([pose, bottom]).flatten().tolist()),
            "fov": _rounded(fov_deg),
            "aspect": 1.0,
        }
        for pose in c2w
    ]
    return {
        "camera_type": "perspective",
        "render_width": int(image_size),
        "render_height": int(image_size),
        "fps": fps,
        "seconds": _rounded(len(frames) / fps),
        "camera_path": frames,
    }


def turntable(
    n_views: int = 72, step_deg: float = 5.0, elevation_deg: float = 0.0, radius: float = 4.0, image_size: int = 128
) -> dict[str, Any]:
    """The orbit of the training views (:func:`~mri_nerfstudio.views.orbit_poses`, the defaults of
    ``PrepareConfig``): frame ``i`` at azimuth ``i * step_deg``, all at ``elevation_deg``, in perspective."""
    if int(n_views) != n_views or n_views < 1:
        raise MRIInputError(f"turntable: n_views must be a whole number >= 1, got {n_views}")
    azimuth = np.arange(int(n_views)) * float(step_deg)
    return camera_path(azimuth, np.full_like(azimuth, elevation_deg), radius, image_size)


def elevation_sweep(
    azimuth_deg: float = 0.0,
    max_elevation_deg: float = 80.0,
    step_deg: float = 5.0,
    radius: float = 4.0,
    image_size: int = 128,
) -> dict[str, Any]:
    """A loop over the poles at one azimuth (default: the frontal view, camera 0 of the orbit): elevation
    0 up to ``max_elevation_deg``, down to ``-max_elevation_deg`` and back towards 0 in steps of
    ``step_deg``; ``4 * max_elevation_deg / step_deg`` frames (64 by default), the first one camera 0's pose."""
    if not (0.0 < max_elevation_deg < 90.0):
        raise MRIInputError(
            f"elevation sweep: max_elevation_deg must lie strictly between 0 and 90, got {max_elevation_deg}"
        )
    steps = max_elevation_deg / step_deg if step_deg > 0 else math.nan
    if not (math.isfinite(steps) and steps >= 1 and abs(steps - round(steps)) < 1e-9):
        raise MRIInputError(
            f"elevation sweep: step_deg must divide max_elevation_deg ({max_elevation_deg}) into whole steps, "
            f"got {step_deg}"
        )
    up = np.arange(round(steps)) * float(step_deg)  # 0 .. max - step
    down = max_elevation_deg - np.arange(2 * round(steps)) * step_deg  # max .. -max + step
    elevation = np.concatenate([up, down, up - max_elevation_deg])
    return camera_path(np.full_like(elevation, azimuth_deg), elevation, radius, image_size)


def camera_path_text(path: dict[str, Any]) -> str:
    """``path`` as JSON text with one frame per line (reads back with ``json.loads``)."""
    header = {key: value for key, value in path.items() if key != "camera_path"}
    lines = [f"  {json.dumps(key)}: {json.dumps(value)}," for key, value in header.items()]
    frames = ",\n".join(f"    {json.dumps(frame)}" for frame in path["camera_path"])
    return "{\n" + "\n".join(lines) + '\n  "camera_path": [\n' + frames + "\n  ]\n}\n"


CAMERA_PATHS = {"turntable.json": turntable, "elevation_sweep.json": elevation_sweep}
"""File name in ``configs/`` -> the function that makes its path (with its defaults)."""


def write_camera_paths(folder: Path, image_size: int = 128, radius: float = 4.0) -> list[Path]:
    """Write every path of :data:`CAMERA_PATHS` into ``folder`` at ``image_size`` px and ``radius``; their files."""
    texts = {name: camera_path_text(make(radius=radius, image_size=image_size)) for name, make in CAMERA_PATHS.items()}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        write_atomically(folder / name, lambda temporary, text=text: temporary.write_text(text))
    return [folder / name for name in texts]


def _rounded(value: Any) -> Any:
    """``value`` (a float or a list of floats) rounded to :data:`DECIMALS`, with -0.0 as 0.0."""
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    return round(float(value), DECIMALS) + 0.0
