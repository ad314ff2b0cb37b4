"""Classical reconstructions of a volume from its orbit views: the baselines a learned volume is measured against.

- ``drr`` views (``pixel = 1 - exp(-k * line integral)``): on the orthographic orbit at elevation 0, image
  row ``v`` of every view is the parallel projection of one axial slice (world ``z`` fixed) at the view's
  azimuth, so the rows make one sinogram per slice, reconstructed slice by slice by filtered
  back-projection (:func:`filtered_back_projection`, ``skimage.transform.iradon``) or by SART
  (:func:`sart`, ``skimage.transform.iradon_sart``).
- ``volume`` views (emission-absorption with density ``k I`` and colour ``I``): a voxel grid of
  intensities ``I`` tied to that image formation, rendered with the quadrature of
  :func:`mri_nerfstudio.views.render_views` (:func:`render_axial_orbit`, the same images for this
  geometry, vectorised over image rows) and fitted to the views by Adam on MSE plus total variation
  (:func:`fit_tied_voxel_grid`).

Geometry (checked against ``skimage.transform.radon`` on a phantom in the tests). The camera at azimuth
``a`` looks along ``(sin a, -cos a, 0)`` and its image right is ``(-cos a, -sin a, 0)``, so the pixel
column ``u`` of a point ``(x, y)`` sits at ``t = (u + 0.5 - cx) = fx (-x cos a - y sin a)`` pixels from
the image centre. skimage back-projects pixel ``(row r, column c)`` of an ``M x M`` slice to
``t = (c - M // 2) cos(theta) - (r - M // 2) sin(theta)``: with ``theta = a``, column ``c`` is
``x = -(c - M // 2) / fx`` and row ``r`` is ``y = (r - M // 2) / fx``. skimage puts its detector centre
on a sample (``M // 2``) while an even-width view has its centre between two pixels, so each view row
is resampled (linearly) onto ``M = 2 * ceil(W / 2) + 1`` detector samples at whole pixels from the
centre before the reconstruction.

No nerfstudio here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import map_coordinates
from skimage.transform import iradon, iradon_sart
from torch import Tensor

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.views import ViewCameras

POSE_TOLERANCE = 1e-5
"""Largest out-of-plane component of a viewing direction (world units per unit) for an axial orbit."""


@dataclass(frozen=True)
class GridVolume:
    """Intensities on a grid with a known placement in the world frame.

    Attributes:
        values: [X, Y, Z] float32 intensities.
        world_from_voxel: [4, 4] float64, voxel index (centres at integers) -> world units.
    """

    values: np.ndarray
    world_from_voxel: np.ndarray

    def sample(self, points_world: np.ndarray) -> np.ndarray:
        """Trilinear values [P] float32 at world points [P, 3] (0 outside the grid)."""
        voxel_from_world = np.linalg.inv(self.world_from_voxel)
        voxels = np.asarray(points_world, dtype=np.float64) @ voxel_from_world[:3, :3].T + voxel_from_world[:3, 3]
        return map_coordinates(self.values, voxels.T, order=1, mode="constant", cval=0.0).astype(np.float32)

    def on_grid(self, mask: np.ndarray, world_from_voxel: np.ndarray) -> np.ndarray:
        """These intensities at the voxel centres of another grid, inside its ``mask``, 0 elsewhere.

        Args:
            mask: [X', Y', Z'] bool, the voxels to fill (e.g. a brain mask).
            world_from_voxel: [4, 4] voxel index of that grid -> world units.

        Returns:
            [X', Y', Z'] float32.
        """
        voxels = np.argwhere(mask).astype(np.float64)
        transform = np.asarray(world_from_voxel, dtype=np.float64)
        estimate = np.zeros(mask.shape, dtype=np.float32)
        estimate[mask] = self.sample(voxels @ transform[:3, :3].T + transform[:3, 3])
        return estimate


def check_axial_orbit(cameras: ViewCameras) -> None:
    """Refuse cameras that are not an orthographic orbit about world Z at elevation 0 with centred square pixels.

    Raises:
        MRIInputError: naming what differs.
    """
    c2w = cameras.c2w.double()
    if cameras.projection != "orthographic":
        raise MRIInputError(f"slice-wise reconstruction needs orthographic views, got {cameras.projection}")
    tilt = float(max(c2w[:, 2, 2].abs().max(), (c2w[:, 2, 1] - 1.0).abs().max()))
    if tilt > POSE_TOLERANCE:
        raise MRIInputError(
            "slice-wise reconstruction needs an orbit about world Z at elevation 0 (image up = +Z), "
            f"the cameras tilt by up to {tilt:.3g}"
        )


def axial_sinograms(views: np.ndarray, cameras: ViewCameras, density_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """The line integrals of ``drr`` views, one sinogram per image row (axial slice), in skimage's layout.

    Args:
        views: [N, H, W] ``drr`` pixels ``1 - exp(-k * integral of I)`` in [0, 1).
        cameras: the N views' cameras (an axial orbit, see :func:`check_axial_orbit`).
        density_scale: k, per unit intensity per world unit.

    Returns:
        sinograms [H, M, N] float64: the integral of the intensity along each ray in pixel units
        (``fx`` pixels per world unit), detector sample ``j`` at ``j - M // 2`` pixels from the image
        centre (module docstring); theta [N] float64, the views' azimuths in degrees.
    """
    views = np.asarray(views, dtype=np.float64)
    if views.ndim != 3 or views.shape != (cameras.num_views, cameras.height, cameras.width):
        raise MRIInputError(
            f"views: expected [{cameras.num_views}, {cameras.height}, {cameras.width}], got {views.shape}"
        )
    if not density_scale > 0:
        raise MRIInputError(f"density_scale must be > 0, got {density_scale}")
    check_axial_orbit(cameras)
    integrals = -np.log1p(-np.clip(views, 0.0, 1.0 - 1e-6)) / density_scale * cameras.fx  # [N, H, W] pixel units
    size = 2 * math.ceil(cameras.width / 2) + 1
    detector = np.arange(size) - size // 2  # whole pixels from the centre, skimage's samples
    pixel_offsets = np.arange(cameras.width) + 0.5 - cameras.cx  # each view column's offset, pixels
    sinograms = np.empty((cameras.height, size, cameras.num_views))
    for view, image in enumerate(integrals):
        for row, profile in enumerate(image):
            sinograms[row, :, view] = np.interp(detector, pixel_offsets, profile, left=0.0, right=0.0)
    return sinograms, cameras.azimuth_deg.numpy()


def _slices_to_volume(slices: list[np.ndarray], cameras: ViewCameras) -> GridVolume:
    """Stack reconstructed axial slices [M, M] (skimage's row, column; one per view row) into a world-aligned
    volume [M, M, H] indexed (x, y, view row) and its placement (module docstring)."""
    size = slices[0].shape[0]
    centre = size // 2
    # Column c is x = -(c - centre) / fx: reversing the columns makes index i = x * fx + centre.
    values = np.stack([image[:, ::-1].T for image in slices], axis=-1).astype(np.float32)
    world_from_voxel = np.array(
        [
            [1 / cameras.fx, 0.0, 0.0, -centre / cameras.fx],
            [0.0, 1 / cameras.fx, 0.0, -centre / cameras.fx],
            [0.0, 0.0, -1 / cameras.fy, (cameras.cy - 0.5) / cameras.fy],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    return GridVolume(values, world_from_voxel)


def filtered_back_projection(
    views: np.ndarray, cameras: ViewCameras, density_scale: float, filter_name: str = "ramp"
) -> GridVolume:
    """Filtered back-projection of ``drr`` views, slice by slice (``skimage.transform.iradon``), negatives set to 0.

    Args:
        views: [N, H, W] ``drr`` views of an axial orbit (:func:`axial_sinograms`).
        cameras: their cameras.
        density_scale: k of the views.
        filter_name: skimage's filter (``ramp``, ``shepp-logan``, ``cosine``, ``hamming``, ``hann``).

    Returns:
        Intensities [M, M, H] on the world grid of the views' pixels (voxel size ``1 / fx`` world units
        in-plane, ``1 / fy`` between slices).
    """
    sinograms, theta = axial_sinograms(views, cameras, density_scale)
    size = sinograms.shape[1]
    slices = [
        np.maximum(iradon(sinogram, theta=theta, output_size=size, filter_name=filter_name, circle=True), 0.0)
        for sinogram in sinograms
    ]
    return _slices_to_volume(slices, cameras)


def sart(
    views: np.ndarray, cameras: ViewCameras, density_scale: float, iterations: int = 2, relaxation: float = 0.15
) -> GridVolume:
    """SART (``skimage.transform.iradon_sart``) of ``drr`` views, slice by slice, intensities kept >= 0.

    Args:
        views, cameras, density_scale: as :func:`filtered_back_projection`.
        iterations: SART sweeps over all views, each starting from the last.
        relaxation: skimage's relaxation factor.

    Returns:
        Intensities [M, M, H] on the grid of :func:`filtered_back_projection`.
    """
    if iterations < 1:
        raise MRIInputError(f"iterations must be >= 1, got {iterations}")
    sinograms, theta = axial_sinograms(views, cameras, density_scale)
    slices = []
    for sinogram in sinograms:
        image = None
        for _ in range(iterations):
            image = iradon_sart(sinogram, theta=theta, image=image, clip=(0.0, np.inf), relaxation=relaxation)
        slices.append(image)
    return _slices_to_volume(slices, cameras)


def total_variation(volume: Tensor, epsilon: float = 1e-8) -> Tensor:
    """Isotropic total variation, [X, Y, Z] -> []: the mean over voxels of ``|grad I|`` by forward differences."""
    dx = volume[1:, :-1, :-1] - volume[:-1, :-1, :-1]
    dy = volume[:-1, 1:, :-1] - volume[:-1, :-1, :-1]
    dz = volume[:-1, :-1, 1:] - volume[:-1, :-1, :-1]
    return (dx.square() + dy.square() + dz.square() + epsilon).sqrt().mean()


def cube_world_from_voxel(size: int) -> np.ndarray:
    """[4, 4] voxel -> world for ``size^3`` voxel centres spanning ``[-1, 1]^3`` (voxel 0 at -1, ``size - 1`` at +1)."""
    transform = np.eye(4)
    transform[:3, :3] *= 2.0 / (size - 1)
    transform[:3, 3] = -1.0
    return transform


def render_axial_orbit(intensity: Tensor, cameras: ViewCameras, density_scale: float, samples_per_ray: int) -> Tensor:
    """``volume`` views of a cube grid seen by an axial orbit: the emission-absorption of
    :func:`~mri_nerfstudio.views.render_views` (density ``k I``, colour ``I``, black background), vectorised
    over image rows for this geometry and differentiable in ``intensity``.

    Every ray is sampled at ``samples_per_ray`` midpoints of equal parts of its depth range ``[-1, 1]``
    (world units from the image plane through the origin, front to back); the grid must be 0 outside
    the unit sphere for this to equal ``render_views``' integral over the sphere's chord (the two
    quadratures then agree to their discretisation, as the tests check). Image row ``v`` lies in the
    axial plane ``z_v``: the grid is interpolated linearly at those planes once, then every view samples
    all planes bilinearly at once (the rows are ``grid_sample``'s channels).

    Args:
        intensity: [G, G, G] float intensities on :func:`cube_world_from_voxel`.
        cameras: an axial orbit (:func:`check_axial_orbit`).
        density_scale: k, per unit intensity per world unit.
        samples_per_ray: samples along each ray.

    Returns:
        [N, H, W] float32 views.
    """
    check_axial_orbit(cameras)
    size = intensity.shape[0]
    if intensity.ndim != 3 or len(set(intensity.shape)) != 1 or size < 2:
        raise MRIInputError(f"intensity must be a cube grid [G, G, G] with G >= 2, got {tuple(intensity.shape)}")
    rows = torch.arange(cameras.height, dtype=torch.float64)
    columns = torch.arange(cameras.width, dtype=torch.float64)
    heights = (cameras.cy - rows - 0.5) / cameras.fy  # [H] world z of each image row
    offsets = (columns + 0.5 - cameras.cx) / cameras.fx  # [W] world units along each camera's image right
    spacing = 2.0 / samples_per_ray
    depths = -1.0 + (torch.arange(samples_per_ray, dtype=torch.float64) + 0.5) * spacing  # [D]

    # Axial planes at the row heights, [H, G (y), G (x)]: linear along z, zero beyond the grid.
    position = (heights + 1.0) * (size - 1) / 2
    lower = position.floor().clamp(0, size - 2).long()
    weight = (position - lower).to(intensity.dtype)
    within = ((position >= 0) & (position <= size - 1)).to(intensity.dtype)
    planes = torch.lerp(intensity[:, :, lower], intensity[:, :, lower + 1], weight) * within  # [G (x), G (y), H]
    planes = planes.permute(2, 1, 0)[None]  # grid_sample reads (x, y) as (last axis, second to last)

    c2w = cameras.c2w.double()
    right, forward = c2w[:, :2, 0], -c2w[:, :2, 2]  # [N, 2] in the axial plane (x, y)
    points = (
        offsets[None, :, None, None] * right[:, None, None, :] + depths[None, None, :, None] * forward[:, None, None, :]
    )  # [N, W, D, 2] world (x, y) = grid_sample coordinates of the cube
    grid = points.reshape(1, -1, samples_per_ray, 2).to(intensity.dtype)
    sampled = F.grid_sample(planes, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0]  # [H, N W, D]
    # T_i alpha_i = exp(-sum_{j<i} tau_j) (1 - exp(-tau_i)) = exp(-sum_{j<=i} tau_j) (exp(tau_i) - 1), tau = k I delta.
    optical_depth = sampled * (density_scale * spacing)
    pixels = (torch.exp(-optical_depth.cumsum(dim=-1)) * torch.expm1(optical_depth) * sampled).sum(dim=-1)
    return pixels.view(cameras.height, cameras.num_views, cameras.width).permute(1, 0, 2).float()


def fit_tied_voxel_grid(
    views: np.ndarray,
    cameras: ViewCameras,
    density_scale: float,
    size: int = 65,
    tv_weight: float = 1e-3,
    steps: int = 300,
    learning_rate: float = 0.02,
    views_per_step: int = 15,
    initial_intensity: float = 0.5,
    seed: int = 0,
) -> GridVolume:
    """A grid of intensities ``I`` >= 0 whose ``volume`` renders (density ``k I``, colour ``I``) match the views.

    Each step renders ``views_per_step`` of the views (all of them when there are no more; otherwise
    drawn in a random order, each once per pass) with :func:`render_axial_orbit` (two samples per voxel
    along each ray, as :func:`~mri_nerfstudio.views.render_views` spaces them by default) and takes an Adam step on
    ``MSE + tv_weight * total_variation(I)``; ``I`` is then clipped at 0 and kept 0 outside the unit
    sphere. The grid starts at ``initial_intensity`` inside the sphere (``I = 0`` would have no
    gradient: a pixel is ``sum_i T_i (1 - exp(-k I_i delta)) I_i``, quadratic in a small ``I``).

    Args:
        views: [N, H, W] ``volume`` views in [0, 1].
        cameras: their cameras, an axial orbit (:func:`check_axial_orbit`).
        density_scale: k of the views.
        size: voxels per axis over ``[-1, 1]^3``.
        tv_weight: weight of :func:`total_variation` against the mean squared pixel error.
        steps: optimisation steps.
        learning_rate: Adam's step size (intensity units).
        views_per_step: views rendered per step (bounds a step's cost).
        initial_intensity: the starting intensity inside the unit sphere.
        seed: seeds the order in which the views are drawn.

    Returns:
        Intensities [size, size, size] on :func:`cube_world_from_voxel`.
    """
    views_tensor = torch.as_tensor(np.asarray(views), dtype=torch.float32)
    if views_tensor.shape != (cameras.num_views, cameras.height, cameras.width):
        raise MRIInputError(
            f"views: expected [{cameras.num_views}, {cameras.height}, {cameras.width}], got {tuple(views_tensor.shape)}"
        )
    if size < 2 or steps < 0 or tv_weight < 0 or views_per_step < 1:
        raise MRIInputError(
            "fit_tied_voxel_grid needs size >= 2, steps >= 0, tv_weight >= 0, views_per_step >= 1; got "
            f"{size}, {steps}, {tv_weight}, {views_per_step}"
        )
    axis = torch.linspace(-1.0, 1.0, size)
    inside = (torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).norm(dim=-1) <= 1.0).float()
    intensity = (initial_intensity * inside).requires_grad_()
    optimizer = torch.optim.Adam([intensity], lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)
    per_step = min(views_per_step, cameras.num_views)
    order: list[int] = []
    for _ in range(steps):
        if len(order) < per_step:
            order += torch.randperm(cameras.num_views, generator=generator).tolist()
        chosen, order = order[:per_step], order[per_step:]
        batch = cameras.subset(chosen)
        rendered = render_axial_orbit(intensity, batch, density_scale, samples_per_ray=2 * (size - 1))
        loss = (rendered - views_tensor[chosen]).square().mean() + tv_weight * total_variation(intensity)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            intensity.clamp_(min=0.0).mul_(inside)
    return GridVolume(intensity.detach().numpy().copy(), cube_world_from_voxel(size))
