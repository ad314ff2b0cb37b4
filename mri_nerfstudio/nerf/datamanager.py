"""Training rays in scaled K x K patches (GRAF / MedNeRF's ``FlexGridRaySampler``) for nerfstudio.

A patch of scale ``s`` is a square of side ``s * H`` rows by ``s * W`` columns at a random position
inside the image, cut into K x K equal cells; one ray goes through each cell centre. At ``s = 1`` the
patch covers the whole image with K x K evenly spread rays; at ``s = K / W`` the rays are K x K
neighbouring pixels. In between, rays fall between pixel centres and their ground truth is the
bilinear interpolation of the image (as MedNeRF fetches real patches with ``grid_sample``).
Scales below ``K / min(H, W)`` (rays closer than one pixel) are raised to it, so every ray lies
between the outermost pixel centres and interpolation never extrapolates.

Pixel coordinates are nerfstudio's (:meth:`Cameras.generate_rays` ``coords``): continuous ``(y, x)``
in pixels, pixel ``(row r, column c)`` spans ``[r, r + 1) x [c, c + 1)`` and its centre, where the
camera's ray for that pixel goes, is ``(r + 0.5, c + 0.5)``.

The scale is drawn per patch from ``U(s_min, max_scale)``, with ``s_min`` annealed as GRAF does
(:class:`PatchScaleSchedule`). Small K at large scales samples a coarse lattice (8 x 8 rays 16 px
apart on 128 px views, the outer ~7 px never hit): prefer K = 1 or MedNeRF's 32. Only training uses
patches; evaluation (``next_eval``, ``next_eval_image``) is nerfstudio's: random pixels, full images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Type

import torch
from jaxtyping import Float, Int
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManager, VanillaDataManagerConfig
from nerfstudio.data.pixel_samplers import PixelSampler
from nerfstudio.data.utils.dataloaders import CacheDataloader
from torch import Tensor

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.nerf.dataset import MRIViewDataset
from mri_nerfstudio.views import poses_looking_at_origin

# GRAF's annealing constants: the exponent grows by 3 * scale_anneal every 1000 steps.
ANNEAL_INTERVAL_STEPS = 1000
ANNEAL_EXPONENT_PER_INTERVAL = 3


@dataclass(frozen=True)
class PatchScaleSchedule:
    """Range ``[s_min(step), max_scale]`` of the patch scale (fraction of the image side a patch spans).

    ``s_min(step) = min(initial_min_scale, max(min_scale, max_scale * exp(-3 * scale_anneal * (step // 1000))))``:
    GRAF / MedNeRF's schedule. With its defaults ``s_min`` is 0.9 until step 14,999, 0.47 at step 100k
    and reaches 0.25 near step 185k: training starts on patches that cover most of the image and
    gradually adds close-ups. ``scale_anneal = 0`` disables annealing (``s_min = min_scale`` throughout).
    """

    min_scale: float = 0.25
    max_scale: float = 1.0
    scale_anneal: float = 0.0025
    initial_min_scale: float = 0.9

    def __post_init__(self) -> None:
        if not 0 < self.min_scale <= self.initial_min_scale <= self.max_scale <= 1:
            raise MRIInputError(
                "patch scales must satisfy 0 < min_scale <= initial_min_scale <= max_scale <= 1, got "
                f"{self.min_scale}, {self.initial_min_scale}, {self.max_scale}"
            )
        if self.scale_anneal < 0:
            raise MRIInputError(f"scale_anneal must be >= 0, got {self.scale_anneal}")

    def min_scale_at(self, step: int) -> float:
        """``s_min`` at training step ``step``."""
        if self.scale_anneal == 0:
            return self.min_scale
        exponent = self.scale_anneal * ANNEAL_EXPONENT_PER_INTERVAL * (step // ANNEAL_INTERVAL_STEPS)
        return min(self.initial_min_scale, max(self.min_scale, self.max_scale * math.exp(-exponent)))


def patch_grid(
    offsets: Float[Tensor, "P 2"], scales: Float[Tensor, "P"], patch_size: int, height: int, width: int
) -> Float[Tensor, "P K K 2"]:
    """Cell centres of K x K patches.

    Args:
        offsets: top-left corner ``(y, x)`` of each patch, pixels.
        scales: fraction of the image side each patch spans (``s * height`` rows, ``s * width`` columns).
        patch_size: K, rays per patch side.
        height: image height, pixels.
        width: image width, pixels.

    Returns:
        ``(y, x)`` pixel coordinates, ``[p, i, j]`` being row ``i``, column ``j`` of patch ``p``.
    """
    cell_centres = (torch.arange(patch_size, dtype=offsets.dtype, device=offsets.device) + 0.5) / patch_size
    ys = offsets[:, 0, None] + scales[:, None] * height * cell_centres  # [P, K]
    xs = offsets[:, 1, None] + scales[:, None] * width * cell_centres  # [P, K]
    return torch.stack([ys[:, :, None].expand(-1, -1, patch_size), xs[:, None, :].expand(-1, patch_size, -1)], dim=-1)


def sample_patch_coords(
    num_patches: int,
    patch_size: int,
    height: int,
    width: int,
    min_scale: float,
    max_scale: float,
    generator: Optional[torch.Generator] = None,
    device: torch.device | str = "cpu",
) -> Float[Tensor, "P K K 2"]:
    """Random K x K patches: scale ``s ~ U(min_scale, max_scale)``, raised to at least ``K / min(height, width)``,
    then a top-left corner uniform over the positions that keep the patch inside the image.

    Returns:
        ``(y, x)`` pixel coordinates (see :func:`patch_grid`), all within
        ``[0.5, height - 0.5] x [0.5, width - 0.5]``.
    """
    if not 1 <= patch_size <= min(height, width):
        raise MRIInputError(
            f"patch_size must be in 1..{min(height, width)} for {height}x{width} images, got {patch_size}"
        )
    uniform = torch.rand(num_patches, 3, generator=generator, device=device)
    scales = (min_scale + (max_scale - min_scale) * uniform[:, 0]).clamp(min=patch_size / min(height, width))
    free = (1.0 - scales[:, None]) * torch.tensor([height, width], dtype=scales.dtype, device=device)
    return patch_grid(uniform[:, 1:] * free, scales, patch_size, height, width)


def bilinear_sample(
    images: Float[Tensor, "N H W C"], image_indices: Int[Tensor, "*batch"], coords: Float[Tensor, "*batch 2"]
) -> Float[Tensor, "*batch C"]:
    """Images interpolated bilinearly at ``(y, x)`` pixel coordinates (nerfstudio's convention: pixel centres at
    ``+0.5``), clamped to the border pixels outside the outermost centres.

    Equal to ``grid_sample(..., align_corners=False, padding_mode="border")`` but gathers only the four
    neighbours of each point, so many patches from few images cost no image copies.

    Args:
        images: the image stack.
        image_indices: which image each point samples, same shape as ``coords[..., 0]``.
        coords: ``(y, x)`` pixels.
    """
    _, height, width, _ = images.shape
    y, x = coords[..., 0] - 0.5, coords[..., 1] - 0.5
    top, left = y.floor(), x.floor()
    wy, wx = (y - top)[..., None], (x - left)[..., None]
    top, left = top.long(), left.long()

    def pixel(row: Tensor, column: Tensor) -> Tensor:
        return images[image_indices, row.clamp(0, height - 1), column.clamp(0, width - 1)]

    upper = pixel(top, left) * (1 - wx) + pixel(top, left + 1) * wx
    lower = pixel(top + 1, left) * (1 - wx) + pixel(top + 1, left + 1) * wx
    return upper * (1 - wy) + lower * wy


@dataclass
class MRIDataManagerConfig(VanillaDataManagerConfig):
    """Training batches of scaled K x K ray patches from several views; evaluation as nerfstudio's."""

    _target: Type = field(default_factory=lambda: MRIDataManager)
    patch_size: int = 32
    """K: training rays come in K x K patches (MedNeRF: 32). 1: single rays at random sub-pixel positions."""
    patches_per_batch: Optional[int] = None
    """Patches per training step, each from a random training view (None: train_num_rays_per_batch // K^2, >= 1)."""
    min_scale: float = 0.25
    """Smallest patch scale s_min reaches (fraction of the image side a patch spans; MedNeRF: 0.25)."""
    max_scale: float = 1.0
    """Largest patch scale (1: a patch spans the whole image)."""
    scale_anneal: float = 0.0025
    """s_min = min(initial_min_scale, max(min_scale, max_scale * exp(-3 * scale_anneal * (step // 1000))));
    0: s_min = min_scale throughout."""
    initial_min_scale: float = 0.9
    """Upper bound of s_min (MedNeRF: 0.9, so patch scales vary from the first step)."""


class MRIDataManager(VanillaDataManager[MRIViewDataset]):
    """:class:`VanillaDataManager` whose training batches are scaled patches (:func:`sample_patch_coords`).

    ``next_train`` returns ``P * K * K`` rays, patch-major then row-major (``reshape(P, K, K, ...)`` gives the
    patches back), and ``{"image": [P*K*K, 3], "indices": [P*K*K, 3]}``: the bilinearly sampled ground
    truth and, per ray, (camera index, row, column) of the pixel it falls in.
    """

    config: MRIDataManagerConfig

    def setup_train(self) -> None:
        """Caches the training views (as :class:`VanillaDataManager` does) and checks the patch settings."""
        config = self.config
        self.scale_schedule = PatchScaleSchedule(
            config.min_scale, config.max_scale, config.scale_anneal, config.initial_min_scale
        )
        cameras = self.train_dataset.cameras
        height, width = int(cameras.height.max()), int(cameras.width.max())
        if not 1 <= config.patch_size <= min(height, width):
            raise MRIInputError(
                f"datamanager: patch_size must be in 1..{min(height, width)} for {height}x{width} views, got "
                f"{config.patch_size} (set --pipeline.datamanager.patch-size)"
            )
        if config.patches_per_batch is not None and config.patches_per_batch < 1:
            raise MRIInputError(f"datamanager: patches_per_batch must be >= 1 or None, got {config.patches_per_batch}")
        rays_per_patch = config.patch_size**2
        self.patches_per_batch = config.patches_per_batch or max(1, config.train_num_rays_per_batch // rays_per_patch)
        # In-memory views: no loader threads or worker processes to tune.
        self.train_image_dataloader = CacheDataloader(
            self.train_dataset,
            num_images_to_sample_from=config.train_num_images_to_sample_from,
            num_times_to_repeat_images=config.train_num_times_to_repeat_images,
            device=self.device,
            collate_fn=config.collate_fn,
            exclude_batch_keys_from_device=self.exclude_batch_keys_from_device,
        )
        self.iter_train_image_dataloader = iter(self.train_image_dataloader)
        self.train_cameras = cameras.to(self.device)

    def _get_pixel_sampler(self, dataset: MRIViewDataset, num_rays_per_batch: int) -> PixelSampler:
        """Eval rays: nerfstudio's random pixels (``patch_size`` is the training patch, not nerfstudio's)."""
        return self.config.pixel_sampler.setup(num_rays_per_batch=num_rays_per_batch)

    def next_train(self, step: int) -> tuple[RayBundle, dict[str, Tensor]]:
        """``patches_per_batch`` patches of K x K rays, each from a random cached training view."""
        self.train_count += 1
        image_batch = next(self.iter_train_image_dataloader)
        images, camera_of_image = image_batch["image"], image_batch["image_idx"]  # [N, H, W, 3], [N]
        num_patches, patch_size = self.patches_per_batch, self.config.patch_size
        min_scale, max_scale = self.scale_range(step)
        coords = sample_patch_coords(
            num_patches, patch_size, images.shape[1], images.shape[2], min_scale, max_scale, device=images.device
        )
        image_indices = torch.randint(len(images), (num_patches, 1, 1), device=images.device).expand(
            -1, patch_size, patch_size
        )
        pixels = bilinear_sample(images, image_indices, coords).reshape(-1, images.shape[-1])
        coords = coords.reshape(-1, 2)
        camera_indices = camera_of_image.to(images.device)[image_indices].reshape(-1, 1)
        ray_bundle = self.train_cameras.generate_rays(
            camera_indices=camera_indices.to(self.device), coords=coords.to(self.device)
        )
        indices = torch.cat([camera_indices, coords.floor().long()], dim=-1)
        return ray_bundle, {"image": pixels, "indices": indices}

    def scale_range(self, step: int) -> tuple[float, float]:
        """``(s_min, s_max)`` of the training patches at ``step``."""
        # A single ray has no extent: scale 0 is raised to one pixel, placing rays uniformly.
        if self.config.patch_size == 1:
            return 0.0, 0.0
        return self.scale_schedule.min_scale_at(step), self.config.max_scale

    def next_unseen_pose_patches(
        self, step: int, num_patches: int, elevation_band_deg: tuple[float, float] = (0.0, 0.0)
    ) -> RayBundle:
        """K x K patches of rays (no ground truth) at random poses on the training orbits.

        Each patch takes a random training camera's subject, distance and elevation, then a uniform
        azimuth in [0, 360) degrees and an elevation offset uniform in ``elevation_band_deg``; its scale
        and position are drawn as for training patches (:meth:`scale_range`). These are the unseen views
        of the same subjects that the adversarial loss renders as fakes.

        Returns:
            ``num_patches * K * K`` rays, patch-major then row-major, with ``metadata["subject_index"]``.
        """
        cameras, patch_size = self.train_cameras, self.config.patch_size
        device = cameras.device
        picked = torch.randint(len(cameras), (num_patches,), device=device)
        positions = cameras.camera_to_worlds[picked, :, 3]  # [P, 3]
        distance = positions.norm(dim=-1)
        elevation = torch.rad2deg(torch.asin((positions[:, 2] / distance).clamp(-1.0, 1.0)))
        low, high = elevation_band_deg
        uniform = torch.rand(num_patches, 2, device=device)
        poses = poses_looking_at_origin(
            (360.0 * uniform[:, 0]).cpu().numpy(),
            (elevation + low + (high - low) * uniform[:, 1]).cpu().numpy(),
            distance.cpu().numpy(),
        )
        unseen = Cameras(
            camera_to_worlds=poses.to(device),
            fx=cameras.fx[picked],
            fy=cameras.fy[picked],
            cx=cameras.cx[picked],
            cy=cameras.cy[picked],
            width=cameras.width[picked],
            height=cameras.height[picked],
            camera_type=cameras.camera_type[picked],
            metadata={"subject_index": cameras.metadata["subject_index"][picked]},
        )
        height, width = int(cameras.height.max()), int(cameras.width.max())
        coords = sample_patch_coords(num_patches, patch_size, height, width, *self.scale_range(step), device=device)
        camera_indices = torch.arange(num_patches, device=device)[:, None, None].expand(-1, patch_size, patch_size)
        return unseen.generate_rays(camera_indices=camera_indices.reshape(-1, 1), coords=coords.reshape(-1, 2))

    def get_train_rays_per_batch(self) -> int:
        return self.patches_per_batch * self.config.patch_size**2
