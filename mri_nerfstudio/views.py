"""Posed views of a brain volume: the orbit of cameras, nerfstudio's rays, and projection rendering.

World frame
-----------
The preprocessed volume lives in RAS millimetres (array axes and world axes point to the subject's
Right, Anterior, Superior). World coordinates are ``rotation @ (RAS mm - centre) / radius``, where
``rotation`` is the identity (the scanner's axes) or the head's pose (:mod:`mri_nerfstudio.head_pose`:
the brain's own axes, as MNI152's), ``centre`` is the centre of the brain mask's bounding box in those
axes and ``radius`` the largest distance of a mask voxel centre from it, times a margin (1.05): the
brain fits in the unit sphere and the scene box is ``[-1, 1]^3``. World +X = Right, +Y = Anterior,
+Z = Superior, so nerfstudio's world-up (+Z) is the subject's superior direction and the orbit around
the superior-inferior axis is an orbit around world Z.

Cameras
-------
Cameras follow nerfstudio (OpenGL): a camera looks along its -Z axis, +Y is image up, +X is image
right, ``c2w`` is [3, 4] camera-to-world, pixel centres sit at +0.5 and image row 0 is the top.
Camera ``i`` of the orbit sits at azimuth ``i * step_deg`` and elevation ``elevation_deg``, at
distance ``radius`` from the origin, looks at the origin, and keeps world +Z up in the image.
Azimuth 0 puts the camera on the anterior side (+Y) looking posterior: a frontal (coronal) view with
the subject's left on the image right. Azimuth grows by the right-hand rule about +Z, i.e.
counter-clockwise seen from above: azimuth 90 puts the camera on the subject's Left (-X), azimuth
180 behind the head (-Y), azimuth 270 on the subject's Right (+X). The camera position is
``radius * (-sin(az) cos(el), cos(az) cos(el), sin(el))``.

Rendering
---------
:func:`render_views` integrates the volume along each ray over the ray's chord through the unit
sphere (rays that miss the sphere render 0), clipped to the box outside which the volume is zero
(this skips empty samples only: no pixel changes). A segment of length ``L`` is cut into ``n``
equal parts sampled at their midpoints, ``n`` the smallest multiple of 16 with ``L / n <= step``,
so the spacing never exceeds ``step`` and the samples are symmetric about the segment's midpoint: a
ray traversed the other way meets the same points. Intensities are sampled trilinearly (voxel
centres at integer indices), zero outside the voxel grid; rays that keep one voxel coordinate (the
orthographic orbit at elevation 0 on an axis-aligned grid) are sampled bilinearly in slices
interpolated at that coordinate, which is the same and several times faster on CPU.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike
from torch import Tensor

from mri_nerfstudio.errors import MRIInputError

Projection = Literal["orthographic", "perspective"]
ViewMode = Literal["volume", "drr", "mip"]

PROJECTIONS: tuple[str, ...] = ("orthographic", "perspective")
VIEW_MODES: tuple[str, ...] = ("volume", "drr", "mip")
CAMERA_MODELS: dict[str, str] = {"orthographic": "ORTHOPHOTO", "perspective": "PERSPECTIVE"}
"""Projection -> nerfstudio camera model name (``CAMERA_MODEL_TO_TYPE`` key)."""

DEFAULT_DENSITY_SCALE = 3.0
"""Density per unit intensity per world unit (k). A brain spans 1.5-1.9 world units along a chord
through its centre (the MNI152 brain: 144 x 180 x 154 mm in a 97 mm bounding radius) and has mean
intensity ~0.5 after equalisation, so the optical depth through the centre is k * 0.5 * (1.5..1.9)
= 2.2..2.8 for k = 3: the front half of the brain dominates a ``volume`` view without hiding the
back (transmittance through the centre e^-2.5 ~ 8%), and ``drr`` pixels stay below saturation
(1 - e^-2.8 = 0.94)."""

SAMPLE_COUNT_MULTIPLE = 16
"""Rays get a multiple of this many samples: a few percent more samples than needed, in far fewer
blocks of work (each block is a handful of torch calls, and each call costs a thread sync)."""

SAMPLES_PER_CHUNK = 1 << 23
"""Default number of ray samples evaluated at once (8M: about 250 MB of temporaries)."""


IDENTITY_ROTATION = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
"""The scene's rotation when the world keeps the scanner's axes."""


@dataclass(frozen=True)
class SceneNormalization:
    """The similarity between RAS millimetres and the world frame: ``world = rotation @ (ras - centre) / radius``.

    Attributes:
        centre_mm: [3] RAS mm, the centre of the brain mask's bounding box (in the rotated axes).
        radius_mm: mm, the radius of the sphere around ``centre_mm`` that holds the brain (margin
            included); it maps to the unit sphere.
        rotation: [3, 3] rotation (det +1) from scanner RAS directions to world directions, row-major: the
            identity keeps the scanner's axes; a head pose (:mod:`mri_nerfstudio.head_pose`) turns the
            brain's own axes onto the world's.
    """

    centre_mm: tuple[float, float, float]
    radius_mm: float
    rotation: tuple[tuple[float, float, float], ...] = IDENTITY_ROTATION

    def __post_init__(self) -> None:
        centre = tuple(float(c) for c in np.asarray(self.centre_mm, dtype=np.float64).reshape(-1))
        if len(centre) != 3 or not all(map(math.isfinite, centre)):
            raise ValueError(f"centre_mm must be 3 finite numbers, got {self.centre_mm}")
        if not (self.radius_mm > 0 and math.isfinite(self.radius_mm)):
            raise ValueError(f"radius_mm must be finite and > 0, got {self.radius_mm}")
        rotation = np.asarray(self.rotation, dtype=np.float64)
        if (
            rotation.shape != (3, 3)
            or not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-5)
            or not np.linalg.det(rotation) > 0
        ):
            raise ValueError(f"rotation must be a [3, 3] rotation matrix (orthonormal, det +1), got {self.rotation}")
        # frozen: normalise arrays and lists to tuples
        object.__setattr__(self, "centre_mm", centre)
        object.__setattr__(self, "radius_mm", float(self.radius_mm))
        object.__setattr__(self, "rotation", tuple(tuple(float(v) for v in row) for row in rotation))

    def world_from_ras(self) -> np.ndarray:
        """[4, 4] float64: RAS mm -> world units."""
        rotation = np.asarray(self.rotation)
        transform = np.eye(4)
        transform[:3, :3] = rotation / self.radius_mm
        transform[:3, 3] = -rotation @ np.asarray(self.centre_mm) / self.radius_mm
        return transform

    def ras_from_world(self) -> np.ndarray:
        """[4, 4] float64: world units -> RAS mm (the inverse of :meth:`world_from_ras`)."""
        transform = np.eye(4)
        transform[:3, :3] = np.asarray(self.rotation).T * self.radius_mm
        transform[:3, 3] = self.centre_mm
        return transform

    def world_from_voxel(self, affine: np.ndarray) -> np.ndarray:
        """[4, 4] float64: voxel indices of a grid with ``affine`` (voxel -> RAS mm) -> world units."""
        return self.world_from_ras() @ np.asarray(affine, dtype=np.float64)

    def to_json(self) -> dict:
        """The normalisation as plain JSON values (and its ``world_from_ras`` matrix, for people)."""
        return {
            "centre_mm": list(self.centre_mm),
            "radius_mm": self.radius_mm,
            "rotation": [list(row) for row in self.rotation],
            "world_from_ras": self.world_from_ras().tolist(),
        }

    @classmethod
    def from_json(cls, values: dict) -> SceneNormalization:
        """The inverse of :meth:`to_json`; a folder prepared before rotations were recorded reads as the identity."""
        return cls(values["centre_mm"], float(values["radius_mm"]), values.get("rotation", IDENTITY_ROTATION))


def scene_normalization(
    mask: np.ndarray, affine: np.ndarray, margin: float = 1.05, rotation: np.ndarray | None = None
) -> SceneNormalization:
    """The bounding sphere of a brain mask, enlarged by ``margin``.

    Args:
        mask: [X, Y, Z] bool brain mask.
        affine: [4, 4] voxel index -> RAS mm.
        margin: factor >= 1 on the radius, so the brain's rim stays off the sphere.
        rotation: [3, 3] scanner RAS -> world directions (None: the identity); the bounding box is taken
            along the rotated axes.

    Returns:
        The normalization that puts every mask voxel centre inside the unit sphere.
    """
    mask = np.asarray(mask)
    affine = np.asarray(affine, dtype=np.float64)
    if mask.ndim != 3:
        raise ValueError(f"mask must be 3D [X, Y, Z], got shape {mask.shape}")
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be [4, 4], got shape {affine.shape}")
    if not margin >= 1.0:
        raise ValueError(f"margin must be >= 1 so the brain fits in the unit sphere, got {margin}")
    rotation = np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64)
    voxels = np.argwhere(mask)
    if len(voxels) == 0:
        raise ValueError("mask is empty: no brain voxel to centre the scene on")
    ras = voxels @ affine[:3, :3].T + affine[:3, 3]
    turned = ras @ rotation.T
    centre = rotation.T @ ((turned.min(axis=0) + turned.max(axis=0)) / 2)
    radius = float(np.sqrt(((ras - centre) ** 2).sum(axis=1).max()))
    if radius == 0.0:
        raise ValueError("mask holds a single voxel: the scene needs a brain with an extent")
    return SceneNormalization(centre_mm=tuple(centre), radius_mm=radius * margin, rotation=rotation)


def orbit_poses(
    n_views: int = 72, step_deg: float = 5.0, elevation_deg: float = 0.0, radius: float = 4.0
) -> Tensor:
    """Camera-to-world poses of an orbit around world Z, looking at the origin (see module docstring).

    Args:
        n_views: number of cameras, >= 1.
        step_deg: azimuth between consecutive cameras, degrees.
        elevation_deg: angle of the cameras above the axial (XY) plane, degrees, |elevation| < 90.
        radius: distance of the cameras from the origin, world units, > 1 (outside the unit sphere).

    Returns:
        [n_views, 3, 4] float32 c2w in nerfstudio's OpenGL convention.
    """
    if int(n_views) != n_views or n_views < 1:
        raise ValueError(f"n_views must be an integer >= 1, got {n_views}")
    if not math.isfinite(step_deg):
        raise ValueError(f"step_deg must be finite, got {step_deg}")
    if not abs(elevation_deg) < 90.0:
        raise ValueError(f"elevation_deg must lie strictly between -90 and 90, got {elevation_deg}")
    if not radius > 1.0 or not math.isfinite(radius):
        raise ValueError(f"radius must be > 1 (cameras outside the unit sphere), got {radius}")
    azimuth_deg = np.arange(int(n_views)) * step_deg
    return poses_looking_at_origin(azimuth_deg, np.full_like(azimuth_deg, elevation_deg), radius)


def poses_looking_at_origin(
    azimuth_deg: ArrayLike, elevation_deg: ArrayLike, radius: ArrayLike, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Camera-to-world poses at the given azimuths, elevations and distances, looking at the origin with
    world +Z up in the image (the orbit's cameras, and any other pose on a sphere around the brain).

    Args:
        azimuth_deg: [N] degrees around world Z (0: camera on +Y).
        elevation_deg: [N] degrees above the axial (XY) plane, each strictly between -90 and 90.
        radius: [N] or scalar distance from the origin, world units.
        dtype: of the result (computed in float64).

    Returns:
        [N, 3, 4] c2w in nerfstudio's OpenGL convention.
    """
    azimuth = np.deg2rad(np.asarray(azimuth_deg, dtype=np.float64))
    elevation = np.deg2rad(np.asarray(elevation_deg, dtype=np.float64))
    if not np.all(np.abs(elevation) < np.pi / 2):
        raise ValueError(f"elevations must lie strictly between -90 and 90 degrees, got {elevation_deg}")
    backward = np.stack(
        [-np.sin(azimuth) * np.cos(elevation), np.cos(azimuth) * np.cos(elevation), np.sin(elevation)], axis=-1
    )
    right = np.cross(np.array([0.0, 0.0, 1.0]), backward)
    right /= np.linalg.norm(right, axis=-1, keepdims=True)
    up = np.cross(backward, right)
    distance = np.asarray(radius, dtype=np.float64)[..., None]
    c2w = np.stack([right, up, backward, distance * backward], axis=-1)
    return torch.from_numpy(c2w).to(dtype)


@dataclass
class ViewCameras:
    """A set of cameras sharing one image size and projection, with intrinsics derived from both.

    The intrinsics make the unit sphere (the brain's scene) fill the image's shorter side:
    orthographic ``fx = fy = min(width, height) / 2`` pixels per world unit; perspective
    ``fx = fy = (min(width, height) / 2) / tan(asin(1 / d))`` for cameras at distance ``d`` from the
    origin (all cameras must share it). The principal point is the image centre.

    Attributes:
        c2w: [N, 3, 4] float camera-to-world (OpenGL), cameras at distance > 1 from the origin.
        width: image width, pixels.
        height: image height, pixels.
        projection: ``"orthographic"`` (nerfstudio ORTHOPHOTO) or ``"perspective"``.
    """

    c2w: Tensor
    width: int = 128
    height: int = 128
    projection: Projection = "orthographic"

    def __post_init__(self) -> None:
        if self.c2w.ndim != 3 or self.c2w.shape[1:] != (3, 4):
            raise ValueError(f"c2w must be [N, 3, 4], got shape {tuple(self.c2w.shape)}")
        if self.projection not in PROJECTIONS:
            raise ValueError(f"projection must be one of {PROJECTIONS}, got {self.projection!r}")
        if int(self.width) != self.width or int(self.height) != self.height or min(self.width, self.height) < 1:
            raise ValueError(f"image size must be positive integers, got {self.width} x {self.height}")
        distance = self.c2w[:, :, 3].double().norm(dim=-1)
        if not bool((distance > 1.0).all()):
            raise ValueError(f"cameras must lie outside the unit sphere, closest at {float(distance.min()):.4g}")
        if self.projection == "perspective" and float(distance.max() - distance.min()) > 1e-4 * float(distance.max()):
            raise ValueError("perspective cameras must share one distance from the origin (it sets the field of view)")

    @property
    def num_views(self) -> int:
        return self.c2w.shape[0]

    def subset(self, indices: Sequence[int]) -> ViewCameras:
        """The cameras at ``indices`` (e.g. a split's views of the orbit), same image size and projection."""
        return ViewCameras(self.c2w[list(indices)], self.width, self.height, self.projection)

    @property
    def distance(self) -> float:
        """Mean distance of the cameras from the origin, world units."""
        return float(self.c2w[:, :, 3].double().norm(dim=-1).mean())

    @property
    def fx(self) -> float:
        """Focal length along x, pixels (orthographic: pixels per world unit)."""
        half_size = min(self.width, self.height) / 2
        if self.projection == "orthographic":
            return half_size
        return half_size / math.tan(math.asin(1.0 / self.distance))

    @property
    def fy(self) -> float:
        """Focal length along y, pixels (square pixels: equal to :attr:`fx`)."""
        return self.fx

    @property
    def cx(self) -> float:
        return self.width / 2

    @property
    def cy(self) -> float:
        return self.height / 2

    @property
    def azimuth_deg(self) -> Tensor:
        """[N] float64 azimuth of each camera position in [0, 360), degrees (module docstring convention)."""
        position = self.c2w[:, :, 3].double()
        return torch.rad2deg(torch.atan2(-position[:, 0], position[:, 1])).remainder(360.0)

    def to_json(self) -> dict[str, Any]:
        """A nerfstudio-like ``transforms.json`` dict (4x4 ``transform_matrix`` per frame)."""
        bottom = torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
        frames = [
            {"transform_matrix": torch.cat([c2w.double(), bottom]).tolist(), "azimuth_deg": float(azimuth)}
            for c2w, azimuth in zip(self.c2w.cpu(), self.azimuth_deg.cpu())
        ]
        return {
            "camera_model": CAMERA_MODELS[self.projection],
            "w": int(self.width),
            "h": int(self.height),
            "fl_x": self.fx,
            "fl_y": self.fy,
            "cx": self.cx,
            "cy": self.cy,
            "frames": frames,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ViewCameras":
        """Inverse of :meth:`to_json`; the stored intrinsics must match the derived ones."""
        projections = {model: projection for projection, model in CAMERA_MODELS.items()}
        try:
            model, width, height, frames = data["camera_model"], data["w"], data["h"], data["frames"]
            matrices = [frame["transform_matrix"] for frame in frames]
        except (KeyError, TypeError) as error:
            raise MRIInputError(f"views JSON: missing field {error}") from None
        if model not in projections:
            raise MRIInputError(f"views JSON: camera_model {model!r}, expected one of {sorted(projections)}")
        c2w = torch.tensor(matrices, dtype=torch.float64)
        if c2w.ndim != 3 or c2w.shape[1:] != (4, 4):
            raise MRIInputError(f"views JSON: transform_matrix must be 4x4 per frame, got {tuple(c2w.shape)}")
        cameras = cls(c2w=c2w[:, :3].float(), width=int(width), height=int(height), projection=projections[model])
        for name, value in (("fl_x", cameras.fx), ("fl_y", cameras.fy), ("cx", cameras.cx), ("cy", cameras.cy)):
            if name in data and not math.isclose(float(data[name]), value, rel_tol=1e-4):
                raise MRIInputError(f"views JSON: {name} is {data[name]}, expected {value:.6g} for these cameras")
        return cameras


def make_orbit_cameras(
    n_views: int = 72,
    step_deg: float = 5.0,
    elevation_deg: float = 0.0,
    radius: float = 4.0,
    image_size: int = 128,
    projection: Projection = "orthographic",
) -> ViewCameras:
    """Square-image cameras on the orbit of :func:`orbit_poses`."""
    poses = orbit_poses(n_views=n_views, step_deg=step_deg, elevation_deg=elevation_deg, radius=radius)
    return ViewCameras(c2w=poses, width=image_size, height=image_size, projection=projection)


def generate_rays(cameras: ViewCameras) -> tuple[Tensor, Tensor]:
    """One ray per pixel, as nerfstudio 1.1.5's ``Cameras.generate_rays`` makes them.

    Perspective: origin at the camera centre, direction ``R @ [(u - cx) / fx, -(v - cy) / fy, -1]``.
    Orthographic (ORTHOPHOTO): origin ``c2w @ [(u - cx) / fx, -(v - cy) / fy, 0, 1]``, direction
    ``R @ [0, 0, -1]``. ``u, v`` are pixel centres (column + 0.5, row + 0.5).

    Returns:
        origins [N, H, W, 3] and unit directions [N, H, W, 3], world units, dtype and device of
        ``cameras.c2w``; what is shared by a camera's pixels is an expanded view (read-only).
    """
    c2w = cameras.c2w
    rows = torch.arange(cameras.height, dtype=c2w.dtype, device=c2w.device) + 0.5
    cols = torch.arange(cameras.width, dtype=c2w.dtype, device=c2w.device) + 0.5
    v, u = torch.meshgrid(rows, cols, indexing="ij")
    x = (u - cameras.cx) / cameras.fx
    y = -(v - cameras.cy) / cameras.fy  # OpenCV rows point down, OpenGL +Y points up
    rotation = c2w[:, None, None, :, :3]  # [N, 1, 1, 3, 3]
    centre = c2w[:, None, None, :, 3]  # [N, 1, 1, 3]
    shape = (cameras.num_views, cameras.height, cameras.width, 3)
    if cameras.projection == "perspective":
        local = torch.stack([x, y, -torch.ones_like(x)], dim=-1)  # [H, W, 3]
        directions = F.normalize((rotation @ local[..., None]).squeeze(-1), dim=-1)
        return centre.expand(shape), directions
    offset = torch.stack([x, y, torch.zeros_like(x)], dim=-1)
    origins = centre + (rotation @ offset[..., None]).squeeze(-1)
    directions = F.normalize(-c2w[:, None, None, :, 2], dim=-1).expand(shape)
    return origins, directions


def unit_sphere_chord(origins: Tensor, directions: Tensor) -> tuple[Tensor, Tensor]:
    """Where rays enter and leave the unit sphere.

    Args:
        origins: [..., 3] world units.
        directions: [..., 3] unit vectors.

    Returns:
        near [...] and far [...], distances along the rays in world units, clamped at 0 (the
        origin); ``far <= near`` where a ray misses the sphere.
    """
    along = (origins * directions).sum(dim=-1)
    discriminant = along**2 - ((origins**2).sum(dim=-1) - 1.0)
    half_chord = torch.where(discriminant > 0, discriminant.clamp(min=0).sqrt(), -math.inf)
    return (-along - half_chord).clamp(min=0), (-along + half_chord).clamp(min=0)


def render_views(
    volume: Tensor,
    world_from_voxel: Tensor | np.ndarray,
    cameras: ViewCameras,
    mode: ViewMode = "volume",
    density_scale: float = DEFAULT_DENSITY_SCALE,
    step: float | None = None,
    samples_per_chunk: int = SAMPLES_PER_CHUNK,
) -> Tensor:
    """Project a volume into every camera (sampling: see the module docstring).

    Modes, with ``I_i`` the intensity at sample ``i`` and ``delta`` the ray's sample spacing:

    - ``volume``: NeRF's emission-absorption quadrature with density ``k * I`` and colour ``I``:
      ``alpha_i = 1 - exp(-k I_i delta)``, ``T_i = prod_{j<i} (1 - alpha_j)``,
      ``pixel = sum_i T_i alpha_i I_i`` on a black background.
    - ``drr``: X-ray-like attenuation, ``pixel = 1 - exp(-sum_i k I_i delta)``.
    - ``mip``: maximum intensity projection, ``pixel = max_i I_i``.

    Args:
        volume: [X, Y, Z] float intensities in [0, 1]; the rendering runs on its device.
        world_from_voxel: [4, 4] voxel indices (voxel centres at integers) -> world units.
        cameras: the views to render.
        mode: ``"volume"``, ``"drr"`` or ``"mip"``.
        density_scale: k, density per unit intensity per world unit, >= 0 (unused by ``mip``).
        step: largest sample spacing along a ray, world units; default half the smallest voxel size.
        samples_per_chunk: samples evaluated at once, which bounds memory (whole rays per chunk).

    Returns:
        [N, H, W] float32 images, in [0, 1] for intensities in [0, 1], on ``volume``'s device.
    """
    if not isinstance(volume, Tensor) or volume.ndim != 3:
        description = tuple(volume.shape) if hasattr(volume, "shape") else type(volume).__name__
        raise ValueError(f"volume must be a 3D tensor [X, Y, Z], got {description}")
    if not volume.is_floating_point():
        raise ValueError(f"volume must hold float intensities in [0, 1], got dtype {volume.dtype}")
    if min(volume.shape) < 2:
        raise ValueError(f"volume needs at least 2 voxels along each axis, got {tuple(volume.shape)}")
    if mode not in VIEW_MODES:
        raise ValueError(f"mode must be one of {VIEW_MODES}, got {mode!r}")
    if not (density_scale >= 0 and math.isfinite(density_scale)):
        raise ValueError(f"density_scale must be finite and >= 0, got {density_scale}")
    world_from_voxel = torch.as_tensor(world_from_voxel, dtype=torch.float64).cpu()
    if world_from_voxel.shape != (4, 4):
        raise ValueError(f"world_from_voxel must be [4, 4], got {tuple(world_from_voxel.shape)}")
    if step is None:
        step = 0.5 * float(world_from_voxel[:3, :3].norm(dim=0).min())
    if not (step > 0 and math.isfinite(step)):
        raise ValueError(f"step must be finite and > 0, got {step}")
    if samples_per_chunk < 1:
        raise ValueError(f"samples_per_chunk must be >= 1, got {samples_per_chunk}")

    device = volume.device
    shape = (cameras.num_views, cameras.height, cameras.width)
    volume = volume.float()
    support = _nonzero_support(volume)
    if support is None:
        return torch.zeros(shape, device=device)

    # Rays are marched in grid_sample's normalised coordinates, an affine image of the world.
    grid_from_world = _grid_from_world(world_from_voxel, tuple(volume.shape)).to(device)
    cameras = ViewCameras(cameras.c2w.to(device).float(), cameras.width, cameras.height, cameras.projection)
    origins, directions = (rays.reshape(-1, 3) for rays in generate_rays(cameras))
    near, far = unit_sphere_chord(origins, directions)
    grid_origins = origins @ grid_from_world[:3, :3].T + grid_from_world[:3, 3]
    grid_directions = directions @ grid_from_world[:3, :3].T
    # The volume is zero outside its support box, so clipping the chords to it changes no pixel.
    box_near, box_far = _box_segment(grid_origins, grid_directions, *support)
    near, far = torch.maximum(near, box_near), torch.minimum(far, box_far)
    multiple = SAMPLE_COUNT_MULTIPLE
    n_samples = torch.ceil((far - near) / (step * multiple)).clamp(min=0).long() * multiple

    # Only rays with samples are marched (the others stay 0), those with the same number of samples
    # together, as [rays, samples] blocks.
    rays = torch.nonzero(n_samples > 0).flatten()
    n_samples, order = torch.sort(n_samples[rays], stable=True)
    rays = rays[order]
    if len(rays) == 0:
        return torch.zeros(shape, device=device)
    near, far = near[rays], far[rays]
    source, line_origins, line_directions = _sampling_source(volume, grid_origins[rays], grid_directions[rays])
    values = torch.empty(len(rays), device=device)
    threads = torch.get_num_threads() if device.type == "cpu" else 1
    with ThreadPoolExecutor(threads) if threads > 1 else contextlib.nullcontext() as pool:
        for n, chunk in _blocks(n_samples, samples_per_chunk):
            delta = (far[chunk] - near[chunk]) / n  # [R] world units
            first = line_origins[chunk] + (near[chunk] + 0.5 * delta)[:, None] * line_directions[chunk]
            grid = _line_grid(first, delta[:, None] * line_directions[chunk], n)
            values[chunk] = _project(_sample(source, grid, pool, threads), delta, mode, density_scale)
    images = torch.zeros(math.prod(shape), device=device)
    images[rays] = values
    return images.view(shape)


def _grid_from_world(world_from_voxel: Tensor, shape: tuple[int, int, int]) -> Tensor:
    """[4, 4] float32: world point -> ``grid_sample`` coordinates (align_corners=True).

    ``grid_sample`` reads the last grid component along the input's last axis, so the rows come in
    (Z, Y, X) order, each scaled so voxel index 0 maps to -1 and index ``size - 1`` to +1.
    """
    normalize = torch.zeros(4, 4, dtype=torch.float64)
    for row, axis in enumerate((2, 1, 0)):
        normalize[row, axis] = 2.0 / (shape[axis] - 1)
        normalize[row, 3] = -1.0
    normalize[3, 3] = 1.0
    return (normalize @ torch.linalg.inv(world_from_voxel)).float()


def _nonzero_support(volume: Tensor) -> tuple[Tensor, Tensor] | None:
    """The box outside which trilinear interpolation of ``volume`` [X, Y, Z] is exactly zero.

    Returns:
        lower and upper corners [3] in ``grid_sample`` coordinates ((Z, Y, X) order), or ``None``
        for an all-zero volume.
    """
    nonzero = volume != 0
    lower, upper = [], []
    for axis in (2, 1, 0):
        indices = torch.nonzero(nonzero.any(dim=tuple(a for a in range(3) if a != axis))).flatten()
        if len(indices) == 0:
            return None
        # Interpolation reaches one voxel beyond the outermost non-zero voxel centres.
        scale = 2.0 / (volume.shape[axis] - 1)
        lower.append(float(indices[0] - 1) * scale - 1.0)
        upper.append(float(indices[-1] + 1) * scale - 1.0)
    return torch.tensor(lower, device=volume.device), torch.tensor(upper, device=volume.device)


def _box_segment(origins: Tensor, directions: Tensor, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
    """Slab test: distances [R] where rays (origins [R, 3], directions [R, 3]) enter and leave a box."""
    t_lower, t_upper = (lower - origins) / directions, (upper - origins) / directions
    # A ray parallel to a slab is inside it for every t, or for none.
    inside = (origins > lower) & (origins < upper)
    unbounded = torch.where(inside, math.inf, -math.inf)
    parallel = directions == 0
    enter = torch.where(parallel, -unbounded, torch.minimum(t_lower, t_upper))
    leave = torch.where(parallel, unbounded, torch.maximum(t_lower, t_upper))
    return enter.amax(dim=-1), leave.amin(dim=-1)


def _blocks(n_samples: Tensor, samples_per_chunk: int) -> Iterator[tuple[int, slice]]:
    """Cut sorted per-ray sample counts [R] into chunks of rays that share one count.

    Yields (count, slice of rays); a chunk holds at most ``samples_per_chunk`` samples, or one ray.
    """
    counts, run_lengths = torch.unique_consecutive(n_samples, return_counts=True)
    end = 0
    for n, run_length in zip(counts.tolist(), run_lengths.tolist()):
        start, end = end, end + run_length
        rays_per_chunk = max(1, samples_per_chunk // n)
        for chunk_start in range(start, end, rays_per_chunk):
            yield n, slice(chunk_start, min(chunk_start + rays_per_chunk, end))


def _sampling_source(volume: Tensor, grid_origins: Tensor, grid_directions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The tensor to sample and the rays [R, D] (origins, directions) in its ``grid_sample`` coordinates.

    Usually the volume [X, Y, Z] itself, the rays unchanged (D = 3). When every ray keeps one voxel
    coordinate ``k`` (each image row of the orthographic orbit at elevation 0 on an axis-aligned grid
    lies in an axial plane), trilinear values along the ray equal bilinear values in the slice
    interpolated linearly at ``k``: the slices are then tiled into an atlas [A, B] and the rays
    mapped onto their tiles (D = 2), because the 2D sampler of ``grid_sample`` is vectorised on CPU
    and several times faster than the 3D one.
    """
    shape = volume.shape
    for component in range(3):
        axis = 2 - component  # grid components come in (Z, Y, X) order
        # Largest change of the coordinate along a chord (<= 2 world units), in voxels.
        drift = float(grid_directions[:, component].abs().max()) * (shape[axis] - 1)
        if drift < 1e-4:
            break
    else:
        return volume, grid_origins, grid_directions
    voxel_positions = (grid_origins[:, component] + 1) * (shape[axis] - 1) / 2
    positions, slice_of_ray = torch.unique(voxel_positions, return_inverse=True)
    if len(positions) > 4 * shape[axis]:  # keep the atlas within a few volumes' memory
        return volume, grid_origins, grid_directions

    slices = _interpolated_slices(volume, axis, positions)  # [K, P, Q]
    n_slices, rows, columns = slices.shape
    # One tile per slice, framed by zeros: samples lie inside the support box, at most one voxel
    # beyond the grid, so bilinear reads stay in their tile's frame.
    tiles_across = math.ceil(math.sqrt(n_slices))
    tiles_down = math.ceil(n_slices / tiles_across)
    tiles = slices.new_zeros(tiles_down * tiles_across, rows + 2, columns + 2)
    tiles[:n_slices, 1:-1, 1:-1] = slices
    atlas = tiles.view(tiles_down, tiles_across, rows + 2, columns + 2).transpose(1, 2)
    atlas = atlas.reshape(tiles_down * (rows + 2), tiles_across * (columns + 2))

    # Voxel index -> atlas pixel -> atlas grid_sample coordinates, for the two in-plane axes:
    # grid_sample 2D reads (x, y) = (atlas column, atlas row).
    row_axis, column_axis = (a for a in range(3) if a != axis)
    tile_origin = {
        row_axis: (slice_of_ray // tiles_across) * (rows + 2) + 1,
        column_axis: (slice_of_ray % tiles_across) * (columns + 2) + 1,
    }
    atlas_origins, atlas_directions = [], []
    for in_plane, atlas_size in ((column_axis, atlas.shape[1]), (row_axis, atlas.shape[0])):
        to_pixels = (shape[in_plane] - 1) / 2  # grid coordinate -> voxel index, once 1 is added
        to_atlas = 2.0 / (atlas_size - 1)  # atlas pixel -> atlas grid coordinate, once -1 is added
        origin = (tile_origin[in_plane] + (grid_origins[:, 2 - in_plane] + 1) * to_pixels) * to_atlas - 1
        atlas_origins.append(origin)
        atlas_directions.append(grid_directions[:, 2 - in_plane] * to_pixels * to_atlas)
    return atlas, torch.stack(atlas_origins, dim=-1), torch.stack(atlas_directions, dim=-1)


def _interpolated_slices(volume: Tensor, axis: int, positions: Tensor) -> Tensor:
    """Slices [K, P, Q] of ``volume`` [X, Y, Z] across ``axis``, linearly interpolated at fractional
    voxel ``positions`` [K] in [-1, size] (zero beyond the grid, as ``grid_sample`` pads)."""
    planes = F.pad(volume.movedim(axis, 0), (0, 0, 0, 0, 1, 1))  # a zero plane on each side
    lower = positions.floor().clamp(-1, volume.shape[axis] - 1)
    weight = (positions - lower)[:, None, None]
    index = lower.long() + 1
    return torch.lerp(planes[index], planes[index + 1], weight)


def _line_grid(first: Tensor, spacing: Tensor, n_samples: int) -> Tensor:
    """Points [R, S, D] ``first + s * spacing``, s = 0..S-1, for ``first``, ``spacing`` [R, D].

    Built as [D, R, S] (long contiguous rows: fast) and returned as a strided [R, S, D] view.
    """
    index = torch.arange(n_samples, dtype=first.dtype, device=first.device)
    return torch.addcmul(first.T[:, :, None], spacing.T[:, :, None], index).permute(1, 2, 0)


def _sample(source: Tensor, grid: Tensor, pool: ThreadPoolExecutor | None, threads: int) -> Tensor:
    """Linearly interpolated samples [R, S] of ``source`` ([X, Y, Z] or [A, B]) at ``grid`` [R, S, 3 or 2]
    (``grid_sample`` coordinates, 0 outside).

    On CPU, grid_sample uses one thread per batch item, so with a ``pool`` the rays are split among
    ``threads`` Python threads (torch releases the GIL); batching an expanded source instead would
    copy it on every call.
    """

    def sample(points: Tensor) -> Tensor:
        batched = points[(None,) * (source.ndim - 1)]  # [1, (1,) R, S, D]
        intensity = F.grid_sample(
            source[None, None], batched, mode="bilinear", padding_mode="zeros", align_corners=True
        )
        return intensity.view(points.shape[:2])

    if pool is None:
        return sample(grid)
    return torch.cat(list(pool.map(sample, grid.tensor_split(threads))))


def _project(intensity: Tensor, delta: Tensor, mode: str, density_scale: float) -> Tensor:
    """Pixel values [R] from intensities [R, S] sampled every ``delta`` [R] world units along each ray."""
    if mode == "mip":
        return intensity.amax(dim=-1)
    if mode == "drr":
        return -torch.expm1(-density_scale * delta * intensity.sum(dim=-1))
    # T_i alpha_i = T_i - T_{i+1}, with T_{i+1} = exp(-sum_{j<=i} k I_j delta) and T_0 = 1: one exp
    # instead of materialising alpha and T (in-place ops: these are the largest temporaries).
    transmittance_after = intensity.cumsum(dim=-1).mul_(-(density_scale * delta)[:, None]).exp_()
    weights = torch.sub(transmittance_after[:, :-1], transmittance_after[:, 1:])
    first = (1.0 - transmittance_after[:, 0]) * intensity[:, 0]
    return first + weights.mul_(intensity[:, 1:]).sum(dim=-1)
