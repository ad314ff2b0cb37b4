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

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.lazy_import import lazy_module

sitk = lazy_module("SimpleITK", "to read NRRD / MHA volumes")

MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")
"""BraTS 2021 modality names, in the order used for encoder channels."""


@dataclass
class Volume:
    """One subject: co-gridded modalities, optional label map and brain mask.

    Attributes:
        name: subject identifier (e.g. ``BraTS2021_00000``).
        images: modality name -> float32 array [X, Y, Z] on the canonical RAS grid.
        affine: [4, 4] voxel index -> RAS mm for the canonical grid.
        scanner_affine: [4, 4] affine of the reference modality's file as stored on disk.
        scanner_shape: shape [X', Y', Z'] of the reference modality's file as stored on disk.
        seg: int16 label map [X, Y, Z] (BraTS: 0 background, 1 necrosis, 2 oedema, 4 enhancing).
        mask: bool brain mask [X, Y, Z]; ``None`` means "everything above zero in the reference".
        sources: modality (or ``"seg"``) -> path of the file it was read from.
        reference: name of the modality every other one is aligned to.
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
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"
    tmp = path.with_name(f".{path.name}.tmp{suffix}")
    nib.save(image, tmp)
    tmp.replace(path)
    return path


# --- Loading -----------------------------------------------------------------------------------

NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")
ITK_SUFFIXES: tuple[str, ...] = (".nrrd", ".nhdr", ".mha", ".mhd")
"""File types read with SimpleITK (LPS physical space, converted to RAS on reading)."""

BRATS_LABELS: frozenset[int] = frozenset({0, 1, 2, 4})
"""BraTS 2021 label values: background, necrotic core, oedema, enhancing tumour."""

GRID_TOLERANCE_MM = 1e-3
"""Two grids are the same when their shapes match and their affines agree to this many mm."""

_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])
_READ_ERRORS = (
    OSError,  # includes gzip.BadGzipFile
    EOFError,  # truncated gzip stream
    zlib.error,
    ValueError,
    RuntimeError,  # SimpleITK
    nib.filebasedimages.ImageFileError,
    nib.spatialimages.HeaderDataError,
)


def image_suffix(path: Path) -> str | None:
    """The supported image suffix ``path`` ends with (case-insensitive), or None."""
    name = path.name.lower()
    return next((suffix for suffix in (*NIFTI_SUFFIXES, *ITK_SUFFIXES) if name.endswith(suffix)), None)


def _check_suffix(path: Path) -> str:
    suffix = image_suffix(path)
    if suffix is None:
        expected = ", ".join((*NIFTI_SUFFIXES, *ITK_SUFFIXES))
        raise MRIInputError(f"unknown image file type; expected one of {expected}", path)
    return suffix


def _image_files(folder: Path) -> list[Path]:
    """Supported image files directly inside ``folder``, sorted; hidden (temporary) files are skipped."""
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and image_suffix(p) is not None
    )


def find_subjects(data: Path) -> list[Path]:
    """The subjects under ``data``: a subject folder, a BraTS root of subject folders, or one image file.

    Args:
        data: a BraTS 2021 subject folder (``BraTS2021_XXXXX/BraTS2021_XXXXX_{t1,t1ce,t2,flair,seg}.nii.gz``),
            a folder of such folders (sorted by name), or a single ``.nii``, ``.nii.gz``, ``.nrrd``,
            ``.nhdr``, ``.mha`` or ``.mhd`` file.

    Returns:
        Paths to pass to :func:`load_subject`, one per subject.
    """
    data = Path(data)
    if not data.exists():
        raise MRIInputError(
            "no such file or folder; expected a BraTS subject folder, a BraTS root or an image file", data
        )
    if data.is_file():
        _check_suffix(data)
        return [data]
    entries = [p for p in data.iterdir() if not p.name.startswith(".")]
    if not entries:
        raise MRIInputError("folder is empty; expected BraTS subject folders or NIfTI/NRRD files", data)
    if _image_files(data):
        return [data]
    subjects = sorted(p for p in entries if p.is_dir() and _image_files(p))
    if subjects:
        return subjects
    deeper = next((p for p in data.rglob("*") if p.is_file() and image_suffix(p) is not None), None)
    if deeper is None:
        raise MRIInputError("no NIfTI/NRRD/MHA file anywhere in this folder", data)
    raise MRIInputError(
        f"no subject folders with images directly inside; found {deeper.relative_to(data)}: pass its parent folder",
        data,
    )


def subject_files(folder: Path) -> dict[str, Path]:
    """Map ``t1``, ``t1ce``, ``t2``, ``flair`` and ``seg`` to the BraTS-named files present in ``folder``.

    A file belongs to a modality when its name, less the image suffix, ends with ``_<modality>``
    (``BraTS2021_00000_t1ce.nii.gz`` -> ``t1ce``). Files named otherwise are ignored.
    """
    found: dict[str, Path] = {}
    for path in _image_files(folder):
        stem = path.name[: -len(image_suffix(path))].lower()
        key = next((k for k in (*MODALITIES, "seg") if stem.endswith(f"_{k}")), None)
        if key is None:
            continue
        if key in found:
            raise MRIInputError(f"two files for modality {key!r}: {found[key].name} and {path.name}", folder)
        found[key] = path
    return found


def read_image(path: Path) -> nib.Nifti1Image:
    """Read one image file as it is stored: [X', Y', Z'] float32 data (in memory) and its voxel -> RAS mm affine.

    NIfTI is read with nibabel (sform, else qform). NRRD/MHA/MHD are read with SimpleITK and their
    LPS geometry (direction, spacing, origin) converted exactly to a RAS affine. A 4D image whose
    fourth axis has length 1 is squeezed to 3D; anything else that is not 3D is rejected.
    """
    path = Path(path)
    suffix = _check_suffix(path)
    try:
        if suffix in NIFTI_SUFFIXES:
            image = nib.load(path)
            shape = image.shape
            if len(shape) == 4 and shape[3] == 1:
                image = image.slicer[..., 0]
            _check_3d(image.shape, path)
            data, affine = image.get_fdata(dtype=np.float32), image.affine
        else:
            data, affine = _read_itk(path)
    except MRIInputError:
        raise
    except _READ_ERRORS as error:
        message = f"cannot read image ({type(error).__name__}: {error}); expected a valid file"
        raise MRIInputError(message, path) from error
    return nib.Nifti1Image(data, affine)


def _read_itk(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """[X, Y, Z] float32 data and voxel -> RAS mm affine of a file SimpleITK can read."""
    image = sitk.ReadImage(str(path))
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
    affine[:3, :3] = _LPS_FROM_RAS @ direction * spacing
    affine[:3, 3] = _LPS_FROM_RAS @ np.asarray(image.GetOrigin(), dtype=np.float64)[:3]
    return np.ascontiguousarray(data, dtype=np.float32), affine


def _check_3d(shape: tuple[int, ...], path: Path) -> None:
    if len(shape) != 3 or min(shape) < 2:
        raise MRIInputError(f"image shape {tuple(shape)}: expected a 3D volume (at least 2 voxels per axis)", path)


def _check_values(data: np.ndarray, path: Path, is_seg: bool) -> None:
    """Reject NaN/Inf, all-zero images and label maps with labels outside :data:`BRATS_LABELS`."""
    non_finite = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
    if non_finite:
        raise MRIInputError(f"data has {non_finite} non-finite voxels (NaN/Inf); expected finite values", path)
    if is_seg:
        labels = np.unique(data)
        unexpected = [int(v) if float(v).is_integer() else float(v) for v in labels if v not in BRATS_LABELS]
        if unexpected:
            raise MRIInputError(
                f"seg labels {unexpected[:5]} are not BraTS labels; expected values in {sorted(BRATS_LABELS)}", path
            )
    elif not np.any(data):
        raise MRIInputError("data is all zero; expected an image with signal", path)


def _same_grid(a: nib.Nifti1Image, b: nib.Nifti1Image) -> bool:
    return a.shape == b.shape and np.allclose(a.affine, b.affine, rtol=0.0, atol=GRID_TOLERANCE_MM)


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


def load_subject(path: Path, modalities: Sequence[str] | None = None, reference: str = "t1") -> Volume:
    """Load one subject onto the canonical RAS grid of its reference modality.

    Args:
        path: a BraTS subject folder (files ``*_{t1,t1ce,t2,flair,seg}.nii[.gz]``, NRRD/MHA also accepted)
            or a single image file, which loads as the one modality ``reference`` (name: the file stem).
        modalities: modalities to load, which must include ``reference``; None loads every one present.
        reference: the modality whose grid every other one (and the seg) is put on.

    Returns:
        A :class:`Volume` with float32 images and, whenever a ``*_seg`` file is present, an int16
        seg (labels checked against :data:`BRATS_LABELS`). ``mask`` is None (BraTS images are
        skull-stripped: brain = reference > 0). A modality on another grid (shape or affine differing
        by more than :data:`GRID_TOLERANCE_MM`) is resampled onto the reference grid (trilinear; seg:
        nearest) with a warning naming its file.
    """
    path = Path(path)
    if not path.exists():
        raise MRIInputError("no such file or folder; expected a BraTS subject folder or an image file", path)
    if path.is_file():
        if modalities is not None and list(modalities) != [reference]:
            raise MRIInputError(
                f"a single file loads as the one modality {reference!r}; asked for {list(modalities)}", path
            )
        files = {reference: path}
        name = path.name[: -len(_check_suffix(path))]
    else:
        found = subject_files(path)
        files = _select_modalities(path, found, modalities, reference)
        name = path.name

    reference_image = read_image(files[reference])
    scanner_affine, scanner_shape = reference_image.affine.copy(), tuple(int(s) for s in reference_image.shape)
    grid = nib.as_closest_canonical(reference_image)
    images: dict[str, np.ndarray] = {}
    seg = None
    for key, file in files.items():
        canonical = grid if key == reference else nib.as_closest_canonical(read_image(file))
        data = np.asarray(canonical.dataobj, dtype=np.float32)
        _check_values(data, file, is_seg=key == "seg")
        if not _same_grid(canonical, grid):
            order = 0 if key == "seg" else 1
            warnings.warn(
                f"{file}: grid {canonical.shape} differs from the reference {files[reference].name} grid {grid.shape} "
                f"(or its affine by > {GRID_TOLERANCE_MM} mm); resampled onto it "
                f"({'nearest' if order == 0 else 'trilinear'})",
                stacklevel=2,
            )
            data = resample_to_grid(data, canonical.affine, grid.shape, grid.affine, order=order)
        if key == "seg":
            seg = data.astype(np.int16)
        else:
            images[key] = np.ascontiguousarray(data)
    return Volume(
        name=name,
        images=images,
        affine=grid.affine.copy(),
        scanner_affine=scanner_affine,
        scanner_shape=scanner_shape,  # type: ignore[arg-type]
        seg=seg,
        mask=None,
        sources={key: str(file) for key, file in files.items()},
        reference=reference,
    )


def _select_modalities(
    folder: Path, found: dict[str, Path], modalities: Sequence[str] | None, reference: str
) -> dict[str, Path]:
    """The files to load, in :data:`MODALITIES` order, then the seg when present."""
    present = [m for m in MODALITIES if m in found]
    if reference not in found:
        raise MRIInputError(
            f"reference modality {reference!r} not found; modalities found: {present or 'none'} "
            f"(expected files named *_{reference}.nii.gz)",
            folder,
        )
    if modalities is None:
        wanted = present
    else:
        wanted = list(dict.fromkeys(modalities))
        missing = [m for m in wanted if m not in present]
        if missing:
            raise MRIInputError(f"modalities {missing} not found; modalities found: {present}", folder)
        if reference not in wanted:
            raise MRIInputError(
                f"reference modality {reference!r} must be one of the modalities asked for {wanted}", folder
            )
        wanted = [m for m in MODALITIES if m in wanted]
    files = {m: found[m] for m in wanted}
    if "seg" in found:
        files["seg"] = found["seg"]
    return files


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
        sources={"t1": f"nilearn:MNI152 ICBM 2009a T1 template, skull-stripped, {resolution_mm} mm"},
        reference="t1",
    )
