"""Which files make a subject, and what each one holds.

A subject is a folder of image files (NIfTI, FreeSurfer MGZ, NRRD, MHA / MHD), a folder holding one DICOM
series, or a single image file. Inside a folder, a file's role (a modality, the tumour label map ``seg``, or the brain
mask) comes from its name (BraTS 2021, BraTS 2023 and later, BIDS, or plain names; case-insensitive), or from
a ``NAME=GLOB`` entry. A BIDS dataset's subjects are its ``anat`` folders. :func:`input_files` lists every
file whose bytes define a subject (a cache key's inputs). Reading the files is :mod:`mri_nerfstudio.volume`'s
job; nothing here reads voxels.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mri_nerfstudio import dicom
from mri_nerfstudio.errors import MRIInputError

MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")
"""Modality names (BraTS 2021's), in the order used for encoder channels and for the reference fallback."""

NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")
NIBABEL_SUFFIXES: tuple[str, ...] = (*NIFTI_SUFFIXES, ".mgz", ".mgh")
"""File types read with nibabel: NIfTI, and FreeSurfer's MGH / MGZ (``T1.mgz``, ``orig.mgz``)."""
ITK_SUFFIXES: tuple[str, ...] = (".nrrd", ".nhdr", ".mha", ".mhd")
"""File types read with SimpleITK (LPS physical space, converted to RAS on reading)."""
IMAGE_SUFFIXES: tuple[str, ...] = (*NIBABEL_SUFFIXES, *ITK_SUFFIXES)

ROLES: tuple[str, ...] = (*MODALITIES, "seg")
"""What an image file of a subject folder can be: a modality or the tumour label map."""

GLOB_NAMES: tuple[str, ...] = (*ROLES, "mask")
"""NAME of a ``modality_globs`` entry ``NAME=GLOB`` (CLI ``--modality NAME=GLOB``)."""

ROLE_OF_NAME: dict[str, str] = {
    **{role: role for role in ROLES},  # BraTS 2021 suffixes and plain names (T1.nii.gz)
    "t1n": "t1",  # BraTS 2023 on
    "t1c": "t1ce",
    "t2w": "t2",
    "t2f": "flair",
    "t1w": "t1",  # BIDS suffixes (T2w and FLAIR are covered above)
}
"""Last token of a file stem, lower case, tokens split at ``-`` and ``_`` -> role: ``BraTS2021_00000_t1ce``,
``BraTS-GLI-00000-000-t1c`` and ``T1CE`` are all t1ce, while ``*_t1ce`` is never t1 nor ``*-t2f`` t2.
A BIDS ``T1w`` with a contrast-agent entity (``sub-01_ce-gadolinium_T1w``) is t1ce: see :func:`role_of_name`."""

MASK_NAME = re.compile(r"brain_?mask", re.IGNORECASE)
"""A file whose name contains ``brainmask`` or ``brain_mask`` is a brain mask, never a modality image."""

BIDS_ANAT_FOLDERS: tuple[str, ...] = ("anat", "ses-*/anat", "sub-*/anat", "sub-*/ses-*/anat")
"""Where a BIDS dataset, subject or session folder keeps a subject's anatomical images (globs)."""


def image_suffix(path: Path) -> str | None:
    """The supported image suffix ``path`` ends with (case-insensitive), or None."""
    name = path.name.lower()
    return next((suffix for suffix in IMAGE_SUFFIXES if name.endswith(suffix)), None)


def check_suffix(path: Path) -> str:
    suffix = image_suffix(path)
    if suffix is None:
        expected = ", ".join(IMAGE_SUFFIXES)
        raise MRIInputError(f"unknown image file type; expected one of {expected}", path)
    return suffix


def file_stem(path: Path) -> str:
    """The file name less its image suffix (the whole name for a folder or another file)."""
    suffix = image_suffix(path)
    return path.name[: -len(suffix)] if suffix else path.name


def role_of_name(path: Path) -> str | None:
    """The role (:data:`ROLES`) that ``path``'s file name gives away, or None (see :data:`ROLE_OF_NAME`)."""
    stem = file_stem(path).lower()
    role = ROLE_OF_NAME.get(re.split(r"[-_]", stem)[-1])
    if role == "t1" and any(entity.startswith("ce-") for entity in stem.split("_")[:-1]):
        return "t1ce"
    return role


def subject_name(source: Path) -> str:
    """The name subject ``source`` goes by: a file's stem, a folder's name; for a BIDS ``anat`` folder, its
    subject and session (``sub-01_ses-2``), since every BIDS subject keeps its images in a folder named ``anat``."""
    source = Path(source)
    if not source.is_dir():
        return file_stem(source)
    if source.name == "anat":
        entities = [p.name for p in (source.parent.parent, source.parent) if p.name.startswith(("sub-", "ses-"))]
        if entities:
            return "_".join(entities)
    return source.name


def _visible_files(folder: Path) -> list[Path]:
    """Files directly inside ``folder``, sorted; hidden (temporary) files are skipped."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    """Supported image files directly inside ``folder``, sorted."""
    return [p for p in _visible_files(folder) if image_suffix(p) is not None]


def _is_subject_folder(folder: Path) -> bool:
    return bool(_image_files(folder)) or dicom.has_dicom_files(folder, IMAGE_SUFFIXES)


def holds_a_dicom_series(folder: Path) -> bool:
    """DICOM files and no image file other than brain masks: the folder is one DICOM series (plus a mask)."""
    images = [p for p in _image_files(folder) if not MASK_NAME.search(p.name)]
    return not images and dicom.has_dicom_files(folder, IMAGE_SUFFIXES)


def find_subjects(data: Path) -> list[Path]:
    """The subjects under ``data``: a subject folder, a root of subject folders, or one image file.

    Args:
        data: a subject folder (image files such as ``BraTS2021_XXXXX_{t1,t1ce,t2,flair,seg}.nii.gz``,
            ``BraTS-GLI-XXXXX-XXX-{t1n,t1c,t2w,t2f,seg}.nii.gz``, ``sub-XX_T1w.nii.gz`` or ``T1.nii.gz``, or the
            files of one DICOM series), a folder of such folders (sorted by name), a BIDS dataset, subject or
            session folder (its ``[sub-*/][ses-*/]anat`` folders, sorted), or a single ``.nii``, ``.nii.gz``,
            ``.mgz``, ``.mgh``, ``.nrrd``, ``.nhdr``, ``.mha`` or ``.mhd`` file.

    Returns:
        Paths to pass to :func:`load_subject`, one per subject.
    """
    data = Path(data)
    if not data.exists():
        raise MRIInputError(
            "no such file or folder; expected a subject folder, a root of subject folders or an image file", data
        )
    if data.is_file():
        if dicom.is_dicom_file(data, IMAGE_SUFFIXES):
            raise MRIInputError("a single DICOM file; expected the folder that holds its series", data)
        check_suffix(data)
        return [data]
    entries = [p for p in data.iterdir() if not p.name.startswith(".")]
    if not entries:
        raise MRIInputError("folder is empty; expected subject folders, NIfTI/NRRD files or a DICOM series", data)
    if _is_subject_folder(data):
        return [data]
    subjects = sorted(p for p in entries if p.is_dir() and _is_subject_folder(p))
    if subjects:
        return subjects
    bids = sorted({p for pattern in BIDS_ANAT_FOLDERS for p in data.glob(pattern) if _is_subject_folder(p)})
    if bids:
        return bids
    deeper = next(
        (p for p in data.rglob("*") if p.is_file() and (image_suffix(p) or dicom.is_dicom_file(p, IMAGE_SUFFIXES))),
        None,
    )
    if deeper is None:
        raise MRIInputError("no NIfTI/NRRD/MHA/DICOM file anywhere in this folder", data)
    raise MRIInputError(
        f"no subject folders with images directly inside; found {deeper.relative_to(data)}: pass its parent folder",
        data,
    )


def select_subjects(
    names: Sequence[str], selection: Sequence[str], setting: str, data: Path | None = None
) -> list[int]:
    """Indices into ``names`` that ``selection`` picks, in ``names`` order: all when it is empty; one number N:
    the first N by name; else the subjects of those names.

    Raises:
        MRIInputError: N outside 1..len(names), or a name not in ``names`` (naming the option ``setting`` and
            the ``data`` the names come from).
    """
    if not selection:
        return list(range(len(names)))
    if len(selection) == 1 and str(selection[0]).isdigit():
        count = int(selection[0])
        if not 1 <= count <= len(names):
            raise MRIInputError(
                f"{setting}: {count} requested, expected 1..{len(names)} (the data has {len(names)})", data
            )
        return sorted(sorted(range(len(names)), key=lambda i: names[i])[:count])
    missing = [name for name in selection if name not in names]
    if missing:
        shown = ", ".join(sorted(names)[:10]) + (f", ... ({len(names)} in all)" if len(names) > 10 else "")
        raise MRIInputError(f"{setting}: {missing} not in the data; its subjects are {shown}", data)
    return [i for i, name in enumerate(names) if name in selection]


@dataclass(frozen=True)
class SubjectFiles:
    """The files of one subject folder, by what they hold.

    Attributes:
        roles: role (t1, t1ce, t2, flair, seg) -> image file, for the roles present, in :data:`ROLES` order.
        mask: the brain-mask file, or None.
        mask_from: how the mask was found: ``"glob"`` (a ``mask=GLOB`` entry) or ``"file name"``.
    """

    roles: dict[str, Path]
    mask: Path | None = None
    mask_from: str | None = None


def parse_modality_globs(entries: Sequence[str]) -> dict[str, str]:
    """``NAME=GLOB`` entries -> {NAME: GLOB}; NAME one of :data:`GLOB_NAMES` (case-insensitive).

    Raises:
        MRIInputError: an entry without ``=``, with an unknown or repeated NAME, an empty GLOB, or a ``/``
            in GLOB (it matches file names directly inside the subject folder).
    """
    if isinstance(entries, str):
        entries = (entries,)
    expected = f"expected NAME=GLOB with NAME one of {', '.join(GLOB_NAMES)}, e.g. 't1=*MPRAGE*.nii.gz'"
    globs: dict[str, str] = {}
    for entry in entries:
        name, separator, pattern = str(entry).partition("=")
        name = name.strip().lower()
        if not separator or name not in GLOB_NAMES or not pattern.strip():
            raise MRIInputError(f"--modality {entry!r}: {expected}")
        if name in globs:
            raise MRIInputError(f"--modality {entry!r}: {name} is already {name}={globs[name]}; {expected}, once each")
        if "/" in pattern:
            raise MRIInputError(
                f"--modality {entry!r}: GLOB matches file names directly inside the subject folder; expected no '/'"
            )
        globs[name] = pattern.strip()
    return globs


def subject_files(
    folder: Path, modality_globs: dict[str, str] | None = None, use_mask_files: bool = True
) -> SubjectFiles:
    """Which file of ``folder`` is which modality, the seg and the brain mask.

    A ``modality_globs`` entry (see :func:`parse_modality_globs`) names its role's file: its GLOB must match
    exactly one file name directly inside ``folder`` (``fnmatch``, case-sensitive). Roles without a glob come
    from the names (case-insensitive): the last ``-``/``_`` token of the stem, see :data:`ROLE_OF_NAME`.
    Files named like a brain mask (:data:`MASK_NAME`) are never modality images; one of them is the mask
    when ``use_mask_files`` and no ``mask`` glob is given.

    Raises:
        MRIInputError: a glob matching no file or several, two files for one role, several mask files.
    """
    files = _visible_files(folder)
    claimed: dict[str, Path] = {}
    for name, pattern in (modality_globs or {}).items():
        matches = [p for p in files if fnmatch.fnmatchcase(p.name, pattern)]
        if not matches:
            raise MRIInputError(
                f"--modality {name}={pattern} matches no file name in this folder (fnmatch, case-sensitive); "
                "expected exactly one",
                folder,
            )
        if len(matches) > 1:
            raise MRIInputError(
                f"--modality {name}={pattern} matches {len(matches)} files ({', '.join(p.name for p in matches)}); "
                "expected exactly one",
                folder,
            )
        twice = next((other for other, path in claimed.items() if path == matches[0]), None)
        if twice is not None:
            raise MRIInputError(
                f"{matches[0].name} matches both the {twice} and the {name} glob; expected one role per file", folder
            )
        claimed[name] = matches[0]

    found = {name: path for name, path in claimed.items() if name != "mask"}
    mask_files = []
    for path in files:
        if path in claimed.values() or image_suffix(path) is None:
            continue
        if MASK_NAME.search(path.name):
            mask_files.append(path)
            continue
        role = role_of_name(path)
        if role is None or role in claimed:
            continue
        if role in found:
            raise MRIInputError(
                f"two files for {role!r}: {found[role].name} and {path.name}; expected one (or --modality {role}=GLOB)",
                folder,
            )
        found[role] = path
    roles = {role: found[role] for role in ROLES if role in found}

    if "mask" in claimed:
        return SubjectFiles(roles, claimed["mask"], "glob")
    if not use_mask_files or not mask_files:
        return SubjectFiles(roles)
    if len(mask_files) > 1:
        raise MRIInputError(
            f"{len(mask_files)} brain-mask files ({', '.join(p.name for p in mask_files)}); expected at most one "
            "(or --modality mask=GLOB)",
            folder,
        )
    return SubjectFiles(roles, mask_files[0], "file name")


def input_files(source: Path, mask: Path | None = None) -> list[Path]:
    """Every file whose bytes define the subject ``source``: what a cache key must hash.

    - a folder: every non-hidden file directly inside it, sorted (images, seg, mask, DICOM slices, others);
    - a ``.mhd`` file: itself and its ``ElementDataFile`` (none when ``LOCAL``; each file of a ``LIST`` or
      of a ``format min max step`` pattern);
    - a ``.nhdr`` file: itself and its ``data file:`` / ``datafile:`` (one file, a ``LIST`` or a pattern);
    - any other file: itself;

    then ``mask`` when given. Data file names are relative to the header's folder (absolute ones stay).
    """
    source = Path(source)
    if source.is_dir():
        files = _visible_files(source)
    else:
        suffix = image_suffix(source)
        files = [source, *(_detached_data_files(source, suffix) if suffix in (".mhd", ".nhdr") else [])]
    return files if mask is None else [*files, Path(mask)]


def _detached_data_files(header: Path, suffix: str) -> list[Path]:
    """The data files a ``.mhd`` (``ElementDataFile = ...``) or ``.nhdr`` (``data file: ...``) header names."""
    try:
        lines = header.read_bytes().decode("latin-1").splitlines()
    except OSError as error:
        raise MRIInputError(f"cannot read header ({error}); expected a readable {suffix} file", header) from error
    separator, keys = ("=", {"elementdatafile"}) if suffix == ".mhd" else (":", {"data file", "datafile"})
    for index, line in enumerate(lines):
        key, found, value = line.partition(separator)
        if found and key.strip().lower() in keys:
            value = value.strip()
            if value.upper() == "LOCAL":
                return []
            words = value.split()
            if words and words[0].upper() == "LIST":  # the names follow, one per line
                names = [name.strip() for name in lines[index + 1 :] if name.strip()]
            elif len(words) >= 4 and "%" in words[0]:  # printf pattern, first, last, step
                pattern, first, last, step = words[0], int(words[1]), int(words[2]), int(words[3])
                names = [pattern % i for i in range(first, last + (1 if step > 0 else -1), step)]
            else:
                names = [value]
            return [header.parent / name for name in names]
    return []
