"""The MedNeRF model for nerfstudio: per-subject codes, a conditional radiance field, a view-mode renderer.

Rays are clipped to the unit sphere (the scene of :mod:`mri_nerfstudio.views`: each brain fits it),
sampled uniformly (stratified in training, bin midpoints otherwise: the quadrature of the views),
optionally resampled by importance, and rendered as the views were formed (``view_mode`` of the
dataparser metadata): ``volume`` emission-absorption, ``drr`` attenuation or ``mip``. Each subject has a
learned code, split into a shape code (conditions the density) and an appearance code (the colour),
as GRAF splits its latent.

Two presets (``--pipeline.model.preset``, :mod:`~mri_nerfstudio.nerf.presets`) pick the network, its sizes
and its learning rate: ``mednerf`` (GRAF / MedNeRF's MLP, for a GPU) and ``cpu`` (dense feature grids + a
tiny MLP with a total-variation prior on the grids: minutes on two CPU cores).

With the slice encoder on (``--pipeline.model.encoder.enabled``; ``auto`` = on for two or more
subjects), a subject's codes are the encoder's prediction from its scans plus a learned residual that
starts at zero, and with subject grids so is its grid (the encoder's grid head reads the scans in place):
a subject that was never trained on (held out by ``--train-subjects``) is rendered from its scans alone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Annotated, Optional, Tuple, Type

import torch
import torch.nn.functional as F
import tyro
from nerfstudio.cameras.rays import RayBundle, RaySamples
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.field_components.field_heads import FieldHeadNames
from nerfstudio.model_components.ray_samplers import PDFSampler, UniformSampler
from nerfstudio.model_components.scene_colliders import SphereCollider
from nerfstudio.models.base_model import Model, ModelConfig
from nerfstudio.utils import colormaps
from nerfstudio.viewer.viewer_elements import ViewerDropdown
from torch import Tensor, nn
from torch.nn import Parameter
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.nerf.encoder import SliceEncoder, SliceEncoderConfig
from mri_nerfstudio.nerf.field import (
    ColourModel,
    ConditionalRadianceField,
    FeatureGridBackbone,
    MLPBackbone,
    RadianceBackbone,
)
from mri_nerfstudio.nerf.occupancy import OccupancyGrid, evaluate_field
from mri_nerfstudio.nerf.presets import PRESETS, PRESETS_HELP, FieldPreset, PresetName
from mri_nerfstudio.nerf.renderers import MeanIntensityRenderer, renderer_for_view_mode
from mri_nerfstudio.nerf.subject_grids import SubjectFeatureGrids, vertex_tables
from mri_nerfstudio.nerf.viewer_camera import OrbitViewerCamera
from mri_nerfstudio.nerf.viewer_slice import ViewerSlicePlane, difference_colours
from mri_nerfstudio.uncertainty import blend_spread
from mri_nerfstudio.views import DEFAULT_DENSITY_SCALE
from mri_nerfstudio.volume import MODALITIES


@dataclass
class MRIMedNeRFModelConfig(ModelConfig):
    """MedNeRF-style conditional radiance field of brain MRI views.

    ``enable_collider`` and ``collider_params`` are unused: rays are always clipped to the unit sphere.
    """

    _target: Type = field(default_factory=lambda: MRIMedNeRFModel)
    preset: Annotated[PresetName, tyro.conf.arg(help=PRESETS_HELP)] = "mednerf"
    num_samples: Optional[int] = None
    """Uniform samples per ray (None: the preset's)."""
    num_importance_samples: Optional[int] = None
    """Extra samples per ray drawn from the first pass's weights (0: none; None: the preset's)."""
    shape_code_dim: Optional[int] = None
    """Size of each subject's shape code (None: the preset's)."""
    appearance_code_dim: Optional[int] = None
    """Size of each subject's appearance code (None: the preset's)."""
    density_noise_std: Optional[float] = None
    """Std of the noise on the density logits at step 0 (None: the preset's)."""
    density_noise_steps: Optional[int] = None
    """Steps over which the density noise decays linearly to 0 (0: no noise; None: the preset's)."""
    colour: ColourModel = "free"
    """``free``: a colour head conditioned on the appearance code. ``tied``: one intensity I per point,
    density = k * I and colour = I, the views' own image formation (the appearance code is then unused)."""
    code_init_std: float = 0.01
    """Subject codes start as N(0, code_init_std^2)."""
    grid_resolutions: Tuple[int, ...] = (32, 64, 96)
    """Grid backbone: vertices per axis of each level over [-1, 1]^3."""
    grid_channels: int = 4
    """Grid backbone: features per vertex."""
    grid_width: int = 64
    """Grid backbone: hidden width of the MLP."""
    grid_init_std: float = 0.1
    """Grid backbone: std of the grids' normal initialisation."""
    tv_loss_weight: float = 1e-3
    """Grid backbone: weight of the total-variation prior on the grids."""
    skip_empty_space: bool = True
    """Evaluate the field only inside the visual hull of each subject's training views; density 0 elsewhere."""
    occupancy_resolution: int = 64
    """Cells per axis of the occupancy grid over [-1, 1]^3."""
    occupancy_margin: float = 0.05
    """World units (the brain's bounding radius is about 1) by which the visual hulls are dilated."""
    encoder: SliceEncoderConfig = field(default_factory=SliceEncoderConfig)
    """The slice encoder (3D CNN + Squeeze-and-Excitation) that predicts each subject's codes, and with subject
    grids its grid, from its scans."""
    subject_grid_resolution: int = 0
    """With two or more subjects: vertices per axis of each subject's own feature grid, whose features at a
    point extend its shape code (:mod:`~mri_nerfstudio.nerf.subject_grids`; 0: none, codes alone)."""
    subject_grid_channels: int = 4
    """Features per vertex of the subject grids."""

    def resolved_preset(self) -> FieldPreset:
        """The preset with every field of this config that is not None applied over it."""
        names = [preset_field.name for preset_field in dataclasses.fields(FieldPreset)]
        overrides = {name: getattr(self, name) for name in names if getattr(self, name, None) is not None}
        return dataclasses.replace(PRESETS[self.preset], **overrides)


class MRIMedNeRFModel(Model):
    """Per-subject codes + :class:`ConditionalRadianceField` + the renderer of the data's view mode.

    Reads from the dataparser metadata (``kwargs["metadata"]``): ``view_mode`` (default ``volume``),
    ``density_scale`` k, ``subject_names`` (their number sizes the code table; default one subject),
    for empty-space skipping (:mod:`~mri_nerfstudio.nerf.occupancy`), ``training_views`` and
    ``training_cameras`` (without them every sample is evaluated), and the slice encoder's inputs
    ``encoder_scans`` [N, C, G, G, G], ``encoder_present`` [N, C], ``encoder_spacing_mm`` [N, 3]
    (required when the encoder is on).
    Rays carry their subject in ``ray_bundle.metadata["subject_index"]`` [..., 1]; rays without it
    (viewer, camera paths) render the subject chosen in the viewer's "Subject" dropdown (default 0).

    Outputs per ray: ``rgb`` [..., 3], ``accumulation`` [..., 1], ``depth`` [..., 1] (world units from
    the ray origin) and ``volume`` [..., 3] (mean intensity along the ray, see
    :class:`~mri_nerfstudio.nerf.renderers.MeanIntensityRenderer`). Outside training, also ``scan``
    [..., 3]: the input scan of the modality chosen in the viewer's "Scan modality" dropdown, on the
    encoder's working grid, averaged along the ray (to compare the learned volume with each modality),
    and ``slice``, ``slice_scan``, ``slice_difference`` [..., 3]: the field, that scan and their difference
    where the ray crosses the plane chosen under the viewer's "Slice" controls
    (:mod:`~mri_nerfstudio.nerf.viewer_slice`; ``scene_radius_mm`` per subject from the metadata places it
    in millimetres), and ``slice_uncertainty`` [..., 1] on the same plane (:mod:`~mri_nerfstudio.uncertainty`).

    The web viewer opens on the brain (:class:`~mri_nerfstudio.nerf.viewer_camera.OrbitViewerCamera`).
    """

    config: MRIMedNeRFModelConfig

    def populate_modules(self) -> None:
        # Not super().populate_modules(): its near/far collider is replaced by the unit sphere.
        metadata = self.kwargs.get("metadata") or {}
        self.view_mode: str = metadata.get("view_mode", "volume")
        self.density_scale = float(metadata.get("density_scale", DEFAULT_DENSITY_SCALE))
        self.subject_names = list(metadata.get("subject_names", ["subject"]))
        self.num_subjects = len(self.subject_names)
        if self.num_subjects < 1:
            raise MRIInputError("dataparser metadata: subject_names is empty, expected at least one subject")
        if self.config.preset not in PRESETS:
            raise MRIInputError(f"model preset must be one of {tuple(PRESETS)}, got {self.config.preset!r}")
        self.preset = self.config.resolved_preset()

        self.subject_grids: Optional[SubjectFeatureGrids] = None
        resolution, channels = self.config.subject_grid_resolution, self.config.subject_grid_channels
        if resolution == 1 or resolution < 0 or channels < 1:
            raise MRIInputError(
                "model: subject_grid_resolution must be 0 (no subject grids) or >= 2 and subject_grid_channels >= 1, "
                f"got {resolution} and {channels}"
            )
        if resolution > 0 and self.num_subjects >= 2:
            self.subject_grids = SubjectFeatureGrids(
                self.num_subjects, self.config.subject_grid_resolution, self.config.subject_grid_channels
            )
        self.field = ConditionalRadianceField(
            self._make_backbone(),
            density_activation="relu" if self.preset.backbone == "mlp" else "softplus",
            density_noise_std=self.preset.density_noise_std,
            colour=self.config.colour,
            density_scale=self.density_scale,
        )
        code_dim = self.preset.shape_code_dim + self.preset.appearance_code_dim
        self.subject_codes = nn.Embedding(self.num_subjects, code_dim)
        self._set_up_encoder(metadata, code_dim)
        if self.encoder is None:
            nn.init.normal_(self.subject_codes.weight, std=self.config.code_init_std)
        else:
            nn.init.zeros_(self.subject_codes.weight)  # residuals: untrained subjects get the encoder's codes

        self.collider = SphereCollider(center=torch.zeros(3), radius=1.0)
        self.sampler = UniformSampler(num_samples=self.preset.num_samples)
        self.pdf_sampler = (
            PDFSampler(num_samples=self.preset.num_importance_samples, include_original=True)
            if self.preset.num_importance_samples > 0
            else None
        )
        self.occupancy = (
            OccupancyGrid.from_training_views(
                metadata["training_views"],
                metadata.get("training_cameras", []),
                self.config.occupancy_resolution,
                self.config.occupancy_margin,
            )
            if self.config.skip_empty_space and "training_views" in metadata
            else None
        )
        self.renderer = renderer_for_view_mode(self.view_mode)
        self.mean_intensity = MeanIntensityRenderer(self.density_scale)
        self.viewer_camera = OrbitViewerCamera()
        self.viewer_subject = ViewerDropdown(
            "Subject", self.subject_names[0], self.subject_names, hint="Subject rendered in the viewer"
        )
        self.viewer_modality = ViewerDropdown(
            "Scan modality", MODALITIES[0], list(MODALITIES), hint="Modality of the 'scan' output (input scan)"
        )
        # Without the mri-data dataparser's radii (unit tests), one world unit counts as one millimetre.
        self.scene_radius_mm = [float(r) for r in metadata.get("scene_radius_mm", [1.0] * self.num_subjects)]
        self.viewer_slice = ViewerSlicePlane(max(self.scene_radius_mm))

    def _set_up_encoder(self, metadata: dict, code_dim: int) -> None:
        """``self.encoder`` (or None) and its inputs as buffers, from the config and the metadata."""
        setting = self.config.encoder.enabled
        if setting not in ("auto", "on", "off"):
            raise MRIInputError(f"encoder.enabled must be 'auto', 'on' or 'off', got {setting!r}")
        scans = metadata.get("encoder_scans")
        if scans is not None:
            self.register_buffer("encoder_scans", scans.float(), persistent=False)
            self.register_buffer("encoder_present", metadata["encoder_present"].float(), persistent=False)
            self.register_buffer("encoder_spacing_mm", metadata["encoder_spacing_mm"].float(), persistent=False)
        enabled = setting == "on" or (setting == "auto" and self.num_subjects >= 2 and scans is not None)
        self.encoder: Optional[SliceEncoder] = None
        if not enabled:
            return
        if scans is None:
            raise MRIInputError("encoder is on but the dataparser metadata has no encoder_scans; use the mri-data dataparser")
        if scans.shape[0] != self.num_subjects:
            raise MRIInputError(f"encoder_scans has {scans.shape[0]} subjects, subject_names {self.num_subjects}")
        grid_channels = 0 if self.subject_grids is None else self.subject_grids.channels
        self.encoder = SliceEncoder(self.config.encoder, scans.shape[1], scans.shape[-1], code_dim, grid_channels)

    def _make_backbone(self) -> RadianceBackbone:
        preset, config = self.preset, self.config
        # The field's shape code: the subject's code, then its subject-grid features at the point.
        shape_code_dim = preset.shape_code_dim + (0 if self.subject_grids is None else self.subject_grids.channels)
        if preset.backbone == "mlp":
            return MLPBackbone(shape_code_dim, preset.appearance_code_dim)
        return FeatureGridBackbone(
            shape_code_dim,
            preset.appearance_code_dim,
            resolutions=config.grid_resolutions,
            channels=config.grid_channels,
            width=config.grid_width,
            init_std=config.grid_init_std,
        )

    def get_training_callbacks(
        self, training_callback_attributes: TrainingCallbackAttributes
    ) -> list[TrainingCallback]:
        start, steps = self.preset.density_noise_std, self.preset.density_noise_steps
        if start <= 0:
            return []

        def anneal_density_noise(step: int) -> None:
            self.field.density_noise_std = start * max(0.0, 1.0 - step / steps) if steps > 0 else 0.0

        return [
            TrainingCallback(
                where_to_run=[TrainingCallbackLocation.BEFORE_TRAIN_ITERATION],
                update_every_num_iters=1,
                func=anneal_density_noise,
            )
        ]

    def get_param_groups(self) -> dict[str, list[Parameter]]:
        fields = list(self.field.parameters())
        if self.subject_grids is not None:
            fields += list(self.subject_grids.parameters())  # grids, trained at the field grids' rate
        groups = {"fields": fields, "codes": list(self.subject_codes.parameters())}
        if self.encoder is not None:
            groups["encoder"] = list(self.encoder.parameters())
        return groups

    def codes_of(self, subjects: Tensor) -> Tensor:
        """Codes [..., Ds + Da] of subjects [...] (int64): the residual table plus, with the encoder, its prediction.

        The encoder runs once per distinct subject in ``subjects``, so a step costs the same however many
        subjects the data has.
        """
        codes = self.subject_codes(subjects)
        if self.encoder is None:
            return codes
        unique, inverse = torch.unique(subjects, return_inverse=True)
        predicted = self.encoder(self.encoder_scans[unique], self.encoder_present[unique], self.encoder_spacing_mm[unique])
        return codes + predicted[inverse]

    def subject_indices(self, ray_bundle: RayBundle) -> Tensor:
        """Subject of each ray [...] (int64): ``metadata["subject_index"]``, else the viewer's "Subject" choice."""
        index = ray_bundle.metadata.get("subject_index")
        if index is None:
            chosen = self.subject_names.index(self.viewer_subject.value)
            return torch.full(ray_bundle.origins.shape[:-1], chosen, dtype=torch.long, device=ray_bundle.origins.device)
        index = index[..., 0].round().long()
        if index.numel() and not 0 <= int(index.min()) <= int(index.max()) < self.num_subjects:
            raise MRIInputError(
                f"ray metadata: subject_index spans {int(index.min())}..{int(index.max())}, "
                f"the model has {self.num_subjects} subject(s)"
            )
        return index

    def predicted_grid_tables(self, subjects: Tensor) -> dict[int, Tensor] | None:
        """{subject: [R^3, C]} the encoder's subject grid of each distinct subject in ``subjects`` [...] (from its
        scans), or None when the model has no subject grids or its encoder predicts none."""
        if self.subject_grids is None or self.encoder is None or self.encoder.grid_head is None:
            return None
        unique = torch.unique(subjects)
        volumes = self.encoder.grid_head(self.encoder_scans[unique])
        return dict(zip(unique.tolist(), vertex_tables(volumes, self.subject_grids.resolution)))

    def shape_code_at(
        self, points: Tensor, subjects: Tensor, shape_code: Tensor, predicted: dict[int, Tensor] | None = None
    ) -> Tensor:
        """The field's shape code at ``points`` [..., 3]: the subjects' ``shape_code`` [..., Ds] (broadcast),
        followed with subject grids by the features of ``subjects`` [...] there: [..., Ds (+ C)].
        ``predicted``: the encoder's grids of these subjects (:meth:`predicted_grid_tables`; computed when None)."""
        if self.subject_grids is None:
            return shape_code
        predicted = self.predicted_grid_tables(subjects) if predicted is None else predicted
        local = self.subject_grids(points, subjects, predicted).to(shape_code.dtype)
        return torch.cat([shape_code.expand(*local.shape[:-1], shape_code.shape[-1]), local], dim=-1)

    def _conditioned(
        self, ray_samples: RaySamples, codes: Tensor, subjects: Tensor, predicted: dict[int, Tensor] | None = None
    ) -> RaySamples:
        """The samples with their rays' shape codes (per sample with subject grids, else [..., 1, Ds]) and
        appearance codes [..., 1, Da] in their metadata; ``codes`` [..., Ds + Da] and ``subjects`` [...] per ray;
        ``predicted`` as in :meth:`shape_code_at`."""
        codes = codes[..., None, :]
        shape_code = codes[..., : self.preset.shape_code_dim]
        if self.subject_grids is not None:
            positions = ray_samples.frustums.get_positions()
            shape_code = self.shape_code_at(positions, subjects[..., None], shape_code, predicted)
        ray_samples.metadata = {
            **(ray_samples.metadata or {}),
            "shape_code": shape_code,
            "appearance_code": codes[..., self.preset.shape_code_dim :],
        }
        return ray_samples

    def get_outputs(self, ray_bundle: RayBundle) -> dict[str, Tensor]:
        subjects = self.subject_indices(ray_bundle)
        codes = self.codes_of(subjects)  # [..., Ds + Da]
        predicted = self.predicted_grid_tables(subjects)  # once per batch: both samplers read it
        ray_samples = self._conditioned(self.sampler(ray_bundle), codes, subjects, predicted)
        if self.pdf_sampler is not None:
            with torch.no_grad():
                first_density, _ = self.field.get_density(ray_samples)
                weights = ray_samples.get_weights(first_density.float())
            resampled = self.pdf_sampler(ray_bundle, ray_samples, weights)
            ray_samples = self._conditioned(resampled, codes, subjects, predicted)
        occupied = None
        if self.config.skip_empty_space and self.occupancy is not None:
            occupied = self.occupancy.occupied(ray_samples.frustums.get_positions(), subjects[..., None])
        field_outputs = evaluate_field(self.field, ray_samples, occupied)
        density = field_outputs[FieldHeadNames.DENSITY]
        outputs = self.renderer(rgb=field_outputs[FieldHeadNames.RGB], density=density, ray_samples=ray_samples)
        outputs["volume"] = self.mean_intensity(density=density, ray_samples=ray_samples)
        if not self.training and hasattr(self, "encoder_scans"):
            outputs["scan"] = self._input_scan_along_rays(ray_samples, subjects)
        if not self.training:
            outputs.update(self._slice_outputs(ray_bundle, subjects, codes))
        return outputs

    @torch.no_grad()
    def _slice_outputs(self, ray_bundle: RayBundle, subjects: Tensor, codes: Tensor) -> dict[str, Tensor]:
        """Where each ray crosses the viewer's slice plane (:mod:`~mri_nerfstudio.nerf.viewer_slice`): ``slice``
        (the field's intensity estimate, from the rays' ``codes`` [..., Ds + Da]) [..., 3], its uncertainty
        ``slice_uncertainty`` [..., 1] (the blend term of :mod:`~mri_nerfstudio.uncertainty`, a standard
        deviation in intensity units: the viewer applies its colormap), with the input scans also
        ``slice_scan`` (the "Scan modality") and ``slice_difference`` (field - scan, red / blue) [..., 3];
        all 0 (black) where the ray misses the plane."""
        batch_shape = ray_bundle.origins.shape[:-1]
        origins, directions = ray_bundle.origins.reshape(-1, 3), ray_bundle.directions.reshape(-1, 3)
        flat_subjects = subjects.reshape(-1)
        shape_codes = codes.reshape(-1, codes.shape[-1])[:, : self.preset.shape_code_dim]
        field = torch.zeros(len(origins), device=origins.device)
        scan = torch.zeros_like(field)
        hits = torch.zeros(len(origins), dtype=torch.bool, device=origins.device)
        for subject in torch.unique(flat_subjects).tolist():
            rays = flat_subjects == subject
            points, hit = self.viewer_slice.crossings(origins[rays], directions[rays], self.scene_radius_mm[subject])
            hits[rays] = hit
            intensity = self._intensity_at(points, shape_codes[rays][0], subject).float()  # float32 under autocast
            field[rays] = intensity * hit
            if hasattr(self, "encoder_scans"):
                scan[rays] = self._scan_at(points, subject) * hit
        outputs = {
            "slice": field.reshape(*batch_shape, 1).expand(*batch_shape, 3),
            "slice_uncertainty": (blend_spread(field) * hits).reshape(*batch_shape, 1),
        }
        if hasattr(self, "encoder_scans"):
            outputs["slice_scan"] = scan.reshape(*batch_shape, 1).expand(*batch_shape, 3)
            outputs["slice_difference"] = difference_colours(field - scan, hits).reshape(*batch_shape, 3)
        return outputs

    def _scan_at(self, points: Tensor, subject: int) -> Tensor:
        """[P]: the "Scan modality" input scan of ``subject`` on the encoder's working grid at world ``points``
        [P, 3] (trilinear; 0 outside the grid)."""
        channel = MODALITIES.index(self.viewer_modality.value)
        volume = self.encoder_scans[subject, channel][None, None]  # [1, 1, Z, X, Y]
        # The working grid's axes are (z, x, y); grid_sample reads coordinates as (y, x, z) here.
        grid = points[..., [1, 0, 2]].reshape(1, 1, -1, 1, 3).float()
        return F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=False).reshape(-1)

    def _input_scan_along_rays(self, ray_samples: RaySamples, subjects: Tensor) -> Tensor:
        """The chosen modality's working-grid scan averaged along each ray (like ``volume``), [..., 3] in [0, 1]."""
        positions = ray_samples.frustums.get_positions()  # [..., S, 3] world
        samples_per_ray = positions.shape[-2]
        flat_positions, flat_subjects = positions.reshape(-1, samples_per_ray, 3), subjects.reshape(-1)
        scan = torch.zeros(flat_positions.shape[:2], device=positions.device)
        for subject in torch.unique(flat_subjects).tolist():
            rays = flat_subjects == subject
            scan[rays] = self._scan_at(flat_positions[rays].reshape(-1, 3), subject).reshape(-1, samples_per_ray)
        deltas = ray_samples.deltas[..., 0]  # [..., S]
        mean = (scan.reshape(deltas.shape) * deltas).sum(dim=-1, keepdim=True) / deltas.sum(dim=-1, keepdim=True).clamp(min=1e-8)
        return mean.expand(*mean.shape[:-1], 3)

    def get_metrics_dict(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
        image = batch["image"][..., :3].to(self.device)
        return {"psnr": peak_signal_noise_ratio(outputs["rgb"].detach(), image, data_range=1.0)}

    def get_loss_dict(
        self, outputs: dict[str, Tensor], batch: dict[str, Tensor], metrics_dict: dict[str, Tensor] | None = None
    ) -> dict[str, Tensor]:
        loss_dict = {"rgb_loss": F.mse_loss(outputs["rgb"], batch["image"][..., :3].to(self.device))}
        backbone = self.field.backbone
        if self.training and isinstance(backbone, FeatureGridBackbone) and self.config.tv_loss_weight > 0:
            loss_dict["tv_loss"] = self.config.tv_loss_weight * backbone.total_variation()
        if self.training and self.subject_grids is not None and self.config.tv_loss_weight > 0:
            loss_dict["subject_grid_tv_loss"] = self.config.tv_loss_weight * self.subject_grids.total_variation()
        return loss_dict

    def get_image_metrics_and_images(
        self, outputs: dict[str, Tensor], batch: dict[str, Tensor]
    ) -> tuple[dict[str, float], dict[str, Tensor]]:
        """PSNR and SSIM of ``rgb`` [H, W, 3] against ``batch["image"]``, and images for the logs."""
        image = batch["image"][..., :3].to(self.device)
        rgb = outputs["rgb"].clamp(0.0, 1.0)
        image_nchw, rgb_nchw = (torch.moveaxis(x, -1, 0)[None] for x in (image, rgb))
        metrics = {
            "psnr": float(peak_signal_noise_ratio(rgb_nchw, image_nchw, data_range=1.0)),
            "ssim": float(structural_similarity_index_measure(rgb_nchw, image_nchw, data_range=1.0)),
        }
        images = {
            "img": torch.cat([image, rgb], dim=1),
            "volume": outputs["volume"],
            "accumulation": colormaps.apply_colormap(outputs["accumulation"]),
            "depth": colormaps.apply_depth_colormap(outputs["depth"], accumulation=outputs["accumulation"]),
        }
        return metrics, images

    @torch.no_grad()
    def volume_on_grid(self, points_world: Tensor, subject: int = 0, points_per_chunk: int = 1 << 18) -> Tensor:
        """The field's intensity estimate ``density / k`` at world points (0 outside the unit sphere, and
        outside the occupancy grid when empty space is skipped).

        Meaningful for the ``volume`` and ``drr`` view modes, where the views constrain density to
        ``k`` times the MRI intensity (a ``mip`` view never sees density).

        Args:
            points_world: [P, 3] world units (see :mod:`mri_nerfstudio.views` for the frame).
            subject: index of the subject in the dataparser's ``subject_names``.
            points_per_chunk: points evaluated at once (bounds memory).

        Returns:
            [P] float32 on the device of ``points_world``.
        """
        if points_world.ndim != 2 or points_world.shape[-1] != 3:
            raise MRIInputError(f"points_world must be [P, 3], got shape {tuple(points_world.shape)}")
        if not 0 <= subject < self.num_subjects:
            raise MRIInputError(f"subject must be in 0..{self.num_subjects - 1}, got {subject}")
        shape_code = self.codes_of(torch.tensor([subject], device=self.device))[0, : self.preset.shape_code_dim]
        intensity = torch.zeros(len(points_world), dtype=torch.float32, device=points_world.device)
        for start in range(0, len(points_world), points_per_chunk):
            points = points_world[start : start + points_per_chunk].to(self.device, torch.float32)
            values = self._intensity_at(points, shape_code, subject)
            intensity[start : start + len(points)] = values.to(intensity.device)
        return intensity

    def _intensity_at(self, points: Tensor, shape_code: Tensor, subject: int) -> Tensor:
        """[P] ``density / k`` at world ``points`` [P, 3] for ``subject``'s shape code [Ds]; 0 outside the unit
        sphere and, when empty space is skipped, outside the subject's occupancy grid."""
        subjects = torch.full((len(points),), subject, dtype=torch.long, device=points.device)
        codes = self.shape_code_at(points, subjects, shape_code.expand(len(points), -1))
        density, _ = self.field.density(points, codes)
        inside = points.norm(dim=-1) <= 1.0
        if self.config.skip_empty_space and self.occupancy is not None:
            inside &= self.occupancy.occupied(points, torch.tensor(subject, device=points.device))
        return density[:, 0] * inside / self.density_scale
