"""A subject's MRI scans in one canonical frame, and their way back to scanner space.

All arrays of a :class:`Volume` share one voxel grid in canonical RAS orientation (nibabel's
"closest canonical": the array axes point to the subject's Right, Anterior, Superior). ``affine`` maps voxel
indices of these arrays to RAS millimetres; ``scanner_affine`` and ``scanner_shape`` describe the
file the reference modality came from, so any array on the canonical grid can be written back in
the exact orientation of the input (:meth:`Volume.to_scanner_space`).
"""

from __future__ import annotations

import dataclasses
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from mri_nerfstudio import dicom, labels
from mri_nerfstudio.atomic_write import write_atomically
from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.lazy_import import lazy_module
from mri_nerfstudio.subject_files import (
    MODALITIES,
    NIBABEL_SUFFIXES,
    check_suffix,
    file_stem,
    find_subjects,
    holds_a_dicom_series,
    parse_modality_globs,
    subject_files,
    subject_name,
)

sitk = lazy_module("SimpleITK", "to read NRRD / MHA volumes")


@dataclass
class Volume:
    """One subject: co-gridded modalities, optional label map and brain mask.

    Attributes:
        name: subject identifier (e.g. ``BraTS2021_00000``).
        images: modality name -> float32 array [X, Y, Z] on the canonical RAS grid.
        affine: [4, 4] voxel index -> RAS mm for the canonical grid.
        scanner_affine: [4, 4] affine of the reference modality's file as stored on disk.
        scanner_shape: shape [X', Y', Z'] of the reference modality's file as stored on disk.
        seg: int16 label map [X, Y, Z] in the internal labels of :data:`mri_nerfstudio.labels.INTERNAL_LABELS`
            (0 background, 1 necrotic core, 2 oedema, 3 non-enhancing, 4 enhancing), whatever the file's convention.
        mask: bool brain mask [X, Y, Z]; ``None`` means "everything above zero in the reference".
        sources: modality (or ``"seg"``, ``"mask"``) -> path of the file (or DICOM folder) it was read from.
        reference: name of the modality every other one is aligned to (the one actually used).
        loading: what :func:`load_subject` found and decided, JSON-ready (see there); empty otherwise.
    """

    name: str
    images: dict[str, np.ndarray]
    affine: np.ndarray
    scanner_affine: np.ndarray
    scanner_shape: tuple[int, int, int]
    seg: np.ndarray | None = None
    mask: np.ndarray | None = None
    sources: dict[str, str] = field(default_factory=dict)
    reference: str = "t1"
    loading: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Grid shape [X, Y, Z] shared by every array."""
        return tuple(next(iter(self.images.values())).shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size along X, Y, Z in mm."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def modalities(self) -> list[str]:
        return list(self.images)

    def brain_mask(self) -> np.ndarray:
        """The brain mask, or voxels > 0 in the reference modality when none was given."""
        if self.mask is not None:
            return self.mask
        return self.images[self.reference] > 0

    def replace(self, **changes) -> "Volume":
        """A copy with some fields replaced (arrays are shared, not copied)."""
        return dataclasses.replace(self, **changes)

    def to_scanner_space(self, array: np.ndarray) -> np.ndarray:
        """Reorient an array on the canonical grid [X, Y, Z] to the input file's axis order.

        Exact (flips and axis permutations only); the result pairs with ``scanner_affine`` when the
        canonical grid has the scanner grid's shape, which holds until a step resamples the grid.
        """
        target = nib.orientations.io_orientation(self.scanner_affine)
        ras = nib.orientations.axcodes2ornt(("R", "A", "S"))
        return nib.orientations.apply_orientation(array, nib.orientations.ornt_transform(ras, target))

    def scanner_space_affine(self) -> np.ndarray:
        """Affine of :meth:`to_scanner_space` output for the *current* grid (resampled or not)."""
        target = nib.orientations.io_orientation(self.scanner_affine)
        ras = nib.orientations.axcodes2ornt(("R", "A", "S"))
        transform = nib.orientations.ornt_transform(ras, target)
        return self.affine @ nib.orientations.inv_ornt_aff(transform, self.shape)


def save_nifti(array: np.ndarray, affine: np.ndarray, path: str | Path, *, description: str = "") -> Path:
    """Write ``array`` with ``affine`` as NIfTI atomically (temporary name, then rename).

    The qform and sform both carry the affine (code 1, scanner) so ITK-SNAP, 3D Slicer and nibabel
    agree on the orientation. ``description`` (at most 80 ASCII characters) goes in the header's
    ``descrip`` field, which viewers show.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64))
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header["descrip"] = description.encode("ascii")[:80]
    write_atomically(path, lambda tmp: nib.save(image, tmp))
    return path


# --- Loading -----------------------------------------------------------------------------------

GRID_TOLERANCE_MM = 1e-3
"""Two grids are the same when their shapes match and their affines agree to this many mm."""

MASK_VALUE_TOLERANCE = 1e-3
"""A brain-mask voxel must be 0 or 1 to within this."""

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
"""[4, 4] RAS mm -> LPS mm (its own inverse): ITK / SimpleITK's physical frame has X and Y negated."""

_READ_ERRORS = (
    OSError,  # includes gzip.BadGzipFile
    EOFError,  # truncated gzip stream
    zlib.error,
    ValueError,
    RuntimeError,  # SimpleITK
    nib.filebasedimages.ImageFileError,
    nib.spatialimages.HeaderDataError,
)



def read_image(path: Path) -> nib.Nifti1Image:
    """Read one image file as it is stored: [X', Y', Z'] float32 data (in memory) and its voxel -> RAS mm affine.

    NIfTI is read with nibabel (sform, else qform), FreeSurfer MGH / MGZ too (its vox2ras). NRRD/MHA/MHD are
    read with SimpleITK and their LPS geometry (direction, spacing, origin) converted exactly to a RAS affine.
    A 4D image whose fourth axis has length 1 is squeezed to 3D; anything else that is not 3D is rejected.
    """
    path = Path(path)
    suffix = check_suffix(path)
    try:
        if suffix in NIBABEL_SUFFIXES:
            image = nib.load(path)
            shape = image.shape
            if len(shape) == 4 and shape[3] == 1:
                image = image.slicer[..., 0]
            _check_3d(image.shape, path)
            data, affine = image.get_fdata(dtype=np.float32), image.affine
        else:
            data, affine = _itk_to_ras(sitk.ReadImage(str(path)), path)
    except MRIInputError:
        raise
    except _READ_ERRORS as error:
        message = f"cannot read image ({type(error).__name__}: {error}); expected a valid file"
        raise MRIInputError(message, path) from error
    _check_affine(affine, path)
    return nib.Nifti1Image(data, affine)


def read_dicom_series(folder: Path, series_uid: str | None = None) -> tuple[nib.Nifti1Image, dicom.DicomSeries]:
    """The DICOM series of ``folder`` (see :func:`mri_nerfstudio.dicom.select_series`) as stored, like
    :func:`read_image`: [X', Y', Z'] float32 data and its voxel -> RAS mm affine; and which series it is."""
    folder = Path(folder)
    series = dicom.select_series(folder, series_uid)
    try:
        data, affine = _itk_to_ras(dicom.read_series(series, folder), folder)
    except MRIInputError:
        raise
    except _READ_ERRORS as error:
        message = f"cannot read DICOM series {series.uid} ({type(error).__name__}: {error}); expected a valid series"
        raise MRIInputError(message, folder) from error
    _check_affine(affine, folder)
    return nib.Nifti1Image(data, affine), series


def _itk_to_ras(image: "sitk.Image", path: Path) -> tuple[np.ndarray, np.ndarray]:
    """[X, Y, Z] float32 data and voxel -> RAS mm affine of a SimpleITK image read from ``path``."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise MRIInputError(
            f"image has {image.GetNumberOfComponentsPerPixel()} components per voxel; expected a scalar image", path
        )
    data = sitk.GetArrayFromImage(image).transpose()  # ITK [..., z, y, x] -> [x, y, z, ...]
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    _check_3d(data.shape, path)
    dimension = image.GetDimension()
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dimension, dimension)[:3, :3]
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)[:3]
    affine = np.eye(4)
    affine[:3, :3] = LPS_FROM_RAS[:3, :3] @ direction * spacing
    affine[:3, 3] = LPS_FROM_RAS[:3, :3] @ np.asarray(image.GetOrigin(), dtype=np.float64)[:3]
    return np.ascontiguousarray(data, dtype=np.float32), affine


def _check_affine(affine: np.ndarray, path: Path) -> None:
    """A voxel -> mm affine must be finite and invertible (an all-zero sform, a zero voxel size are not)."""
    linear = np.asarray(affine, dtype=np.float64)[:3, :3]
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(linear)) < 1e-9:
        raise MRIInputError(
            f"voxel-to-world affine (sform / qform) {np.round(linear, 4).tolist()} is singular or not finite; "
            "expected non-zero voxel sizes along three independent axes (fix the header, e.g. with "
            "nibabel's set_sform)",
            path,
        )


def _check_3d(shape: tuple[int, ...], path: Path) -> None:
    if len(shape) == 4 and shape[3] > 1:
        raise MRIInputError(
            f"image shape {tuple(shape)}: {shape[3]} volumes in one file (modalities stacked as channels, as in the "
            "Medical Segmentation Decathlon, or a time series); expected a 3D volume, one file per modality "
            "(split it, e.g. with nibabel's four_to_three or fslsplit)",
            path,
        )
    if len(shape) != 3 or min(shape) < 2:
        raise MRIInputError(f"image shape {tuple(shape)}: expected a 3D volume (at least 2 voxels per axis)", path)


def _check_finite(data: np.ndarray, path: Path) -> None:
    non_finite = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
    if non_finite:
        raise MRIInputError(f"data has {non_finite} non-finite voxels (NaN/Inf); expected finite values", path)


def _nan_as_background(data: np.ndarray, path: Path, notes: list[str]) -> np.ndarray:
    """``data`` with its NaN voxels set to 0, the background value, noted in ``notes``.

    SPM and other tools write NaN where a resampled image has no data (outside the field of view); read as
    0, such an image is the one those tools display. Infinite values are still refused: they are damage.
    """
    nan = np.isnan(data)
    if nan.all():
        raise MRIInputError("data is all NaN; expected an image with signal", path)
    if nan.any():
        data = np.where(nan, np.float32(0.0), data)
        notes.append(f"{path.name}: {int(nan.sum())} NaN voxels ({100.0 * nan.mean():.1f} %) read as 0 (background)")
    _check_finite(data, path)
    return data


def _same_grid(a: nib.Nifti1Image, b: nib.Nifti1Image) -> bool:
    return a.shape == b.shape and np.allclose(a.affine, b.affine, rtol=0.0, atol=GRID_TOLERANCE_MM)


def _describe_grid(image: nib.Nifti1Image) -> str:
    return f"{tuple(int(s) for s in image.shape)} with affine {np.round(image.affine[:3], 3).tolist()}"


def resample_to_grid(
    data: np.ndarray, affine: np.ndarray, shape: tuple[int, int, int], target_affine: np.ndarray, order: int
) -> np.ndarray:
    """Resample ``data`` ([X, Y, Z] with voxel -> mm ``affine``) onto the grid ``(shape, target_affine)``.

    ``order`` 1 is trilinear (images), 0 nearest (label maps); outside the source is 0.
    """
    source_from_target = np.linalg.inv(affine) @ target_affine
    return ndimage.affine_transform(
        data, source_from_target, output_shape=shape, order=order, mode="constant", cval=0.0
    )


def load_subject(
    path: Path,
    modalities: Sequence[str] | None = None,
    reference: str = "t1",
    *,
    modality_globs: Sequence[str] = (),
    series: str | None = None,
    label_convention: str = "auto",
    mask: Path | None = None,
    use_mask_files: bool = True,
) -> Volume:
    """Load one subject onto the canonical RAS grid of its reference modality.

    Args:
        path: a subject folder (modality, seg and brain-mask files, see :func:`subject_files`; NIfTI, NRRD,
            MHA or MHD), a folder holding one DICOM series, or a single image file. A DICOM series or a
            single file loads as the one modality ``reference``, named after the folder / the file stem.
        modalities: modalities to load (a subset of :data:`MODALITIES`); None loads every one present.
        reference: the modality whose grid every other one (and the seg and mask) is put on. When a folder
            lacks it, the first present of ``t1, t1ce, t2, flair`` (among ``modalities``) is used, with a note.
        modality_globs: ``NAME=GLOB`` entries naming a role's file where the names do not (see
            :func:`parse_modality_globs`); folders of image files only (ignored, with a note, for DICOM).
        series: SeriesInstanceUID to read from a DICOM folder that holds several series.
        label_convention: the seg's label values: ``auto`` (from the names, else the values), ``brats2021``,
            ``brats2023`` or ``brats2013`` (see :mod:`mri_nerfstudio.labels`).
        mask: a brain-mask file on the reference scan's grid; it wins over mask files in the folder.
        use_mask_files: take a ``*brainmask*`` / ``*brain_mask*`` file of the folder as the brain mask.

    Returns:
        A :class:`Volume` with float32 images, an int16 seg in internal labels whenever a seg file is
        present, and a bool ``mask`` when a mask file was given or found (else None: brain = reference > 0).
        NaN voxels of a modality (outside the field of view of a resampled image) are read as 0, with a note.
        A modality or seg on another grid (shape or affine differing by more than
        :data:`GRID_TOLERANCE_MM`) is resampled onto the reference grid (trilinear; seg: nearest) with a
        warning naming its file; a mask on another grid is refused. ``loading`` holds (JSON-ready):

        - ``source``: ``path``; ``format``: ``"folder"``, ``"file"`` or ``"dicom"``;
        - ``files``: role (modalities, ``seg``, ``mask``) -> file (the folder, for a DICOM series);
        - ``reference``: ``{"requested", "used", "note"}`` (note None unless it fell back);
        - ``label_convention``: None without a seg, else ``{"convention", "from"`` (``"naming"``, ``"values"``
          or ``"argument"``), ``"description", "mapping"`` (file value -> internal value, keys as strings)};
        - ``mask``: None, or ``{"file", "from"}`` (``"argument"``, ``"glob"`` or ``"file name"``);
        - ``dicom_series``: None, or ``{"uid", "description", "slices"}``;
        - ``notes``: human-readable one-line notes (fallbacks, resampling, unused settings).
    """
    path = Path(path)
    if not path.exists():
        raise MRIInputError(
            "no such file or folder; expected a subject folder, a DICOM series folder or an image file", path
        )
    labels.check_convention_argument(label_convention)
    globs = parse_modality_globs(modality_globs)
    if mask is not None and not Path(mask).is_file():
        raise MRIInputError("mask: no such file; expected a brain-mask image on the reference scan's grid", mask)
    notes: list[str] = []
    layout = _locate_files(path, modalities, reference, globs, series, use_mask_files, notes)
    used, reference_file = layout.reference, layout.files[layout.reference]
    if layout.format == "dicom":
        reference_image, dicom_series = read_dicom_series(path, series)
    else:
        reference_image, dicom_series = read_image(reference_file), None

    scanner_affine, scanner_shape = reference_image.affine.copy(), tuple(int(s) for s in reference_image.shape)
    grid = nib.as_closest_canonical(reference_image)
    images: dict[str, np.ndarray] = {}
    seg, convention_record = None, None
    for role, file in layout.files.items():
        canonical = grid if role == used else nib.as_closest_canonical(read_image(file))
        data = np.asarray(canonical.dataobj, dtype=np.float32)
        if role == "seg":
            _check_finite(data, file)
            hints = [layout.name, *(file_stem(f) for f in layout.files.values())]
            data, convention_record = _seg_to_internal_labels(data, file, label_convention, hints, notes)
        else:
            data = _nan_as_background(data, file, notes)
            if not np.any(data):
                raise MRIInputError("data is all zero; expected an image with signal", file)
        data = _onto_grid(data, canonical, grid, file, reference_file, notes, order=0 if role == "seg" else 1)
        if role == "seg":
            seg = data.astype(np.int16)
        else:
            images[role] = np.ascontiguousarray(data)

    mask_file, mask_from = (Path(mask), "argument") if mask is not None else (layout.mask, layout.mask_from)
    if mask is not None and layout.mask is not None:
        notes.append(f"mask {mask} given; {layout.mask.name} in the folder not used")
    brain = None
    if mask_file is not None:
        brain = _load_mask(mask_file, reference_image, grid, reference_file, notes)

    sources = {role: str(file) for role, file in layout.files.items()}
    if mask_file is not None:
        sources["mask"] = str(mask_file)
    loading = {
        "source": str(path),
        "format": layout.format,
        "files": dict(sources),
        "reference": {"requested": reference, "used": used, "note": layout.reference_note},
        "label_convention": convention_record,
        "mask": None if mask_file is None else {"file": str(mask_file), "from": mask_from},
        "dicom_series": None if dicom_series is None else dicom_series.to_json(),
        "notes": notes,
    }
    return Volume(
        name=layout.name,
        images=images,
        affine=grid.affine.copy(),
        scanner_affine=scanner_affine,
        scanner_shape=scanner_shape,  # type: ignore[arg-type]
        seg=seg,
        mask=brain,
        sources=sources,
        reference=used,
        loading=loading,
    )


@dataclass(frozen=True)
class _SubjectLayout:
    """Where a subject's data is: what :func:`load_subject` reads, before reading it.

    ``files`` maps role -> file (the folder for a DICOM series), modalities in :data:`MODALITIES` order,
    then the seg; ``reference`` is the modality used (``reference_note`` says why when not the one asked for).
    """

    name: str
    format: str
    files: dict[str, Path]
    reference: str
    reference_note: str | None = None
    mask: Path | None = None
    mask_from: str | None = None


def _locate_files(
    path: Path,
    modalities: Sequence[str] | None,
    reference: str,
    globs: dict[str, str],
    series: str | None,
    use_mask_files: bool,
    notes: list[str],
) -> _SubjectLayout:
    """The files :func:`load_subject` reads for ``path`` (its arguments of the same names); notes appended."""
    if path.is_file():
        if globs or series is not None:
            raise MRIInputError("modality_globs and series apply to subject folders; expected a folder", path)
        _check_single_modality(path, modalities, reference)
        return _SubjectLayout(subject_name(path), "file", {reference: path}, reference)
    if holds_a_dicom_series(path):
        _check_single_modality(path, modalities, reference)
        unused = [f"{key}={pattern}" for key, pattern in globs.items() if key != "mask"]
        if unused:
            notes.append(f"--modality {' '.join(unused)} not used: a DICOM folder is one series, loaded as {reference}")
        found = subject_files(path, {key: p for key, p in globs.items() if key == "mask"}, use_mask_files)
        return _SubjectLayout(
            subject_name(path), "dicom", {reference: path}, reference, None, found.mask, found.mask_from
        )
    if series is not None:
        raise MRIInputError(
            f"series {series!r}: this folder holds image files, not a DICOM series; expected --series only for a "
            "DICOM folder",
            path,
        )
    found = subject_files(path, globs, use_mask_files)
    files, used = _select_modalities(path, found.roles, modalities, reference)
    note = None if used == reference else f"{reference} not found; reference falls back to {used}"
    if note:
        notes.append(note)
    return _SubjectLayout(subject_name(path), "folder", files, used, note, found.mask, found.mask_from)


def _check_single_modality(path: Path, modalities: Sequence[str] | None, reference: str) -> None:
    if modalities is not None and list(modalities) != [reference]:
        raise MRIInputError(
            f"a single file or DICOM series loads as the one modality {reference!r}; asked for {list(modalities)}",
            path,
        )


def _select_modalities(
    folder: Path, found: dict[str, Path], modalities: Sequence[str] | None, reference: str
) -> tuple[dict[str, Path], str]:
    """The files to load (in :data:`MODALITIES` order, then the seg when present) and the reference used."""
    if reference not in MODALITIES:
        raise MRIInputError(f"reference {reference!r}: expected one of {list(MODALITIES)} for a subject folder",
                            folder)
    present = [m for m in MODALITIES if m in found]
    if not present:
        raise MRIInputError(
            f"no modality image found (roles {list(MODALITIES)}); expected files named like *_t1.nii.gz, "
            "*-t1n.nii.gz, *_T1w.nii.gz or T1.nii.gz, or --modality NAME=GLOB",
            folder,
        )
    if modalities is None:
        wanted = present
    else:
        wanted = list(dict.fromkeys(modalities))
        missing = [m for m in wanted if m not in present]
        if missing:
            raise MRIInputError(f"modalities {missing} not found; modalities found: {present}", folder)
        if reference in present and reference not in wanted:
            raise MRIInputError(
                f"reference modality {reference!r} must be one of the modalities asked for {wanted}", folder
            )
        wanted = [m for m in MODALITIES if m in wanted]
    used = reference if reference in present else wanted[0]
    files = {m: found[m] for m in wanted}
    if "seg" in found:
        files["seg"] = found["seg"]
    return files, used


def _onto_grid(
    data: np.ndarray,
    image: nib.Nifti1Image,
    grid: nib.Nifti1Image,
    file: Path,
    reference_file: Path,
    notes: list[str],
    order: int,
) -> np.ndarray:
    """``data`` (of canonical ``image``) on ``grid``: as is when the grids agree, else resampled with a warning."""
    if _same_grid(image, grid):
        return data
    message = (
        f"{file}: grid {image.shape} differs from the reference {reference_file.name} grid {grid.shape} "
        f"(or its affine by > {GRID_TOLERANCE_MM} mm); resampled onto it ({'nearest' if order == 0 else 'trilinear'})"
    )
    warnings.warn(message, stacklevel=3)
    notes.append(message)
    return resample_to_grid(data, image.affine, grid.shape, grid.affine, order=order)


def _seg_to_internal_labels(
    data: np.ndarray, file: Path, label_convention: str, names: list[str], notes: list[str]
) -> tuple[np.ndarray, dict]:
    """The seg's values mapped to internal labels (float32 [X, Y, Z]) and the record of the convention used."""
    convention, decided_from, convention_notes = labels.choose_convention(
        label_convention, names, np.unique(data), file
    )
    notes.extend(convention_notes)
    internal = labels.to_internal_labels(data, convention, file, decided_from)
    table = labels.CONVENTIONS[convention]
    record = {
        "convention": convention,
        "from": decided_from,
        "description": table.description,
        "mapping": {str(value): internal_value for value, internal_value in table.to_internal.items()},
    }
    return internal.astype(np.float32), record


def _load_mask(
    file: Path,
    reference_image: nib.Nifti1Image,
    grid: nib.Nifti1Image,
    reference_file: Path,
    notes: list[str],
) -> np.ndarray:
    """The brain mask of ``file`` as bool [X, Y, Z] on ``grid``.

    The mask must already be on the reference scan's grid (a mask on another grid is most often the wrong
    file, so it is refused rather than resampled).
    """
    stored = read_image(file)
    canonical = nib.as_closest_canonical(stored)
    data = np.asarray(canonical.dataobj, dtype=np.float32)
    _check_finite(data, file)
    not_binary = (np.abs(data) > MASK_VALUE_TOLERANCE) & (np.abs(data - 1.0) > MASK_VALUE_TOLERANCE)
    if not_binary.any():
        examples = [float(v) for v in np.unique(data[not_binary])[:5]]
        raise MRIInputError(
            f"mask values {examples} are not 0 or 1 (within {MASK_VALUE_TOLERANCE}); expected a binary brain mask "
            "(a skull-stripped image such as FreeSurfer's brainmask.mgz is not one: --no-mask-files ignores the "
            "folder's mask files)",
            file,
        )
    if not _same_grid(canonical, grid):
        raise MRIInputError(
            f"mask grid {_describe_grid(stored)} differs from the grid {_describe_grid(reference_image)} of the "
            f"reference {reference_file} (by more than {GRID_TOLERANCE_MM} mm); expected a mask on the reference grid",
            file,
        )
    brain = _onto_grid(data, canonical, grid, file, reference_file, notes, order=0) > 0.5
    if not brain.any():
        raise MRIInputError("mask is empty; expected brain voxels", file)
    return brain


def load_subjects(data: Path, **kwargs) -> list[Volume]:
    """Every subject under ``data`` (see :func:`find_subjects`), loaded with :func:`load_subject` ``(**kwargs)``."""
    return [load_subject(path, **kwargs) for path in find_subjects(data)]


def load_default_subject(resolution_mm: int = 2) -> Volume:
    """The ICBM 2009a MNI152 T1 template shipped inside nilearn (no download), skull-stripped.

    Args:
        resolution_mm: isotropic voxel size; 1 gives the native 197 x 233 x 189 grid, 2 gives 99 x 117 x 95.

    Returns:
        A :class:`Volume` named ``MNI152`` with one modality ``t1`` (values in [0, 1], 0 outside the
        brain) and ``mask`` = nilearn's MNI152 brain mask (template > 0.2).
    """
    if isinstance(resolution_mm, bool) or not isinstance(resolution_mm, int) or resolution_mm < 1:
        raise MRIInputError(f"resolution_mm: expected a positive integer (mm), got {resolution_mm!r}")
    # nilearn takes seconds to import and only this function needs it.
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_template

    template = load_mni152_template(resolution=resolution_mm)
    mask_image = load_mni152_brain_mask(resolution=resolution_mm)
    canonical = nib.as_closest_canonical(template)
    mask = np.asarray(nib.as_closest_canonical(mask_image).dataobj) > 0
    t1 = np.where(mask, np.asarray(canonical.dataobj, dtype=np.float32), np.float32(0.0))
    return Volume(
        name="MNI152",
        images={"t1": t1},
        affine=canonical.affine.copy(),
        scanner_affine=template.affine.copy(),
        scanner_shape=tuple(int(s) for s in template.shape),  # type: ignore[arg-type]
        mask=mask,
        sources={
            "t1": f"nilearn:MNI152 ICBM 2009a T1 template, skull-stripped, {resolution_mm} mm",
            "mask": f"nilearn:MNI152 brain mask, {resolution_mm} mm",
        },
        reference="t1",
    )
