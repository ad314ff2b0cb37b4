"""Held-out views as nerfstudio's evaluation loop scores them, recorded on the way: each ground truth and
render as 8-bit images with its PSNR / SSIM, and their Inception features for FID / KID.

"Held-out views" are the views of the eval dataset: the test split when the run is loaded with
``test_mode="test"`` (``ns-eval``, ``ns-render``, :mod:`mri_nerfstudio.nerf.trained_run`, the benchmarks'
:class:`~mri_nerfstudio.nerf.session.TrainingSession`), the val split during ``ns-train``. Every one is
rendered once: nerfstudio's loop renders and scores it, and :func:`recording_held_out_renders` keeps an
8-bit copy of each ground truth and render. Used by ``ns-eval``'s FID / KID
(:class:`~mri_nerfstudio.nerf.pipeline.MRIPipeline`), ``mri-report`` and the benchmarks.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional

import torch
from torch import Tensor

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.metrics import InceptionFeatures

if TYPE_CHECKING:
    from nerfstudio.pipelines.base_pipeline import VanillaPipeline


@dataclass(frozen=True)
class HeldOutRender:
    """One held-out view as nerfstudio's evaluation loop scored it."""

    index: int
    """Index in the eval dataset."""
    subject: int
    """Index of the subject in the dataparser's ``subject_names``."""
    view: int
    """Index of the view in the subject's orbit (0..71)."""
    image: Tensor
    """[H, W, 3] uint8 ground truth."""
    rendering: Tensor
    """[H, W, 3] uint8 render (``rgb``, clamped to [0, 1] then quantised)."""
    psnr: float
    """dB, from the model's ``get_image_metrics_and_images`` (float images)."""
    ssim: float


def _to_uint8(image: Tensor) -> Tensor:
    """[H, W, C] float in [0, 1] -> [H, W, 3] uint8 on the CPU (clamped, rounded)."""
    return (image[..., :3].detach().float().clamp(0.0, 1.0) * 255).round().to(torch.uint8).cpu()


@contextmanager
def recording_held_out_renders(pipeline: VanillaPipeline) -> Iterator[list[HeldOutRender]]:
    """Record every view the model scores while the context is open.

    nerfstudio's evaluation loop calls ``model.get_image_metrics_and_images(outputs, batch)`` once per
    image and keeps only the scores. Inside this context that method (on this model instance only)
    also appends a :class:`HeldOutRender` to the yielded list; the class method is back on exit.

    Args:
        pipeline: a pipeline whose eval dataset comes from the ``mri-data`` dataparser.
    """
    model = pipeline.model
    dataset = pipeline.datamanager.eval_dataset
    camera_metadata = dataset.cameras.metadata or {}
    if "subject_index" not in camera_metadata or "view_index" not in dataset.metadata:
        raise MRIInputError("eval dataset: no subject_index / view_index metadata; use the mri-data dataparser")
    subject_of = camera_metadata["subject_index"][:, 0].round().long().tolist()
    view_of = dataset.metadata["view_index"].tolist()
    renders: list[HeldOutRender] = []
    name = "get_image_metrics_and_images"
    instance_override = vars(model).get(name)
    score = getattr(model, name)

    def score_and_record(
        outputs: dict[str, Tensor], batch: dict[str, Tensor]
    ) -> tuple[dict[str, float], dict[str, Tensor]]:
        metrics, images = score(outputs, batch)
        index = int(batch["image_idx"])
        renders.append(
            HeldOutRender(
                index=index,
                subject=subject_of[index],
                view=view_of[index],
                image=_to_uint8(batch["image"]),
                rendering=_to_uint8(outputs["rgb"]),
                psnr=float(metrics["psnr"]),
                ssim=float(metrics["ssim"]),
            )
        )
        return metrics, images

    setattr(model, name, score_and_record)
    try:
        yield renders
    finally:
        if instance_override is None:
            delattr(model, name)
        else:
            setattr(model, name, instance_override)


def evaluate_held_out_views(
    pipeline: VanillaPipeline, step: Optional[int] = None, output_path: Optional[Path] = None, get_std: bool = False
) -> tuple[dict[str, float], list[HeldOutRender]]:
    """nerfstudio's evaluation over every held-out view (what ``VanillaPipeline`` reports), keeping the renders.

    Returns:
        nerfstudio's scores (``psnr``, ``ssim``, ``num_rays_per_sec``, ``fps``, and their ``_std`` with
        ``get_std``) and one :class:`HeldOutRender` per held-out view, in eval-dataset order.
    """
    with recording_held_out_renders(pipeline) as renders:
        scores = pipeline.get_average_image_metrics(
            pipeline.datamanager.fixed_indices_eval_dataloader, "eval", step, output_path, get_std
        )
    return scores, renders


def render_features(renders: list[HeldOutRender], extractor: InceptionFeatures) -> tuple[Tensor, Tensor]:
    """Inception features of the ground truths and of the renders: ([N, 2048], [N, 2048]) float32, CPU."""
    if not renders:
        raise MRIInputError("held-out views: none were rendered, FID and KID need at least 2")

    def features(images: list[Tensor]) -> Tensor:
        return extractor(torch.stack(images).permute(0, 3, 1, 2)).cpu()

    return features([r.image for r in renders]), features([r.rendering for r in renders])
