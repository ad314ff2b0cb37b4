"""Single-view reconstruction: a subject never seen in training, from one view, with a trained model.

As MedNeRF / GRAF do, the trained field is kept (or only fine-tuned) and the new subject's latent
code is optimised so that the rendered view matches the given one:

    loss = MSE(render(code, pose), view) + prior_weight * mean((code - mean) ** 2) / variance

where ``mean`` and ``variance`` are a Gaussian fitted to the training subjects' codes (isotropic: a
handful of subjects cannot estimate one variance per dimension). The optimisation starts from
:func:`initial_codes`: the slice encoder's prediction from the new subject's scans when the model has
an encoder and the scans are known, else the mean training code; with subject grids, from
:func:`initial_grid` (the encoder's grid from the scans, else the mean of the subjects' grids).

The new subject's empty space is skipped outside :func:`input_view_occupancy`: the visual hull of its
input view(s) alone, within the space where the field was trained (the union of the model's grids). Nothing
else of the subject (its brain mask, its other views) is read.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from nerfstudio.cameras.cameras import Cameras
from torch import Tensor, nn

from mri_nerfstudio.encoder_input import EncoderInput
from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.nerf.occupancy import OccupancyGrid, hull_of_views
from mri_nerfstudio.nerf.single_view_settings import SingleViewSettings
from mri_nerfstudio.nerf.subject_grids import SubjectFeatureGrids, vertex_tables


@dataclass
class FitHistory:
    """Loss terms per step of :func:`fit_single_view`."""

    mse: list[float] = field(default_factory=list)
    prior: list[float] = field(default_factory=list)


def trained_codes(model) -> Tensor:
    """[N, Ds + Da] the codes the model renders its N subjects with (encoder prediction + residual, or the table)."""
    with torch.no_grad():
        return model.codes_of(torch.arange(model.num_subjects, device=model.device)).detach()


def initial_codes(model, scans: EncoderInput | None = None) -> Tensor:
    """[Ds + Da] starting code of a subject not seen in training.

    With the slice encoder and the subject's scans (its :class:`EncoderInput`): the encoder's prediction,
    which is also what the model renders a held-out subject with. Otherwise the mean training code.
    """
    if model.encoder is None or scans is None:
        return trained_codes(model).mean(dim=0)
    inputs = (torch.from_numpy(array)[None].to(model.device) for array in (scans.scans, scans.present, scans.spacing_mm))
    with torch.no_grad():
        return model.encoder(*inputs)[0]


def trained_grids(model) -> Tensor:
    """[N, R^3, C] the subject grids the model renders its N subjects with (learned grid + the encoder's
    prediction from their scans, when it predicts one); the model must have subject grids."""
    with torch.no_grad():
        tables = model.subject_grids.tables.detach().clone()
        predicted = model.predicted_grid_tables(torch.arange(model.num_subjects, device=model.device)) or {}
        for subject, table in predicted.items():
            tables[subject] += table
        return tables


def initial_grid(model, scans: EncoderInput | None = None) -> Tensor | None:
    """[R^3, C] starting subject grid of a subject not seen in training, or None when the model has no subject grids.

    With the encoder's grid head and the subject's scans: its prediction from them (what the model renders a
    held-out subject with). Otherwise the mean of the subjects' grids, as the mean code stands in for a code: for
    held-out real brains it starts 5.1 dB and ends a one-view fit 0.8 dB above a zero grid (val views,
    benchmarks/notes/subjects.md).
    """
    if model.subject_grids is None:
        return None
    if model.encoder is not None and model.encoder.grid_head is not None and scans is not None:
        with torch.no_grad():
            volume = model.encoder.grid_head(torch.from_numpy(scans.scans)[None].to(model.device))
            return vertex_tables(volume, model.subject_grids.resolution)[0]
    return trained_grids(model).mean(dim=0)


def code_prior(model) -> tuple[Tensor, float]:
    """Mean [Ds + Da] and isotropic variance of the training codes (the initial spread for a single subject)."""
    codes = trained_codes(model)
    floor = model.config.code_init_std**2
    variance = float(codes.var(dim=0).mean()) if len(codes) > 1 else floor
    return codes.mean(dim=0), max(variance, floor)


def input_view_occupancy(model, views: Tensor, cameras: Cameras) -> Tensor | None:
    """[G, G, G] bool on the model's device: where a new subject seen only in ``views`` may be, or None when
    ``model`` skips no space.

    The visual hull of ``views`` [V, H, W] seen by ``cameras`` [V] (dilated by the model's
    ``occupancy_margin``), intersected with the union of the model's occupancy grids: outside it the field
    was never trained, so its density there means nothing.
    """
    if model.occupancy is None:
        return None
    hull = hull_of_views(views.detach().cpu(), cameras, model.occupancy.resolution, model.config.occupancy_margin)
    return hull.to(model.occupancy.grids.device) & model.occupancy.grids.any(dim=0)


def single_subject_model(model, code: Tensor, occupancy: Tensor | None, grid: Tensor | None = None):
    """A copy of ``model`` whose only subject (index 0, which rays without a subject render) has ``code``.

    The copy has no slice encoder (its code is explicit) and no input scans. When the model has subject
    grids, the copy's grid is ``grid`` [R^3, C] (:func:`initial_grid`; None: zeros). It skips the space outside
    ``occupancy`` [G, G, G] bool (:func:`input_view_occupancy`; None: it evaluates every sample).
    """
    copied = copy.deepcopy(model)
    copied.subject_codes = nn.Embedding(1, code.numel()).to(code.device)
    with torch.no_grad():
        copied.subject_codes.weight.copy_(code.reshape(1, -1))
    copied.num_subjects = 1
    if model.subject_grids is not None:
        grids = model.subject_grids
        copied.subject_grids = SubjectFeatureGrids(1, grids.resolution, grids.channels).to(code.device)
        if grid is not None:
            with torch.no_grad():
                copied.subject_grids.tables[0] = grid
    copied.encoder = None
    for name in ("encoder_scans", "encoder_present", "encoder_spacing_mm"):
        if hasattr(copied, name):
            delattr(copied, name)
    copied.occupancy = None if occupancy is None else OccupancyGrid(occupancy[None]).to(code.device)
    return copied


def fit_single_view(
    model, view: Tensor, camera: Cameras, settings: SingleViewSettings, scans: EncoderInput | None = None
) -> tuple[object, FitHistory]:
    """Fit a new subject to one view (or to a few: each step draws its rays from the next view in turn).

    Args:
        model: a trained :class:`~mri_nerfstudio.nerf.model.MRIMedNeRFModel` (left unchanged).
        view: [H, W] (or [V, H, W]) float in [0, 1], the subject seen by ``camera``.
        camera: nerfstudio ``Cameras`` of shape [1] (or [V]) of the run's orbit.
        settings: steps, learning rates, prior.
        scans: the subject's encoder input, when known (see :func:`initial_codes`).

    Returns:
        The single-subject model (:func:`single_subject_model`) with the fitted code (and field), in
        eval mode, and the loss history.
    """
    if settings.steps < 0 or settings.rays_per_step < 1:
        raise MRIInputError(f"steps must be >= 0 and rays per step >= 1, got {settings.steps}, {settings.rays_per_step}")
    views = view if view.ndim == 3 else view[None]
    height, width = int(camera.height.flatten()[0]), int(camera.width.flatten()[0])
    if tuple(views.shape[1:]) != (height, width) or len(views) != len(camera):
        raise MRIInputError(
            f"views are {tuple(views.shape)} pixels for {len(camera)} camera(s) of {height} x {width}, expected one view each"
        )
    prior_mean, prior_variance = code_prior(model)
    occupancy = input_view_occupancy(model, views, camera)
    fitted = single_subject_model(model, initial_codes(model, scans), occupancy, initial_grid(model, scans))
    fitted.eval()  # deterministic ray samples and no density noise: the field as it renders
    local = [] if fitted.subject_grids is None else list(fitted.subject_grids.parameters())
    for parameter in [*fitted.field.parameters(), *local]:
        parameter.requires_grad_(settings.finetune_field)
    groups = [{"params": fitted.subject_codes.parameters(), "lr": settings.code_learning_rate}]
    if settings.finetune_field:
        groups.append({"params": fitted.field.parameters(), "lr": settings.field_learning_rate})
        if local:
            groups.append({"params": local, "lr": settings.subject_grid_learning_rate})
    optimizer = torch.optim.Adam(groups, eps=1e-15)

    device = fitted.device
    cameras = camera.to(device)
    rays = [cameras.generate_rays(camera_indices=i).flatten() for i in range(len(cameras))]
    pixels = [image.reshape(-1, 1).expand(-1, 3).to(device, torch.float32) for image in views]
    generator = torch.Generator().manual_seed(settings.seed)
    history = FitHistory()
    for step in range(settings.steps):
        index = step % len(rays)
        chosen = torch.randperm(len(pixels[index]), generator=generator)[: settings.rays_per_step].to(device)
        rgb = fitted(rays[index][chosen])["rgb"]  # forward: clips the rays to the unit sphere, then renders
        mse = F.mse_loss(rgb, pixels[index][chosen])
        code = fitted.subject_codes.weight[0]
        prior = ((code - prior_mean.to(device)) ** 2).mean() / prior_variance
        loss = mse + settings.prior_weight * prior
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.mse.append(float(mse))
        history.prior.append(float(prior))
    for parameter in fitted.parameters():
        parameter.requires_grad_(False)
    return fitted, history


@torch.no_grad()
def render_orbit(model, cameras: Cameras) -> Tensor:
    """[N, H, W] float32 in [0, 1] on the CPU: subject 0 of ``model`` seen by each camera (grey: mean of rgb)."""
    images = []
    for index in range(len(cameras)):
        outputs = model.get_outputs_for_camera(cameras[index : index + 1].to(model.device))
        images.append(outputs["rgb"].clamp(0.0, 1.0).mean(dim=-1).cpu())
    return torch.stack(images)


@dataclass
class SingleViewResult:
    """A fitted subject, its orbit renders and, when the subject's ground truth is known, its scores."""

    model: object
    """The single-subject model with the fitted code."""
    renders: Tensor
    """[N, H, W] float32: every view of the orbit rendered from the fit."""
    history: FitHistory
    scores: dict[str, float] = field(default_factory=dict)
    """``input_view_psnr``, ``psnr``/``ssim`` (+ ``_std``) over the other views, ``volume_psnr``/``volume_ssim``."""
    baseline_scores: dict[str, float] = field(default_factory=dict)
    """The same for the starting code and grid (:func:`initial_codes`, :func:`initial_grid`) without any fitting."""


def reconstruct_from_view(
    model,
    orbit: Cameras,
    view_index: int | Sequence[int],
    view: Tensor,
    settings: SingleViewSettings,
    truth=None,
    baseline: bool = True,
    scans: EncoderInput | None = None,
) -> SingleViewResult:
    """Fit a new subject to view ``view_index`` of ``orbit`` (or to several), render the whole orbit and score it.

    Args:
        model: a trained :class:`~mri_nerfstudio.nerf.model.MRIMedNeRFModel`.
        orbit: the run's N orbit cameras.
        view_index: which camera saw ``view`` (a list: which cameras saw the views, in order).
        view: [H, W] (a list of indices: [V, H, W]) float in [0, 1].
        settings: fitting settings.
        truth: the subject's :class:`~mri_nerfstudio.prepare.PreparedSubject` (its N views and volume),
            or None when only the view is known (nothing is scored then).
        baseline: also score the unfitted start (with the encoder and ``scans``: the encoder's prediction;
            otherwise the mean training code and subject grid, the trivial baseline).
        scans: the subject's encoder input, when known (see :func:`initial_codes`).
    """
    from mri_nerfstudio.metrics import view_scores
    from mri_nerfstudio.nerf.field_sampling import subject_volume_scores

    indices = [view_index] if isinstance(view_index, int) else list(view_index)
    views = view.reshape(len(indices), *view.shape[-2:])
    if not indices or not all(0 <= i < len(orbit) for i in indices) or len(set(indices)) != len(indices):
        raise MRIInputError(f"view indices must be distinct, in 0..{len(orbit) - 1}, got {indices}")
    input_cameras = orbit[torch.tensor(indices)]
    fitted, history = fit_single_view(model, views, input_cameras, settings, scans)
    result = SingleViewResult(model=fitted, renders=render_orbit(fitted, orbit), history=history)
    if truth is None:
        return result
    truths = torch.from_numpy(truth.images).float()
    if truths.shape != result.renders.shape:
        raise MRIInputError(
            f"ground-truth views are {tuple(truths.shape)}, the run renders {tuple(result.renders.shape)}", truth.directory
        )
    others = [i for i in range(len(orbit)) if i not in indices]
    with_volume = model.view_mode != "mip"

    def scores_of(subject_model, renders: Tensor) -> dict[str, float]:
        scores = {"input_view_psnr": view_scores(renders[indices], views)["psnr"]}
        scores.update(view_scores(renders[others], truths[others]))
        if with_volume:
            scores.update(subject_volume_scores(subject_model, truth, 0))
        return scores

    result.scores = scores_of(fitted, result.renders)
    if baseline:
        occupancy = input_view_occupancy(model, views, input_cameras)
        start = single_subject_model(model, initial_codes(model, scans), occupancy, initial_grid(model, scans))
        start.eval()
        result.baseline_scores = scores_of(start, render_orbit(start, orbit))
    return result
