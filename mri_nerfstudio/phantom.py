"""Deterministic BraTS-like subjects: SIMULATED T1, T1ce, T2, FLAIR and a tumour label map.

Everything here is simulated data, for testing and demonstrating the pipeline: no patient, no scan.

A subject is built in three steps:

1. **Anatomy**, in MNI152 space: the ICBM 2009a grey- and white-matter probability maps and brain
   mask shipped inside nilearn (no download); CSF = mask - GM - WM, clipped to [0, 1]. An optional
   tumour is placed inside white matter: nested ellipsoids with a smooth random boundary for the
   necrotic core (label 1), the enhancing rim (4) and the oedema (2), as in BraTS.
2. **Contrast**, from MRI signal equations and textbook relaxation times (:data:`TISSUES`,
   :data:`SEQUENCES`), mixed by partial volume.
3. **Acquisition**, per modality: a known rigid misalignment (all but the reference modality),
   optional thick slices and per-slice in-plane motion, a smooth multiplicative bias field, a gain
   and Rician noise, on a BraTS 2021 grid (240 x 240 x 155 at 1 mm, ``[[-1,0,0,0],[0,-1,0,239],
   [0,0,1,0]]`` affine) or a smaller one, brain centred and skull-stripped (0 outside the brain).

With ``head=True`` the brain is not stripped: a CSF layer, a skull shell (cortical bone, dark in every
modality) and a scalp shell (fat, bright in T1 and T1ce) surround it (:data:`HEAD_LAYERS_MM`), and the
Rician noise covers the whole field of view (noisy air). :attr:`Phantom.brain` is the true brain mask.

Every random choice comes from ``seed``, and :attr:`Phantom.truth` records them all, so
registration, bias correction and rescaling can be checked against the exact answer.
"""

from __future__ import annotations

import json
import math
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.json_values import to_plain
from mri_nerfstudio.lazy_import import lazy_module
from mri_nerfstudio.volume import LPS_FROM_RAS, MODALITIES, save_nifti

sitk = lazy_module("SimpleITK", "to build phantoms")

SIMULATED_DESCRIPTION = "SIMULATED mri-nerfstudio phantom, not patient data"
"""Written in every NIfTI header (``descrip``) and in ``simulated.json``."""


class Tissue(NamedTuple):
    """Relaxation parameters of one tissue class."""

    pd: float
    """Proton density relative to CSF."""
    t1_ms: float
    t2_ms: float


# Normal tissue: textbook values at 1.5-3 T (WM T1 ~800 ms, T2 ~80 ms; GM T1 ~1300 ms, T2 ~100 ms;
# CSF T1 ~4000 ms, T2 ~2000 ms; PD WM 0.7, GM 0.8, CSF 1.0), close to the 3 T measurements of
# Wansapura et al., J Magn Reson Imaging 9:531 (1999): WM 832/80 ms, GM 1331/110 ms.
# Tumour classes: illustrative values that give their usual appearance (oedema: long T1 and T2,
# bright on T2 and FLAIR; necrosis: fluid-like; enhancing rim: solid tumour, bright after contrast).
TISSUES: dict[str, Tissue] = {
    "wm": Tissue(pd=0.70, t1_ms=800.0, t2_ms=80.0),
    "gm": Tissue(pd=0.80, t1_ms=1300.0, t2_ms=100.0),
    "csf": Tissue(pd=1.00, t1_ms=4000.0, t2_ms=2000.0),
    "necrosis": Tissue(pd=0.95, t1_ms=2500.0, t2_ms=400.0),
    "enhancing": Tissue(pd=0.85, t1_ms=1200.0, t2_ms=120.0),
    "oedema": Tissue(pd=0.90, t1_ms=1600.0, t2_ms=200.0),
}

GADOLINIUM_RELAXIVITY_PER_MM_S = 4.0
"""r1 of gadolinium chelates at 1.5 T, ~4 /mM/s (Rohrer et al., Invest Radiol 40:715, 2005)."""
GADOLINIUM_RIM_CONCENTRATION_MM = 0.5
"""Contrast agent concentration in the enhancing rim (illustrative): 1/T1' = 1/T1 + r1 C."""

TUMOUR_LABELS: dict[str, int] = {"necrosis": 1, "oedema": 2, "enhancing": 4}
"""BraTS 2021 label of each tumour class."""
TUMOUR_LAYERS: tuple[tuple[str, float], ...] = (("oedema", 1.0), ("enhancing", 0.55), ("necrosis", 0.35))
"""Nested tumour layers, outermost first, with their radius relative to the oedema ellipsoid."""
TUMOUR_BOUNDARY_RIPPLE = 0.12
"""Relative amplitude of the random boundary; < 0.2 keeps the layers nested (0.35/0.88 < 0.55/1.12, ...)."""

# Head tissues around the brain: fat T1 ~300 ms, T2 ~100 ms (bright on T1); cortical bone has almost no
# mobile protons and a T2 well under 1 ms, so it is dark on every sequence.
HEAD_TISSUES: dict[str, Tissue] = {
    "fat": Tissue(pd=0.90, t1_ms=300.0, t2_ms=100.0),
    "bone": Tissue(pd=0.05, t1_ms=500.0, t2_ms=0.5),
}
HEAD_LAYERS_MM: tuple[tuple[str, str, float], ...] = (
    ("csf", "csf", 2.0),
    ("skull", "bone", 6.0),
    ("scalp", "fat", 5.0),
)
"""Shells around the brain mask of a ``head=True`` phantom, inside out: (name, tissue, thickness mm).
The head ends where the MNI152 maps end below (z = -72 mm, the bottom of the brainstem), like a field
of view that cuts the neck."""


@dataclass(frozen=True)
class PulseSequence:
    """Spin echo (``ti_ms`` None) or inversion recovery, with an optional contrast agent."""

    tr_ms: float
    te_ms: float
    ti_ms: float | None = None
    gadolinium: bool = False

    def signal(self, tissue: Tissue, enhancing: bool = False) -> float:
        """Steady-state magnitude signal of ``tissue`` (relative units; PD 1, T1, T2 -> 0 gives 1).

        Spin echo: ``PD (1 - exp(-TR/T1)) exp(-TE/T2)``; inversion recovery:
        ``PD |1 - 2 exp(-TI/T1) + exp(-TR/T1)| exp(-TE/T2)``. With ``gadolinium``, an ``enhancing``
        tissue has its T1 shortened to ``1 / (1/T1 + r1 C)``.
        """
        t1 = tissue.t1_ms
        if self.gadolinium and enhancing:
            t1 = 1.0 / (1.0 / t1 + GADOLINIUM_RELAXIVITY_PER_MM_S * GADOLINIUM_RIM_CONCENTRATION_MM / 1000.0)
        decay = math.exp(-self.te_ms / tissue.t2_ms)
        if self.ti_ms is None:
            return tissue.pd * (1.0 - math.exp(-self.tr_ms / t1)) * decay
        return tissue.pd * abs(1.0 - 2.0 * math.exp(-self.ti_ms / t1) + math.exp(-self.tr_ms / t1)) * decay


SEQUENCES: dict[str, PulseSequence] = {
    "t1": PulseSequence(tr_ms=500.0, te_ms=15.0),
    "t1ce": PulseSequence(tr_ms=500.0, te_ms=15.0, gadolinium=True),
    "t2": PulseSequence(tr_ms=4000.0, te_ms=100.0),
    "flair": PulseSequence(tr_ms=9000.0, te_ms=100.0, ti_ms=2500.0),
}
"""The four BraTS modalities: T1w and T1ce spin echo, T2w spin echo, FLAIR inversion recovery."""


def tissue_signals(modality: str) -> dict[str, float]:
    """Signal of every class of :data:`TISSUES` in ``modality`` (relative units)."""
    sequence = SEQUENCES[modality]
    return {name: sequence.signal(tissue, enhancing=name == "enhancing") for name, tissue in TISSUES.items()}


def head_tissue_signals(modality: str) -> dict[str, float]:
    """Signal of every class of :data:`HEAD_TISSUES` in ``modality`` (relative units)."""
    sequence = SEQUENCES[modality]
    return {name: sequence.signal(tissue) for name, tissue in HEAD_TISSUES.items()}


@dataclass(frozen=True)
class PhantomConfig:
    """Every setting of :func:`make_phantom`. The defaults give a BraTS 2021-like subject."""

    shape: tuple[int, int, int] = (240, 240, 155)
    """Grid [X, Y, Z] in voxels of ``spacing_mm`` (before thick slices)."""
    spacing_mm: float = 1.0
    """Isotropic voxel size of the grid."""
    reference: str = "t1"
    """The modality (t1, t1ce, t2 or flair) written without misalignment or slice motion; the seg matches it
    exactly."""
    tumour: bool = True
    """Place a tumour (oedema, enhancing rim, necrosis) in deep white matter; False: healthy, the seg all zero."""
    tumour_radius_mm: tuple[float, float] = (15.0, 30.0)
    """Range of the oedema's mean radius (each semi-axis varies a further +-20%)."""
    bias_strength: float = 0.1
    """Bias field = exp(strength * g), g smooth in [-1, 1]: 0.1 gives about +-10%."""
    noise_std: float = 0.01
    """Rician noise sigma, relative to the brightest normal tissue of each modality."""
    max_rotation_deg: float = 3.0
    """Each Euler angle of a non-reference modality's misalignment is uniform in +-this."""
    max_translation_mm: float = 3.0
    """Each translation component of a non-reference modality's misalignment is uniform in +-this."""
    misalignment: Mapping[str, Sequence[float]] | None = None
    """Explicit misalignments, modality -> (rx, ry, rz deg, tx, ty, tz mm) (RAS Euler3D, see truth)."""
    slice_thickness_mm: float | None = None
    """Average groups of n = thickness / spacing_mm slices along Z into thick ones (Z // n are written); None: no."""
    slice_motion_mm: float = 0.0
    """Per-slice in-plane shifts of non-reference modalities, each component uniform in +-this."""
    gain_range: tuple[float, float] = (0.5, 2.0)
    """Per-modality scanner gain, uniform in this range."""
    intensity_scale: float = 1000.0
    """Intensity = scale * gain * bias * signal (the signal is about 0.1 to 0.6)."""
    head: bool = False
    """Keep the head: CSF, skull and scalp shells around the brain (:data:`HEAD_LAYERS_MM`) and noise over the
    whole field of view. The grid must hold the head (about 170 x 205 x 170 mm); the brain mask is
    :attr:`Phantom.brain`."""

    def __post_init__(self) -> None:
        shape_ok = isinstance(self.shape, Sequence) and len(self.shape) == 3
        if not shape_ok or not all(_is_int(s) and s >= 2 for s in self.shape):
            _bad("shape", "3 integers >= 2", self.shape)
        for name in ("spacing_mm", "intensity_scale"):
            if not _is_number(getattr(self, name)) or getattr(self, name) <= 0:
                _bad(name, "a positive number", getattr(self, name))
        for name in ("bias_strength", "noise_std", "max_rotation_deg", "max_translation_mm", "slice_motion_mm"):
            if not _is_number(getattr(self, name)) or getattr(self, name) < 0:
                _bad(name, "a number >= 0", getattr(self, name))
        if not isinstance(self.head, bool):
            _bad("head", "True or False", self.head)
        if self.max_rotation_deg > 45:
            _bad("max_rotation_deg", "at most 45 degrees", self.max_rotation_deg)
        if self.reference not in MODALITIES:
            _bad("reference", f"one of {list(MODALITIES)}", self.reference)
        for name in ("tumour_radius_mm", "gain_range"):
            low_high = getattr(self, name)
            if len(low_high) != 2 or not all(_is_number(v) for v in low_high) or not 0 < low_high[0] <= low_high[1]:
                _bad(name, "(low, high) with 0 < low <= high", low_high)
        for modality, values in (self.misalignment or {}).items():
            if modality not in MODALITIES or modality == self.reference:
                _bad("misalignment", f"keys among the non-reference modalities {self.moving_modalities}", modality)
            if len(values) != 6 or not all(_is_number(v) for v in values):
                _bad(f"misalignment[{modality!r}]", "(rx, ry, rz deg, tx, ty, tz mm)", values)
        if self.slice_thickness_mm is not None:
            ratio = self.slice_thickness_mm / self.spacing_mm if _is_number(self.slice_thickness_mm) else 0.0
            if round(ratio) < 1 or abs(ratio - round(ratio)) > 1e-6 or round(ratio) > self.shape[2]:
                expected = f"a multiple of spacing_mm={self.spacing_mm} within the grid"
                _bad("slice_thickness_mm", expected, self.slice_thickness_mm)

    @property
    def moving_modalities(self) -> list[str]:
        """The modalities that get a misalignment and slice motion: all but the reference."""
        return [m for m in MODALITIES if m != self.reference]

    @property
    def slices_per_thick_slice(self) -> int:
        """How many ``spacing_mm`` slices are averaged into one written slice (1: no thick slices)."""
        return 1 if self.slice_thickness_mm is None else round(self.slice_thickness_mm / self.spacing_mm)


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    return numeric and math.isfinite(value)


def _bad(field: str, expected: str, got: object) -> None:
    raise MRIInputError(f"PhantomConfig.{field}: expected {expected}, got {got!r}")


@dataclass
class Phantom:
    """A SIMULATED subject exactly as :func:`write_brats_subject` writes it.

    Attributes:
        images: modality -> float32 [X, Y, Z] intensities on the disk grid, 0 outside the brain (with
            ``head``: the head's tissues and noisy air there).
        seg: int16 [X, Y, Z] BraTS labels (0, 1 necrosis, 2 oedema, 4 enhancing) on the same grid,
            aligned with the reference modality.
        affine: [4, 4] voxel index -> RAS mm of every file (LPS-ish like BraTS: X and Y flipped).
        truth: JSON-serialisable record of every random choice and setting (see :func:`make_phantom`).
        brain: bool [X, Y, Z] the true brain mask of the reference modality (brain content >= 0.5).
            Kept in memory only: a ``*brainmask*`` file in a subject folder would be read as a given mask.
    """

    images: dict[str, np.ndarray]
    seg: np.ndarray
    affine: np.ndarray
    truth: dict
    brain: np.ndarray


def brats_affine(shape: Sequence[int], spacing_mm: float, slice_thickness_mm: float | None = None) -> np.ndarray:
    """[4, 4] voxel -> RAS mm affine of a BraTS-style grid: ``diag(-s, -s, t)``, Y origin at (Y - 1) s.

    With ``shape`` (240, 240, 155) and 1 mm it is the affine of the BraTS 2021 files. ``shape`` is the
    grid before thick slices; with ``slice_thickness_mm`` t = n s, written slice k is the average of
    slices k n ... k n + n - 1 of that grid and sits at their centre.
    """
    s = float(spacing_mm)
    t = s if slice_thickness_mm is None else float(slice_thickness_mm)
    affine = np.diag([-s, -s, t, 1.0])
    affine[1, 3] = (shape[1] - 1) * s
    affine[2, 3] = (t - s) / 2.0
    return affine


# --- Anatomy -----------------------------------------------------------------------------------


class _TissueMaps(NamedTuple):
    """Tissue content per voxel of a grid in MNI152 mm, each float32 [X, Y, Z] in [0, 1]."""

    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    brain: np.ndarray
    affine: np.ndarray
    """[4, 4] voxel -> MNI152 mm."""


@lru_cache(maxsize=1)
def _template_maps() -> _TissueMaps:
    """nilearn's 1 mm MNI152 GM / WM maps and brain mask (shipped in its wheel); cached, read-only."""
    # nilearn takes seconds to import and only the anatomy needs it.
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_gm_template, load_mni152_wm_template

    mask = load_mni152_brain_mask(resolution=1)
    brain = (np.asarray(mask.dataobj) > 0).astype(np.float32)
    gm = load_mni152_gm_template(resolution=1).get_fdata(dtype=np.float32) * brain
    wm = load_mni152_wm_template(resolution=1).get_fdata(dtype=np.float32) * brain
    csf = np.clip(brain - gm - wm, 0.0, 1.0)
    return _read_only(_TissueMaps(gm, wm, csf, brain, mask.affine.copy()))


@lru_cache(maxsize=4)
def _working_maps(factor: int) -> _TissueMaps:
    """The template maps averaged over ``factor``^3 blocks (a coarser grid for coarse phantoms)."""
    maps = _template_maps()
    if factor == 1:
        return maps
    n = [s // factor for s in maps.brain.shape]

    def block_mean(array: np.ndarray) -> np.ndarray:
        cropped = array[: n[0] * factor, : n[1] * factor, : n[2] * factor]
        return cropped.reshape(n[0], factor, n[1], factor, n[2], factor).mean(axis=(1, 3, 5), dtype=np.float32)

    block = np.diag([factor, factor, factor, 1.0])
    block[:3, 3] = (factor - 1) / 2.0  # a block's centre, in 1 mm voxels
    return _read_only(_TissueMaps(*(block_mean(a) for a in maps[:4]), maps.affine @ block))


def _read_only(maps: _TissueMaps) -> _TissueMaps:
    for array in maps[:4]:
        array.flags.writeable = False
    return maps


@lru_cache(maxsize=1)
def _brain_centre_mni() -> np.ndarray:
    """[3] centre of the brain mask's bounding box, MNI mm."""
    maps = _template_maps()
    voxels = np.argwhere(maps.brain > 0)
    centre = (voxels.min(axis=0) + voxels.max(axis=0)) / 2.0
    return maps.affine[:3, :3] @ centre + maps.affine[:3, 3]


@lru_cache(maxsize=1)
def _brain_box_mni() -> tuple[np.ndarray, np.ndarray]:
    """([3], [3]) lowest and highest voxel centres of the brain mask, MNI mm."""
    maps = _template_maps()
    voxels = np.argwhere(maps.brain > 0)
    corners = np.stack([voxels.min(axis=0), voxels.max(axis=0)]) @ maps.affine[:3, :3].T + maps.affine[:3, 3]
    return corners.min(axis=0), corners.max(axis=0)


@lru_cache(maxsize=4)
def _head_layers(factor: int) -> dict[str, np.ndarray]:
    """Content [X, Y, Z] float32 in {0, 1} of each shell of :data:`HEAD_LAYERS_MM` on the grid of
    ``_working_maps(factor)``, by distance from its brain mask (content >= 0.5); read-only."""
    maps = _working_maps(factor)
    spacing = np.linalg.norm(maps.affine[:3, :3], axis=0)
    outside = ndimage.distance_transform_edt(maps.brain < 0.5, sampling=spacing)
    layers, inner = {}, 0.0
    for name, _, thickness in HEAD_LAYERS_MM:
        layer = ((outside > inner) & (outside <= inner + thickness)).astype(np.float32)
        layer.flags.writeable = False
        layers[name] = layer
        inner += thickness
    return layers


def _check_grid_holds_head(config: PhantomConfig) -> None:
    """Raise when the head (the brain box grown by the shells, except below) does not fit in the grid.

    The brain is centred in the grid and the head reaches further above it than below, so the grid
    needs twice the larger of the two reaches along each axis.
    """
    margin = sum(thickness for _, _, thickness in HEAD_LAYERS_MM)
    low, high = _brain_box_mni()
    head_low, head_high = low - np.array([margin, margin, 0.0]), high + margin
    centre = (low + high) / 2.0
    needed_mm = 2.0 * np.maximum(centre - head_low, head_high - centre) + config.spacing_mm
    grid_mm = np.asarray(config.shape, dtype=float) * config.spacing_mm
    n_thick = config.slices_per_thick_slice
    grid_mm[2] = (config.shape[2] // n_thick) * n_thick * config.spacing_mm
    if np.any(grid_mm < needed_mm - 1e-6):
        needed = tuple(int(n) for n in np.ceil(needed_mm / config.spacing_mm - 1e-6))
        expected = f"with head=True, a grid that holds the head: at least {needed} voxels of {config.spacing_mm} mm"
        _bad("shape", expected, config.shape)


@lru_cache(maxsize=1)
def _deep_white_matter() -> tuple[np.ndarray, np.ndarray]:
    """Candidate tumour centres: ([N, 3] MNI mm of 2 mm-spaced voxels with WM > 0.9, [N] depth in the brain, mm)."""
    maps = _template_maps()
    brain, wm = maps.brain[::2, ::2, ::2], maps.wm[::2, ::2, ::2]
    depth = ndimage.distance_transform_edt(brain > 0, sampling=2.0)
    voxels = np.argwhere(wm > 0.9)
    points = (voxels * 2.0) @ maps.affine[:3, :3].T + maps.affine[:3, 3]
    return points, depth[tuple(voxels.T)]


@dataclass(frozen=True)
class Tumour:
    """Nested ellipsoids with smooth random boundaries, in MNI mm.

    A point p is in layer (name, r) of :data:`TUMOUR_LAYERS` when ``|diag(1/axes) R^T (p - c)| < r (1 + ripple(u))``
    with u the unit direction of that scaled vector and ``ripple(u) = sum_k a_k sin(f_k u.v_k + phi_k)``
    (one ripple per layer, ``sum_k |a_k| = TUMOUR_BOUNDARY_RIPPLE``). Inner layers take precedence.
    """

    centre_mm: np.ndarray
    """[3] centre, MNI mm."""
    semi_axes_mm: np.ndarray
    """[3] semi-axes of the oedema ellipsoid, mm."""
    rotation: np.ndarray
    """[3, 3] columns: directions of the semi-axes."""
    ripples: tuple[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], ...]
    """Per layer: amplitudes [K], directions [K, 3], frequencies [K] (rad), phases [K] (rad)."""

    @classmethod
    def random(cls, rng: np.random.Generator, radius_mm: tuple[float, float]) -> Tumour:
        """A tumour of mean radius uniform in ``radius_mm``, centred in deep white matter."""
        semi_axes = rng.uniform(*radius_mm) * rng.uniform(0.8, 1.2, size=3)
        points, depth = _deep_white_matter()
        deep_enough = np.flatnonzero(depth >= 0.6 * semi_axes.max())
        candidates = deep_enough if deep_enough.size else np.array([np.argmax(depth)])
        centre = points[candidates[rng.integers(candidates.size)]]
        rotation = Rotation.random(rng=rng).as_matrix()
        ripples = []
        for _ in TUMOUR_LAYERS:
            amplitudes = rng.uniform(0.2, 1.0, size=3)
            directions = rng.normal(size=(3, 3))
            ripples.append(
                (
                    amplitudes * TUMOUR_BOUNDARY_RIPPLE / amplitudes.sum(),
                    directions / np.linalg.norm(directions, axis=1, keepdims=True),
                    rng.uniform(2.0, 4.0, size=3),
                    rng.uniform(0.0, 2.0 * np.pi, size=3),
                )
            )
        return cls(centre, semi_axes, rotation, tuple(ripples))

    def labels(self, points_mm: np.ndarray) -> np.ndarray:
        """BraTS labels [N] int16 of points [N, 3] (MNI mm); 0 outside the tumour."""
        scaled = (points_mm - self.centre_mm) @ self.rotation / self.semi_axes_mm
        radius = np.linalg.norm(scaled, axis=1)
        direction = scaled / np.maximum(radius, 1e-9)[:, None]
        labels = np.zeros(len(points_mm), dtype=np.int16)
        for (name, relative_radius), (amplitudes, directions, frequencies, phases) in zip(TUMOUR_LAYERS, self.ripples):
            ripple = np.sin(frequencies * (direction @ directions.T) + phases) @ amplitudes
            labels[radius < relative_radius * (1.0 + ripple)] = TUMOUR_LABELS[name]
        return labels

    def label_map(self, maps: _TissueMaps) -> np.ndarray:
        """int16 labels on the grid of ``maps``, inside the brain only."""
        labels = np.zeros(maps.brain.shape, dtype=np.int16)
        reach = self.semi_axes_mm.max() * (1.0 + TUMOUR_BOUNDARY_RIPPLE)
        inverse = np.linalg.inv(maps.affine)
        corners = [inverse[:3, :3] @ (self.centre_mm + sign * reach) + inverse[:3, 3] for sign in (-1.0, 1.0)]
        low = np.clip(np.floor(np.minimum(*corners)).astype(int), 0, labels.shape)
        high = np.clip(np.ceil(np.maximum(*corners)).astype(int) + 1, 0, labels.shape)
        box = tuple(slice(lo, hi) for lo, hi in zip(low, high))
        voxels = np.stack(np.meshgrid(*(np.arange(lo, hi) for lo, hi in zip(low, high)), indexing="ij"), axis=-1)
        points = voxels.reshape(-1, 3) @ maps.affine[:3, :3].T + maps.affine[:3, 3]
        labels[box] = self.labels(points).reshape(voxels.shape[:3])
        labels[maps.brain < 0.5] = 0
        return labels

    def to_json(self, mni_to_world_mm: np.ndarray) -> dict:
        """Centre and semi-axes in the phantom's RAS world (MNI + ``mni_to_world_mm``)."""
        return {
            "centre_ras_mm": (self.centre_mm + mni_to_world_mm).tolist(),
            "semi_axes_mm": self.semi_axes_mm.tolist(),
            "axes_directions_ras": self.rotation.T.tolist(),
            "relative_radii": {name: radius for name, radius in TUMOUR_LAYERS},
            "labels": TUMOUR_LABELS,
            "boundary_ripple": TUMOUR_BOUNDARY_RIPPLE,
        }


def _signal_map(maps: _TissueMaps, labels: np.ndarray, modality: str) -> np.ndarray:
    """Noise-free signal [X, Y, Z] float32 of ``modality`` on the grid of ``maps``: partial-volume mix of tissues."""
    signals = tissue_signals(modality)
    signal = maps.gm * signals["gm"] + maps.wm * signals["wm"] + maps.csf * signals["csf"]
    for name, label in TUMOUR_LABELS.items():
        inside = labels == label
        signal[inside] = maps.brain[inside] * signals[name]
    return signal


def _head_signal_map(layers: Mapping[str, np.ndarray], modality: str) -> np.ndarray:
    """Noise-free signal [X, Y, Z] float32 of the head's shells (:data:`HEAD_LAYERS_MM`) in ``modality``."""
    signals = {**tissue_signals(modality), **head_tissue_signals(modality)}
    return sum(layers[name] * np.float32(signals[tissue]) for name, tissue, _ in HEAD_LAYERS_MM)


# --- Acquisition -------------------------------------------------------------------------------


def euler_transform(
    angles_deg: Sequence[float], translation_mm: Sequence[float], centre_mm: Sequence[float]
) -> np.ndarray:
    """[4, 4] matrix of SimpleITK's ``Euler3DTransform(centre, rx, ry, rz, translation)``.

    ``T(x) = R (x - centre) + centre + translation`` with ``R = Rz Rx Ry`` (angles in degrees here).
    """
    transform = sitk.Euler3DTransform(
        [float(c) for c in centre_mm], *np.radians(angles_deg).tolist(), [float(t) for t in translation_mm]
    )
    matrix = np.eye(4)
    matrix[:3, :3] = np.asarray(transform.GetMatrix()).reshape(3, 3)
    matrix[:3, 3] = np.asarray(transform.GetCenter()) + np.asarray(transform.GetTranslation())
    matrix[:3, 3] -= matrix[:3, :3] @ np.asarray(transform.GetCenter())
    return matrix


def _euler_json(angles_deg: np.ndarray, translation_mm: np.ndarray, centre_mm: np.ndarray) -> dict:
    return {
        "rotation_rad": np.radians(angles_deg).tolist(),
        "rotation_deg": np.asarray(angles_deg, dtype=float).tolist(),
        "translation_mm": np.asarray(translation_mm, dtype=float).tolist(),
        "centre_mm": np.asarray(centre_mm, dtype=float).tolist(),
    }


MISALIGNMENT_CONVENTION = (
    "SimpleITK Euler3DTransform parameters (angles about X, Y, Z; ComputeZYX off, so R = Rz Rx Ry; "
    "T(x) = R (x - centre) + centre + translation). T maps a point of the reference (fixed) image to the "
    "point of this modality's (moving) image that shows the same anatomy: moving(T(x)) = anatomy(x), so "
    "sitk.Resample(moving, reference, T) aligns the modality and a registration with fixed=reference, "
    "moving=modality should recover T. 'ras': RAS mm (nibabel, the files' affines, Volume.affine); "
    "'lps': LPS mm (SimpleITK physical space of the same files; angles (-rx, -ry, rz), translation and "
    "centre with X and Y negated); 'matrix_ras': T as a [4, 4] RAS mm matrix."
)
SLICE_MOTION_CONVENTION = (
    "Per written slice k of a modality, shift (dx, dy) in RAS mm: slice k shows at RAS point p what the "
    "motion-free image shows at p + (dx, dy, 0). Applied after misalignment and thick slices, before bias."
)
BIAS_CONVENTION = (
    "Multiplicative field(p) = exp(strength * sum_k a_k cos(2 pi w_k . (p - centre) + phase_k)) at RAS mm "
    "point p of the written grid, sum_k |a_k| = 1; intensity = intensity_scale * gain * field * signal (+ noise)."
)


def _bias_terms(rng: np.random.Generator, n_terms: int = 4) -> dict:
    """Random smooth field: wavelengths 150-400 mm in random directions."""
    amplitudes = rng.normal(size=n_terms)
    directions = rng.normal(size=(n_terms, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    wavelengths = rng.uniform(150.0, 400.0, size=n_terms)
    return {
        "amplitudes": (amplitudes / np.abs(amplitudes).sum()).tolist(),
        "wavevectors_per_mm": (directions / wavelengths[:, None]).tolist(),
        "phases_rad": rng.uniform(0.0, 2.0 * np.pi, size=n_terms).tolist(),
    }


def bias_field(
    shape: Sequence[int], affine: np.ndarray, strength: float, terms: Mapping, centre_mm: np.ndarray
) -> np.ndarray:
    """The multiplicative bias field [X, Y, Z] float32 on the grid (``shape``, ``affine``): see ``BIAS_CONVENTION``.

    ``affine`` must be diagonal (axis-aligned grid), which every phantom grid is.
    """
    axes = [affine[a, a] * np.arange(n) + affine[a, 3] - centre_mm[a] for a, n in enumerate(shape)]
    g = np.zeros(tuple(shape), dtype=np.float32)
    for amplitude, wavevector, phase in zip(terms["amplitudes"], terms["wavevectors_per_mm"], terms["phases_rad"]):
        x, y, z = ((2.0 * np.pi * w * axis).astype(np.float32) for w, axis in zip(wavevector, axes))
        z += np.float32(phase)
        g += np.float32(amplitude) * np.cos(x[:, None, None] + y[None, :, None] + z[None, None, :])
    return np.exp(np.float32(strength) * g)


def _shift_slices(volume: np.ndarray, shifts_mm: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Slice k of the result at RAS p = slice k of ``volume`` at p + (dx_k, dy_k, 0) (``SLICE_MOTION_CONVENTION``)."""
    out = np.empty_like(volume)
    voxel_size = np.diag(affine)[:2]
    for k, shift_mm in enumerate(shifts_mm):
        out[:, :, k] = ndimage.shift(volume[:, :, k], -shift_mm / voxel_size, order=1, mode="constant", cval=0.0)
    return out


def make_phantom(seed: int, config: PhantomConfig) -> Phantom:
    """A SIMULATED BraTS-like subject, fully determined by ``seed`` and ``config``.

    Independent random streams (tumour, misalignment, gain, bias, slice motion, noise) are drawn from
    ``seed``, so changing one setting does not move the others. ``truth`` holds: ``simulated``
    (true), ``seed``, ``config``, ``grid`` (shape, affine, spacing, slice thickness), the brain's
    offset from MNI152 mm, ``tissues``, ``tumour`` (RAS centre and semi-axes; None without one), ``head``
    (shells, their tissues and the true brain volume; None without ``config.head``), and
    per modality (``modalities``): ``sequence``, ``misalignment`` (see ``MISALIGNMENT_CONVENTION``;
    identity for the reference), ``slice_shifts_mm`` (``SLICE_MOTION_CONVENTION``), ``bias``
    (``BIAS_CONVENTION``), ``gain`` and ``noise_sigma`` (intensity units).
    """
    if not _is_int(seed) or seed < 0:
        raise MRIInputError(f"seed: expected an integer >= 0, got {seed!r}")
    tumour_rng, misalignment_rng, gain_rng, bias_rng, motion_rng, noise_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(6)
    )
    n_thick = config.slices_per_thick_slice
    fine_shape = (config.shape[0], config.shape[1], (config.shape[2] // n_thick) * n_thick)
    fine_affine = brats_affine(config.shape, config.spacing_mm)
    affine = brats_affine(config.shape, config.spacing_mm, config.slice_thickness_mm)
    shape = (fine_shape[0], fine_shape[1], fine_shape[2] // n_thick)
    centre = fine_affine[:3, :3] @ ((np.asarray(config.shape) - 1) / 2.0) + fine_affine[:3, 3]
    mni_to_world = centre - _brain_centre_mni()
    world_from_mni = np.eye(4)
    world_from_mni[:3, 3] = mni_to_world
    if config.head:
        _check_grid_holds_head(config)

    # A working grid about half the output spacing: detail enough, and fast for coarse test phantoms.
    factor = max(1, int(config.spacing_mm // 2))
    maps = _working_maps(factor)
    head_layers = _head_layers(factor) if config.head else None
    tumour = Tumour.random(tumour_rng, config.tumour_radius_mm) if config.tumour else None
    labels = tumour.label_map(maps) if tumour is not None else np.zeros(maps.brain.shape, dtype=np.int16)
    work_from_world = np.linalg.inv(world_from_mni @ maps.affine)

    images: dict[str, np.ndarray] = {}
    brains: dict[str, np.ndarray] = {}
    truth_modalities: dict[str, dict] = {}
    lps_signs = np.diag(LPS_FROM_RAS)[:3]  # the truth in LPS too: X and Y components (and angles) negated
    for modality in MODALITIES:
        angles = misalignment_rng.uniform(-config.max_rotation_deg, config.max_rotation_deg, size=3)
        translation = misalignment_rng.uniform(-config.max_translation_mm, config.max_translation_mm, size=3)
        gain = float(gain_rng.uniform(*config.gain_range))
        bias = _bias_terms(bias_rng)
        shifts = motion_rng.uniform(-config.slice_motion_mm, config.slice_motion_mm, size=(shape[2], 2))
        if modality == config.reference:
            angles, translation, shifts = np.zeros(3), np.zeros(3), np.zeros_like(shifts)
        elif config.misalignment and modality in config.misalignment:
            angles, translation = np.split(np.asarray(config.misalignment[modality], dtype=float), 2)
        moving_from_fixed = euler_transform(angles, translation, centre)

        # Voxel of this modality -> RAS point -> anatomy (reference frame) -> working-grid voxel.
        sample = work_from_world @ np.linalg.inv(moving_from_fixed) @ fine_affine
        anatomy = _signal_map(maps, labels, modality)
        if head_layers is not None:
            anatomy += _head_signal_map(head_layers, modality)
        signal = ndimage.affine_transform(anatomy, sample, output_shape=fine_shape, order=1)
        brain = ndimage.affine_transform(maps.brain, sample, output_shape=fine_shape, order=1)
        signal, brain = (a.reshape(*shape, n_thick).mean(axis=3) for a in (signal, brain))
        if config.slice_motion_mm > 0 and modality != config.reference:
            signal, brain = (_shift_slices(a, shifts, affine) for a in (signal, brain))

        scale = config.intensity_scale * gain
        signal *= scale * bias_field(shape, affine, config.bias_strength, bias, centre)
        sigma = config.noise_std * scale * max(tissue_signals(modality)[t] for t in ("wm", "gm", "csf"))
        brains[modality] = brain >= 0.5
        inside = np.ones(shape, dtype=bool) if config.head else brains[modality]
        real, imaginary = sigma * noise_rng.standard_normal((2, int(inside.sum())))
        image = np.zeros(shape, dtype=np.float32)
        image[inside] = np.hypot(signal[inside] + real, imaginary)  # Rician: magnitude of complex Gaussian
        images[modality] = image

        truth_modalities[modality] = {
            "sequence": asdict(SEQUENCES[modality]),
            "misalignment": {
                "ras": _euler_json(angles, translation, centre),
                "lps": _euler_json(angles * lps_signs, translation * lps_signs, centre * lps_signs),
                "matrix_ras": moving_from_fixed.tolist(),
            },
            "slice_shifts_mm": shifts.tolist(),
            "bias": {"strength": config.bias_strength, "centre_mm": centre.tolist(), **bias},
            "gain": gain,
            "noise_sigma": sigma,
        }

    true_brain = brains[config.reference]
    seg_sample = work_from_world @ affine
    seg = ndimage.affine_transform(labels, seg_sample, output_shape=shape, order=0).astype(np.int16)
    truth = {
        "simulated": True,
        "description": SIMULATED_DESCRIPTION,
        "generator": "mri_nerfstudio.phantom.make_phantom",
        "seed": int(seed),
        "config": to_plain(asdict(config)),
        "grid": {
            "shape": list(shape),
            "affine": affine.tolist(),
            "spacing_mm": [config.spacing_mm, config.spacing_mm, config.slice_thickness_mm or config.spacing_mm],
            "slice_thickness_mm": config.slice_thickness_mm,
            "slices_per_thick_slice": n_thick,
        },
        "reference": config.reference,
        "mni_to_world_offset_mm": mni_to_world.tolist(),
        "tissues": {name: tissue._asdict() for name, tissue in TISSUES.items()},
        "tumour": tumour.to_json(mni_to_world) if tumour is not None else None,
        "head": _head_json(true_brain, affine) if config.head else None,
        "misalignment_convention": MISALIGNMENT_CONVENTION,
        "slice_motion_convention": SLICE_MOTION_CONVENTION,
        "bias_convention": BIAS_CONVENTION,
        "modalities": truth_modalities,
    }
    return Phantom(images=images, seg=seg, affine=affine, truth=truth, brain=true_brain)


def _head_json(brain: np.ndarray, affine: np.ndarray) -> dict:
    """The head's shells, their tissues and the true brain volume (ml), for ``truth["head"]``."""
    return {
        "layers_mm": [
            {"name": name, "tissue": tissue, "thickness_mm": thickness} for name, tissue, thickness in HEAD_LAYERS_MM
        ],
        "tissues": {name: tissue._asdict() for name, tissue in HEAD_TISSUES.items()},
        "noise": "Rician over the whole field of view (the air is noisy, not constant)",
        "below": "the head ends where the MNI152 maps do (z = -72 mm MNI), like a field of view cutting the neck",
        "brain_ml": float(np.count_nonzero(brain)) * abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0,
        "brain_mask": "Phantom.brain (in memory only: a *brainmask* file would be read as a given mask)",
    }


# --- Writing -----------------------------------------------------------------------------------


def write_brats_subject(phantom: Phantom, root: Path, index: int) -> Path:
    """Write ``root/BraTS2021_{index:05d}/`` in the BraTS 2021 layout, plus ``simulated.json`` (the truth).

    The folder is built under a hidden temporary name and renamed into place, so a crash never
    leaves a half-written subject. An existing folder is replaced only if it is a simulated one.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise MRIInputError("output root exists and is not a folder", root)
    if not _is_int(index) or index < 0:
        raise MRIInputError(f"index: expected an integer >= 0, got {index!r}")
    name = f"BraTS2021_{index:05d}"
    target = root / name
    if target.exists() and not (target / "simulated.json").is_file():
        raise MRIInputError("exists and is not a simulated subject (no simulated.json); refusing to overwrite", target)
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".{name}.{uuid.uuid4().hex[:8]}.tmp"  # hidden: find_subjects skips it
    staging.mkdir()
    try:
        for modality, image in phantom.images.items():
            save_nifti(image, phantom.affine, staging / f"{name}_{modality}.nii.gz", description=SIMULATED_DESCRIPTION)
        save_nifti(phantom.seg, phantom.affine, staging / f"{name}_seg.nii.gz", description=SIMULATED_DESCRIPTION)
        (staging / "simulated.json").write_text(json.dumps({"subject": name, **phantom.truth}, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        staging.replace(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def write_brats_root(
    out: Path, n: int, seed: int, config: PhantomConfig, on_written: Callable[[Path], None] | None = None
) -> list[Path]:
    """Write ``n`` SIMULATED subjects ``out/BraTS2021_{i:05d}`` (subject i uses seed ``seed + i``).

    Args:
        on_written: called with each subject folder as soon as it is written (progress reporting).

    Returns:
        The subject folders, in order.
    """
    if not _is_int(n) or n < 1:
        raise MRIInputError(f"n: expected a number of subjects >= 1, got {n!r}")
    if not _is_int(seed) or seed < 0:
        raise MRIInputError(f"seed: expected an integer >= 0, got {seed!r}")
    written = []
    for i in range(n):
        folder = write_brats_subject(make_phantom(seed + i, config), out, i)
        if on_written is not None:
            on_written(folder)
        written.append(folder)
    return written
