"""``ns-eval`` for MRI: nerfstudio's held-out PSNR / SSIM, plus FID, KID and 3D volume fidelity.

:class:`MRIPipeline` is nerfstudio's :class:`VanillaPipeline` whose ``get_average_eval_image_metrics``
(what ``ns-eval`` and the Trainer's all-image evaluation call) adds, next to ``psnr``, ``ssim``, ``fps``
... and their ``_std``:

- ``fid``, ``kid``, ``kid_std``: rendered held-out views vs the ground-truth held-out views (all
  subjects pooled), Inception features from the wheel :mod:`mri_nerfstudio.metrics` names. MedNeRF
  compared its renders with the *training* images instead; here the real set is the unseen views
  themselves, so the score measures the renders, not the gap between two view sets.
- ``volume_psnr``, ``volume_ssim`` (and ``_std`` over subjects): the field's volume estimate
  (``density / k``, :meth:`MRIMedNeRFModel.volume_on_grid`) at the voxel centres of each subject's
  preprocessed reference volume, against that volume, inside the brain mask
  (:func:`~mri_nerfstudio.nerf.field_sampling.subject_volume_scores`), per subject then averaged. Not
  computed for the ``mip`` view mode, whose views never constrain density.
- ``num_train_views``, ``num_val_views``, ``num_test_views``, ``num_mirror_views_excluded``: the view
  split (:mod:`mri_nerfstudio.view_split`), images over all subjects. ``ns-eval`` scores the test split
  (``num_test_views`` images), the Trainer's evaluation during ``ns-train`` the val split.

Training (:meth:`MRIPipeline.get_train_loss_dict`) adds, when ``adversarial.lambda_adv > 0``, the
adversarial patch loss of :mod:`mri_nerfstudio.nerf.adversarial`: real patches are the training batch's
ground truth, fake ones its renders plus patches rendered at unseen poses of the same orbits
(:meth:`MRIDataManager.next_unseen_pose_patches`); the discriminator is the ``discriminator`` param
group. With ``ema_decay`` (0.999 by default) an exponential moving average of the model's parameters
is kept after every step and put in their place whenever the pipeline is in eval mode (``ns-eval``,
``ns-render``, ``mri-export``, the Trainer's evaluations; the live viewer during training shows the
trained weights). The EMA never changes training: with ``lambda_adv = 0``, training is nerfstudio's own.

"Held-out views" are the views of the eval dataset (the test split in ``ns-eval``, the val split during
``ns-train``), each rendered once and recorded on the way (:mod:`mri_nerfstudio.nerf.held_out`); the
field is sampled as a volume by :mod:`mri_nerfstudio.nerf.field_sampling`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Type

import torch
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from rich.console import Console
from torch import Tensor
from torch.amp import GradScaler
from torch.nn import Parameter

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.metrics import InceptionFeatures, fid_kid_from_features, mean_and_std
from mri_nerfstudio.nerf.adversarial import AdversarialConfig, AdversarialPatchLoss
from mri_nerfstudio.nerf.distributed import average_parameters, broadcast_state, wrap_for_data_parallel
from mri_nerfstudio.nerf.ema import ExponentialMovingAverage
from mri_nerfstudio.nerf.field_sampling import prepared_subjects, subject_volume_scores
from mri_nerfstudio.nerf.held_out import evaluate_held_out_views, render_features

CONSOLE = Console()

DEFAULT_EMA_DECAY = 0.999


@dataclass
class MRIPipelineConfig(VanillaPipelineConfig):
    """nerfstudio's pipeline, with FID / KID and volume fidelity in its evaluation (``ns-eval``)."""

    _target: Type = field(default_factory=lambda: MRIPipeline)
    image_set_metrics: bool = True
    """Add FID and KID over all held-out views (InceptionV3 at 299 px: about 0.1-0.3 s per image on a CPU)."""
    volume_metrics: bool = True
    """Add 3D PSNR and SSIM of the field's volume estimate against each preprocessed input volume."""
    kid_subsets: int = 100
    """KID: number of random subsets."""
    kid_subset_size: int = 1000
    """KID: images per subset, clamped to the number of held-out views."""
    feature_batch_size: int = 16
    """Images per Inception forward pass."""
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)
    """The adversarial patch loss (lambda_adv = 0: plain MSE training)."""
    ema_decay: float = DEFAULT_EMA_DECAY
    """Largest decay of the EMA of the model used in eval mode (0: none). Held-out views gain 1.1 dB and
    9 FID at 1,000 steps (128 px, BENCHMARKS.md)."""


class MRIPipeline(VanillaPipeline):
    """:class:`VanillaPipeline` whose held-out evaluation adds FID, KID and volume fidelity (module docstring)."""

    config: MRIPipelineConfig

    def __init__(
        self,
        config: MRIPipelineConfig,
        device: str,
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        grad_scaler: Optional[GradScaler] = None,
    ):
        # nerfstudio's DDP wrapping passes device_ids, which a CPU module refuses: this process's pipeline
        # first, then several processes kept in step (:mod:`~mri_nerfstudio.nerf.distributed`) before the
        # EMA copies the weights (rank 0's, once broadcast).
        super().__init__(config, device, test_mode, 1, local_rank, grad_scaler)
        self.world_size = world_size
        adversarial = config.adversarial
        if world_size > 1 and not adversarial.enabled:
            self._model = wrap_for_data_parallel(self._model, device)
        self.adversarial: Optional[AdversarialPatchLoss] = None
        if adversarial.enabled:
            if self.datamanager.config.patch_size < 8:
                raise MRIInputError(
                    f"adversarial: patches of at least 8 x 8 rays are needed, got patch_size "
                    f"{self.datamanager.config.patch_size} (set --pipeline.datamanager.patch-size)"
                )
            # The discriminator's initialisation leaves the global RNG as it was, so that with a start_step
            # training is MSE training step for step (same ray batches) until the adversarial terms start.
            with torch.random.fork_rng(devices=[]):
                self.adversarial = AdversarialPatchLoss(adversarial).to(device)
            if world_size > 1:
                # Two generator forwards per step and D's R1 double backward do not fit DDP: the ranks
                # average their weights after every step instead, from rank 0's start.
                broadcast_state([self.model, self.adversarial])
        decay = config.ema_decay
        if not 0 <= decay < 1:
            raise MRIInputError(f"pipeline.ema_decay must be 0 (no EMA) or in (0, 1), got {decay}")
        self.generator_ema = ExponentialMovingAverage(self.model, decay) if decay > 0 else None

    def train(self, mode: bool = True) -> "MRIPipeline":
        """nn.Module's train / eval switch; in eval mode the model holds its EMA weights."""
        super().train(mode)
        ema = getattr(self, "generator_ema", None)
        if ema is not None:
            ema.apply(use_average=not mode)
        return self

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: Optional[bool] = None):
        """nerfstudio's loading, keeping the EMA consistent with the pipeline's mode.

        ``ns-eval`` (``eval_setup``) puts the pipeline in eval mode *before* it loads the checkpoint, which
        holds the trained weights and their averages; the averages are put back in place afterwards. A
        checkpoint without averages (trained with ``ema_decay = 0``) starts the average at its weights.
        """
        ema = self.generator_ema
        if ema is not None:
            ema.apply(use_average=False)  # the checkpoint holds the trained weights in the parameters
        super().load_state_dict(state_dict, strict)
        if ema is None:
            return
        if not any(key.startswith("generator_ema.") for key in state_dict):
            ema.restart()
        ema.apply(use_average=not self.training)

    def get_param_groups(self) -> dict[str, list[Parameter]]:
        groups = super().get_param_groups()
        if self.adversarial is not None:
            groups["discriminator"] = list(self.adversarial.discriminator.parameters())
        return groups

    def get_training_callbacks(
        self, training_callback_attributes: TrainingCallbackAttributes
    ) -> list[TrainingCallback]:
        callbacks = super().get_training_callbacks(training_callback_attributes)
        if self.world_size > 1 and self.adversarial is not None:  # before the EMA reads the weights
            callbacks.append(
                TrainingCallback(
                    where_to_run=[TrainingCallbackLocation.AFTER_TRAIN_ITERATION],
                    update_every_num_iters=1,
                    func=lambda step: average_parameters([self.model, self.adversarial]),
                )
            )
        if self.generator_ema is not None:
            callbacks.append(
                TrainingCallback(
                    where_to_run=[TrainingCallbackLocation.AFTER_TRAIN_ITERATION],
                    update_every_num_iters=1,
                    func=lambda step: self.generator_ema.update(),
                )
            )
        return callbacks

    def get_train_loss_dict(self, step: int):
        """nerfstudio's training step; with the adversarial loss, plus its D and G terms (module docstring)."""
        if self.adversarial is None or not self.config.adversarial.active_at(step):
            return super().get_train_loss_dict(step)
        ray_bundle, batch = self.datamanager.next_train(step)
        model_outputs = self._model(ray_bundle)
        metrics_dict = self.model.get_metrics_dict(model_outputs, batch)
        loss_dict = self.model.get_loss_dict(model_outputs, batch, metrics_dict)
        loss_dict["rgb_loss"] = self.config.adversarial.lambda_mse * loss_dict["rgb_loss"]

        patch_size = self.datamanager.config.patch_size
        num_unseen = self.config.adversarial.unseen_patches_per_batch or self.datamanager.patches_per_batch
        unseen_rays = self.datamanager.next_unseen_pose_patches(
            step, num_unseen, self.config.adversarial.unseen_elevation_band_deg
        )
        unseen_rgb = self._model(unseen_rays)["rgb"]

        def as_patches(colours: Tensor) -> Tensor:  # [P*K*K, 3] -> [P, 3, K, K]
            return colours.reshape(-1, patch_size, patch_size, 3).permute(0, 3, 1, 2)

        real = as_patches(batch["image"][..., :3].to(self.device))
        fake = torch.cat([as_patches(model_outputs["rgb"]), as_patches(unseen_rgb)])
        loss_dict.update(self.adversarial(real, fake, step))
        return model_outputs, loss_dict, metrics_dict

    def get_average_eval_image_metrics(
        self, step: Optional[int] = None, output_path: Optional[Path] = None, get_std: bool = False
    ) -> dict[str, float]:
        scores, renders = evaluate_held_out_views(self, step, output_path, get_std)
        if self.config.image_set_metrics:
            CONSOLE.print(f"[mri] FID / KID over {len(renders)} held-out views", markup=False)
            extractor = InceptionFeatures(device=self.device, batch_size=self.config.feature_batch_size)
            real, fake = render_features(renders, extractor)
            scores.update(fid_kid_from_features(real, fake, self.config.kid_subsets, self.config.kid_subset_size))
        if self.config.volume_metrics and self.model.view_mode != "mip":
            subjects = prepared_subjects(self)
            CONSOLE.print(f"[mri] volume fidelity of {len(subjects)} subject(s)", markup=False)
            per_subject = [subject_volume_scores(self.model, prepared, s) for s, prepared in enumerate(subjects)]
            for key in ("volume_psnr", "volume_ssim"):
                mean, std = mean_and_std([scores_of_subject[key] for scores_of_subject in per_subject])
                scores[key] = mean
                if get_std:
                    scores[f"{key}_std"] = std
        scores.update(self.datamanager.dataparser.split_view_counts())
        return scores
