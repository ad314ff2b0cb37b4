"""Load -> preprocess -> render 72 views, cached on disk by a hash of the inputs and the settings.

A prepared subject is a folder ``<cache>/<subject>-<hash>/`` holding

- ``preprocessed_<modality>.nii.gz`` (and ``..._seg``, ``..._mask``): the preprocessed volume on its
  (possibly resampled) canonical RAS grid, openable in any NIfTI viewer;
- ``views.npy`` ([N, H, W] float32 in [0, 1], exact) and ``views/view_XXX.png`` (8-bit, for people);
- ``cameras.json``: poses and intrinsics of the views (nerfstudio-like ``frames``) and the scene
  normalisation from RAS mm to the world frame;
- ``provenance.json``: what each preprocessing step did;
- ``manifest.json``: the inputs, settings and hash. It is written last, and the folder is built under a
  temporary name and renamed, so a crash or Ctrl-C never leaves a half-prepared subject behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal

import nibabel as nib
import numpy as np
import torch
from PIL import Image

from mri_nerfstudio import views
from mri_nerfstudio.atomic_write import write_json
from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.head_pose import HeadPose, estimate_head_pose
from mri_nerfstudio.json_values import to_plain
from mri_nerfstudio.labels import check_convention_argument
from mri_nerfstudio.preprocess.pipeline import PreprocessPipeline, default_pipeline, write_provenance
from mri_nerfstudio.preprocess.skull_strip import SKULL_STRIP_CHOICES
from mri_nerfstudio.subject_files import find_subjects, input_files, select_subjects, subject_name
from mri_nerfstudio.volume import Volume, load_default_subject, load_subject, save_nifti

CACHE_FORMAT = 2
"""Bump when the layout of a prepared folder changes, so stale caches are rebuilt, not misread."""

DEFAULT_SUBJECT = "default"
"""``--data`` value (or empty) that selects the embedded MNI152 template."""


@dataclass(frozen=True)
class PrepareConfig:
    """Every setting that changes a prepared subject (all of them enter the cache hash)."""

    modalities: tuple[str, ...] | None = None
    """Modalities to load (None: all present)."""
    reference: str = "t1"
    """Modality every other one is registered to, and the one the views are rendered from. When a subject
    lacks it, the first present of t1, t1ce, t2, flair is used instead, with a note."""
    modality: tuple[str, ...] = ()
    """NAME=GLOB entries for files the names do not give away (NAME: t1, t1ce, t2, flair, seg or mask; GLOB
    matched against file names in each subject folder), e.g. --modality 't1=*MPRAGE*.nii.gz'."""
    series: str | None = None
    """SeriesInstanceUID of the DICOM series to read from a folder that holds several."""
    label_convention: Literal["auto", "brats2021", "brats2023", "brats2013"] = "auto"
    """Tumour label convention of the seg files (auto: from the file names, else from the label values)."""
    mask: Path | None = None
    """Brain mask file (on the reference scan's grid) for a single subject; it wins over everything else."""
    mask_files: bool = True
    """Use a *brainmask* / *brain_mask* file found in a subject folder as its brain mask."""
    skull_strip: Literal["auto", "on", "off"] = "auto"
    """Brain mask of a subject without a mask file: on = extract the brain from a whole-head scan, off = the
    head foreground (right for a skull-stripped scan), auto = decide from the scan whether it is skull-stripped."""
    register: bool = True
    """Rigidly register every modality to the reference (mutual information)."""
    registration_transform: str = "rigid"
    """``rigid`` or ``affine``."""
    correct_slice_motion: bool = False
    """Before any resampling, re-align the slices of the thickest voxel axis in-plane (2D rigid per slice): each
    modality's slices to the reference's, the reference's to the mean of their neighbours. For stacks with motion
    between slices (:class:`~mri_nerfstudio.preprocess.register.CorrectSliceMotion`); the fitted motions are
    in provenance.json."""
    resample_anisotropic: bool = True
    """When the thickest voxel axis is more than twice the thinnest (thick slices, along any axis): bicubic
    in-plane up-sampling and cubic through-plane interpolation towards target_spacing_mm."""
    target_spacing_mm: float = 1.0
    """Voxel size that resample_anisotropic aims at (in-plane axes already finer are kept)."""
    upsample_factor: int = 1
    """Explicit in-plane bicubic up-sampling factor (1: none); this or slice_spacing_mm replaces
    resample_anisotropic. The in-plane axes are the two thinnest."""
    slice_spacing_mm: float | None = None
    """Explicit through-plane spacing for the thickest axis (None: keep)."""
    equalize: bool = True
    """Histogram equalisation inside the brain mask after percentile normalisation."""
    align_head: bool = False
    """Orbit the brain's own superior axis: turn the world frame by the head's tilt in the scanner, fitted from
    the brain mask's outline against MNI152's (mri_nerfstudio/head_pose.py), so that every subject's view i shows
    its brain from the same side. The volumes, their grids and the exported NIfTI stay in scanner space."""
    default_resolution_mm: int = 2
    """Resolution of the embedded MNI152 template (1 or 2 mm) when no data is given."""
    n_views: int = 72
    step_deg: float = 5.0
    elevation_deg: float = 0.0
    camera_radius: float = 4.0
    """Camera distance from the brain centre, in world units (the brain fits the unit sphere)."""
    image_size: int = 128
    projection: str = "orthographic"
    """``orthographic`` (parallel projection, radiology style) or ``perspective``."""
    view_mode: str = "volume"
    """``volume`` (emission-absorption), ``drr`` (attenuation) or ``mip``."""
    density_scale: float = views.DEFAULT_DENSITY_SCALE
    """k in density = k * intensity, per world unit."""

    def __post_init__(self) -> None:
        if self.view_mode not in views.VIEW_MODES:
            raise MRIInputError(f"view_mode must be one of {views.VIEW_MODES}, got {self.view_mode!r}")
        if self.projection not in ("orthographic", "perspective"):
            raise MRIInputError(f"projection must be 'orthographic' or 'perspective', got {self.projection!r}")
        if self.image_size < 8:
            raise MRIInputError(f"image_size must be >= 8 pixels, got {self.image_size}")
        if self.upsample_factor < 1:
            raise MRIInputError(f"upsample_factor must be >= 1, got {self.upsample_factor}")
        if self.density_scale <= 0:
            raise MRIInputError(f"density_scale must be > 0, got {self.density_scale}")
        if self.skull_strip not in SKULL_STRIP_CHOICES:
            raise MRIInputError(f"skull_strip must be one of {list(SKULL_STRIP_CHOICES)}, got {self.skull_strip!r}")
        check_convention_argument(self.label_convention)
        if not self.target_spacing_mm > 0:
            raise MRIInputError(f"target_spacing_mm must be > 0 mm, got {self.target_spacing_mm}")

    def orbit_cameras(self) -> views.ViewCameras:
        """The cameras of the orbit these view settings describe (the same for every subject)."""
        return views.make_orbit_cameras(
            n_views=self.n_views,
            step_deg=self.step_deg,
            elevation_deg=self.elevation_deg,
            radius=self.camera_radius,
            image_size=self.image_size,
            projection=self.projection,
        )


@dataclass
class PreparedSubject:
    """A subject ready for training: preprocessed volume, rendered views and their cameras."""

    name: str
    directory: Path
    volume: Volume
    """Preprocessed, intensities in [0, 1], on the grid the views were rendered from."""
    images: np.ndarray
    """[N, H, W] float32 in [0, 1]: view i seen by camera i."""
    cameras: views.ViewCameras
    normalization: views.SceneNormalization
    config: PrepareConfig
    provenance: list[dict] = field(default_factory=list)

    @property
    def world_from_voxel(self) -> np.ndarray:
        """[4, 4] voxel index of ``volume`` -> world coordinates."""
        return self.normalization.world_from_ras() @ self.volume.affine


def subject_sources(data: Path | None) -> list[Path | None]:
    """The subjects that ``data`` names: ``[None]`` (the embedded default) for no data."""
    if data is None or str(data) in ("", ".", DEFAULT_SUBJECT):
        return [None]
    return find_subjects(Path(data))


def source_name(source: Path | None) -> str:
    """The name of subject ``source`` (:func:`subject_sources`): ``MNI152`` for the embedded default."""
    return "MNI152" if source is None else subject_name(source)


def cache_key(source: Path | None, config: PrepareConfig) -> str:
    """Hash of the input files' bytes (every data file of a header-plus-data format, and a given mask) and
    every setting: equal keys mean an identical prepared subject."""
    digest = hashlib.sha256(f"mri-nerfstudio-prepare-v{CACHE_FORMAT}".encode())
    digest.update(json.dumps(asdict(config), sort_keys=True, default=str).encode())
    for path in [] if source is None else input_files(source, config.mask):
        digest.update(path.name.encode())
        with path.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def load_volume(source: Path | None, config: PrepareConfig) -> Volume:
    """The subject ``source`` names (``None``: the embedded MNI152 template), loaded as ``config`` asks."""
    if source is None:
        if config.mask is not None:
            raise MRIInputError(
                "mask: the embedded MNI152 template has its own brain mask; give --data too", config.mask
            )
        return load_default_subject(resolution_mm=config.default_resolution_mm)
    return load_subject(
        source,
        modalities=config.modalities,
        reference=config.reference,
        modality_globs=config.modality,
        series=config.series,
        label_convention=config.label_convention,
        mask=config.mask,
        use_mask_files=config.mask_files,
    )


def loading_record(volume: Volume, config: PrepareConfig) -> dict:
    """The first provenance record: how the subject was loaded (files per role, the reference used and why,
    the label convention, notes), in the shape of the preprocessing steps' records."""
    params = {
        key: getattr(config, key)
        for key in ("modalities", "reference", "modality", "series", "label_convention", "mask", "mask_files")
    }
    return {"step": "load", "params": to_plain(params), "estimates": to_plain(volume.loading)}


def preprocessing_pipeline(config: PrepareConfig) -> PreprocessPipeline:
    """The preprocessing chain ``config`` asks for (its steps can also be run one by one, e.g. to time them)."""
    return default_pipeline(
        skull_strip=config.skull_strip,
        resample_anisotropic=config.resample_anisotropic,
        target_spacing_mm=config.target_spacing_mm,
        register=config.register,
        registration_transform=config.registration_transform,
        correct_slice_motion=config.correct_slice_motion,
        upsample_factor=config.upsample_factor,
        slice_spacing_mm=config.slice_spacing_mm,
        equalize=config.equalize,
    )


def render_subject_views(
    volume: Volume, config: PrepareConfig, pose: HeadPose | None = None
) -> tuple[np.ndarray, views.ViewCameras, views.SceneNormalization]:
    """The orbit views of a preprocessed volume's reference modality (``volume.reference``).

    Args:
        volume: the preprocessed subject.
        config: the view settings.
        pose: the head's pose, whose rotation turns the world frame (None: the scanner's axes).

    Returns:
        ``[N, H, W]`` float32 images in [0, 1] (view i seen by camera i), the N cameras, and the
        normalisation from RAS mm to the world frame (brain in the unit sphere).
    """
    rotation = None if pose is None else pose.rotation
    normalization = views.scene_normalization(volume.brain_mask(), volume.affine, rotation=rotation)
    cameras = config.orbit_cameras()
    world_from_voxel = normalization.world_from_ras() @ volume.affine
    images = views.render_views(
        torch.from_numpy(volume.images[volume.reference]),
        torch.from_numpy(world_from_voxel).float(),
        cameras,
        mode=config.view_mode,
        density_scale=config.density_scale,
    ).numpy()
    return images.astype(np.float32), cameras, normalization


def prepare_subject(
    source: Path | None,
    cache_dir: Path,
    config: PrepareConfig = PrepareConfig(),
    progress: Callable[[str], None] | None = None,
) -> PreparedSubject:
    """Prepare one subject (``None``: the embedded MNI152 template), or load it from the cache.

    Args:
        source: a BraTS subject folder or a single volume file; ``None`` for the default subject.
        cache_dir: folder that holds prepared subjects (created when missing).
        config: preprocessing and view settings.
        progress: called with a short description before each stage.
    """
    report = progress or (lambda _message: None)
    name = source_name(source)
    key = cache_key(source, config)
    directory = Path(cache_dir) / f"{name}-{key}"
    if (directory / "manifest.json").is_file():
        report(f"{name}: cached in {directory}")
        return load_prepared(directory)

    report(f"{name}: loading")
    volume = load_volume(source, config)
    for note in volume.loading.get("notes", []):
        report(f"{name}: note: {note}")
    report(f"{name}: preprocessing ({', '.join(volume.modalities)}; reference {volume.reference})")
    pipeline = preprocessing_pipeline(config)
    volume, records = pipeline(volume)
    for step, record in zip(pipeline.steps, records):
        decision = step.describe(record["estimates"])
        if decision:
            report(f"{name}: {decision}")
    provenance = [loading_record(volume, config), *records]
    pose = None
    if config.align_head:
        pose = estimate_head_pose(volume.brain_mask(), volume.affine, where=source)
        angles = ", ".join(f"{axis} {angle:+.1f}" for axis, angle in pose.angles_deg.items())
        report(f"{name}: head tilted {pose.angle_deg:.1f} degrees from MNI152 ({angles}); the orbit follows the brain")
        provenance.append(pose.record())
    report(f"{name}: rendering {config.n_views} {config.view_mode} views at {config.image_size} px")
    images, cameras, normalization = render_subject_views(volume, config, pose)

    prepared = PreparedSubject(
        name=name,
        directory=directory,
        volume=volume,
        images=images,
        cameras=cameras,
        normalization=normalization,
        config=config,
        provenance=provenance,
    )
    report(f"{name}: writing {directory}")
    _write_prepared(prepared, source, key)
    return prepared


def prepare_subjects(
    data: Path | None,
    cache_dir: Path,
    config: PrepareConfig = PrepareConfig(),
    progress: Callable[[str], None] | None = None,
    shard: tuple[int, int] = (0, 1),
    subjects: Sequence[str] = (),
) -> list[PreparedSubject]:
    """Prepare the subjects that ``data`` names (``subjects``: only these, see :func:`select_subjects`);
    ``shard=(i, n)`` keeps subjects i, i+n, i+2n, ... of them.

    Sharding lets a cluster array job (e.g. Slurm) prepare a large BraTS root in parallel, one
    process per shard, into a shared cache.
    """
    index, count = shard
    if not 0 <= index < count:
        raise MRIInputError(f"shard must be (index, count) with 0 <= index < count, got {shard}")
    sources = subject_sources(data)
    if subjects:
        names = [source_name(source) for source in sources]
        sources = [sources[i] for i in select_subjects(names, subjects, "subjects", data)]
    if config.mask is not None and len(sources) != 1:
        raise MRIInputError(
            f"mask: one file cannot be the brain mask of {len(sources)} subjects; put a *brainmask* file in "
            "each subject folder, or map them with --modality 'mask=GLOB'",
            data,
        )
    sources = sources[index::count]
    return [prepare_subject(source, cache_dir, config, progress) for source in sources]


def _write_prepared(prepared: PreparedSubject, source: Path | None, key: str) -> None:
    final = prepared.directory
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        volume = prepared.volume
        for modality, array in volume.images.items():
            save_nifti(array.astype(np.float32), volume.affine, tmp / f"preprocessed_{modality}.nii.gz")
        if volume.seg is not None:
            save_nifti(volume.seg.astype(np.int16), volume.affine, tmp / "preprocessed_seg.nii.gz")
        save_nifti(volume.brain_mask().astype(np.uint8), volume.affine, tmp / "preprocessed_mask.nii.gz")
        np.save(tmp / "views.npy", prepared.images)
        (tmp / "views").mkdir()
        for i, image in enumerate(prepared.images):
            Image.fromarray(np.round(image * 255).astype(np.uint8)).save(tmp / "views" / f"view_{i:03d}.png")
        cameras = prepared.cameras.to_json()
        cameras["normalization"] = prepared.normalization.to_json()
        write_json(tmp / "cameras.json", cameras)
        write_provenance(prepared.provenance, tmp / "provenance.json")
        write_json(
            tmp / "manifest.json",
            {
                "format": CACHE_FORMAT,
                "name": prepared.name,
                "key": key,
                "source": None if source is None else str(source.resolve()),
                "inputs": {m: volume.sources[m] for m in [*volume.modalities, "seg", "mask"] if m in volume.sources},
                "modalities": volume.modalities,
                "reference": volume.reference,
                "scanner_affine": np.asarray(volume.scanner_affine).tolist(),
                "scanner_shape": [int(s) for s in volume.scanner_shape],
                "config": to_plain(asdict(prepared.config)),
            },
        )
        try:
            tmp.rename(final)
        except OSError:
            # Another process (e.g. a parallel shard) finished the same subject first: keep theirs.
            if not (final / "manifest.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_prepared(directory: Path) -> PreparedSubject:
    """Read a prepared-subject folder written by :func:`prepare_subject`."""
    directory = Path(directory)
    manifest = _read_json(directory / "manifest.json")
    if manifest.get("format") != CACHE_FORMAT:
        raise MRIInputError(f"format {manifest.get('format')} is not {CACHE_FORMAT}; delete it to rebuild",
                            directory / "manifest.json")
    config_fields = dict(manifest["config"])
    for key in ("modalities", "modality"):
        if config_fields.get(key) is not None:
            config_fields[key] = tuple(config_fields[key])
    if config_fields.get("mask") is not None:
        config_fields["mask"] = Path(config_fields["mask"])
    config = PrepareConfig(**config_fields)
    images, affine = {}, None
    for modality in manifest["modalities"]:
        nifti = nib.load(directory / f"preprocessed_{modality}.nii.gz")
        images[modality] = np.asarray(nifti.dataobj, dtype=np.float32)
        affine = nifti.affine
    seg_path = directory / "preprocessed_seg.nii.gz"
    volume = Volume(
        name=manifest["name"],
        images=images,
        affine=affine,
        scanner_affine=np.asarray(manifest["scanner_affine"]),
        scanner_shape=tuple(manifest["scanner_shape"]),
        seg=np.asarray(nib.load(seg_path).dataobj, dtype=np.int16) if seg_path.is_file() else None,
        mask=np.asarray(nib.load(directory / "preprocessed_mask.nii.gz").dataobj) > 0,
        sources=manifest["inputs"],
        reference=manifest["reference"],
    )
    cameras_json = _read_json(directory / "cameras.json")
    return PreparedSubject(
        name=manifest["name"],
        directory=directory,
        volume=volume,
        images=np.load(directory / "views.npy"),
        cameras=views.ViewCameras.from_json(cameras_json),
        normalization=views.SceneNormalization.from_json(cameras_json["normalization"]),
        config=config,
        provenance=_read_json(directory / "provenance.json"),
    )


def default_cache_dir() -> Path:
    """``$MRI_NERFSTUDIO_CACHE``, else ``$XDG_CACHE_HOME/mri-nerfstudio``, else ``~/.cache/mri-nerfstudio``."""
    if os.environ.get("MRI_NERFSTUDIO_CACHE"):
        return Path(os.environ["MRI_NERFSTUDIO_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mri-nerfstudio"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise MRIInputError(f"cannot read JSON ({error})", path) from error

