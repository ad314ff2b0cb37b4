"""Ordered preprocessing steps and their provenance.

``default_pipeline()`` builds (slice motion) -> resample -> brain mask -> register -> normalise -> equalise;
``PreprocessPipeline.to_dict()`` gives its parameters as a stable, JSON-ready dict (for cache keys),
and ``write_provenance`` stores the records the pipeline returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mri_nerfstudio.atomic_write import write_json
from mri_nerfstudio.json_values import to_plain
from mri_nerfstudio.preprocess import PreprocessStep
from mri_nerfstudio.preprocess.equalize import EqualizeHistogram, NormalizePercentiles
from mri_nerfstudio.preprocess.register import CorrectSliceMotion, RegisterToReference
from mri_nerfstudio.preprocess.rescale import ResampleAnisotropic, ResampleThroughPlane, UpsampleInPlane
from mri_nerfstudio.preprocess.skull_strip import ExtractBrainMask
from mri_nerfstudio.volume import Volume


class PreprocessPipeline:
    """Steps applied in order; each sees the previous one's output."""

    def __init__(self, steps: Sequence[PreprocessStep]):
        self.steps = tuple(steps)

    def __call__(self, volume: Volume) -> tuple[Volume, list[dict[str, Any]]]:
        """The preprocessed volume and one provenance record per step (the input is not modified)."""
        records = []
        for step in self.steps:
            volume, record = step(volume)
            records.append(record)
        return volume, records

    def to_dict(self) -> dict[str, Any]:
        """``{"steps": [{"step": name, "params": {...}}, ...]}``: equal dicts mean equal pipelines."""
        return {"steps": [{"step": step.name, "params": step.params()} for step in self.steps]}

    def __repr__(self) -> str:
        return f"PreprocessPipeline({', '.join(step.name for step in self.steps)})"


def default_pipeline(
    skull_strip: str = "auto",
    register: bool = True,
    registration_transform: str = "rigid",
    correct_slice_motion: bool = False,
    upsample_factor: int = 1,
    slice_spacing_mm: float | None = None,
    resample_anisotropic: bool = True,
    target_spacing_mm: float = 1.0,
    percentiles: tuple[float, float] = (0.5, 99.5),
    equalize: bool = True,
    levels: int = 256,
) -> PreprocessPipeline:
    """The standard chain: correct slice motion -> resample -> brain mask -> register -> normalise
    percentiles -> equalise histogram.

    Resampling is either explicit (in-plane up-sampling by ``upsample_factor`` and / or
    through-plane interpolation to ``slice_spacing_mm``) or, when neither is asked for, automatic
    (:class:`ResampleAnisotropic`: thick-slice stacks towards ``target_spacing_mm``). Registration
    follows it, so it works on a near-isotropic grid. Slice axes are read from the voxel spacing.

    Args:
        skull_strip: brain mask of a volume without one (:class:`ExtractBrainMask`): ``auto``, ``on`` or
            ``off``; a mask the volume already has is kept.
        register: register every modality to the reference (mutual information).
        registration_transform: ``rigid`` or ``affine``.
        correct_slice_motion: re-align slices in-plane (thick-slice stacks with motion).
        upsample_factor: in-plane bicubic up-sampling factor (1: none).
        slice_spacing_mm: through-plane spacing to interpolate to (None: keep).
        resample_anisotropic: resample thick-slice stacks automatically when no explicit resampling
            is asked for.
        target_spacing_mm: voxel size (mm) the automatic resampling aims at.
        percentiles: brain-mask percentiles mapped to 0 and 1 (always applied: the views expect [0, 1]).
        equalize: histogram equalisation inside the brain mask.
        levels: grey levels of the equalisation.
    """
    steps: list[PreprocessStep] = []
    if correct_slice_motion:
        steps.append(CorrectSliceMotion())
    if upsample_factor != 1 or slice_spacing_mm is not None:
        if upsample_factor != 1:
            steps.append(UpsampleInPlane(factor=upsample_factor))
        if slice_spacing_mm is not None:
            steps.append(ResampleThroughPlane(target_spacing_mm=slice_spacing_mm))
    elif resample_anisotropic:
        steps.append(ResampleAnisotropic(target_spacing_mm=target_spacing_mm))
    # The mask after resampling (so it is drawn on the final grid), before registration (which samples its
    # metric inside the mask).
    steps.append(ExtractBrainMask(skull_strip=skull_strip))
    if register:
        steps.append(RegisterToReference(transform=registration_transform))
    steps.append(NormalizePercentiles(low=percentiles[0], high=percentiles[1]))
    if equalize:
        steps.append(EqualizeHistogram(levels=levels))
    return PreprocessPipeline(steps)


def write_provenance(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write the records as a JSON list, atomically (temporary name in the same folder, then rename)."""
    path = Path(path)
    write_json(path, to_plain(list(records)), allow_nan=False)
    return path
