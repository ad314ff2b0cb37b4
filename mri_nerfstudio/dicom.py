"""DICOM series in a folder: which ones it holds, picking one, and reading it with SimpleITK (GDCM).

A DICOM file is a ``*.dcm`` file or any other file (DICOM names are often extensionless or UID-like,
``1.2.840.113619.2.55.3.2831``) with the ``DICM`` marker at byte 128 of the Part 10 format. SimpleITK
returns the series in ITK's LPS physical frame; :mod:`mri_nerfstudio.volume` turns it into RAS.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.lazy_import import lazy_module

sitk = lazy_module("SimpleITK", "to read DICOM series")

DICOM_SUFFIX = ".dcm"
_PREAMBLE_BYTES = 128
_MAGIC = b"DICM"
_SERIES_DESCRIPTION_TAG = "0008|103e"


@dataclass(frozen=True)
class DicomSeries:
    """One series of a folder.

    Attributes:
        uid: SeriesInstanceUID (tag 0020,000E).
        description: SeriesDescription (tag 0008,103E), empty when the files lack it.
        files: its slice files, in the order GDCM sorts them (along the slice normal).
    """

    uid: str
    description: str
    files: tuple[Path, ...]

    def summary(self) -> str:
        """``UID ("description", N slices)`` for messages."""
        return f"{self.uid} ({self.description!r}, {len(self.files)} slices)"

    def to_json(self) -> dict:
        return {"uid": self.uid, "description": self.description, "slices": len(self.files)}


def is_dicom_file(path: Path, image_suffixes: tuple[str, ...] = ()) -> bool:
    """Whether ``path`` is a DICOM file: a ``.dcm`` suffix, or the ``DICM`` marker at byte 128.

    Args:
        path: a file.
        image_suffixes: suffixes of other image formats (lower case), skipped without reading them.
    """
    name = path.name.lower()
    if name.endswith(DICOM_SUFFIX):
        return True
    if any(name.endswith(suffix) for suffix in image_suffixes):
        return False
    try:
        with path.open("rb") as stream:
            stream.seek(_PREAMBLE_BYTES)
            return stream.read(len(_MAGIC)) == _MAGIC
    except OSError:
        return False


def has_dicom_files(folder: Path, image_suffixes: tuple[str, ...] = ()) -> bool:
    """Whether a non-hidden file directly inside ``folder`` is a DICOM file (stops at the first one)."""
    return any(
        p.is_file() and not p.name.startswith(".") and is_dicom_file(p, image_suffixes) for p in folder.iterdir()
    )


def list_series(folder: Path) -> list[DicomSeries]:
    """Every DICOM image series directly inside ``folder``, in GDCM's order (by UID)."""
    try:
        uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
        series = []
        for uid in uids:
            files = tuple(Path(f) for f in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
            series.append(DicomSeries(uid=uid, description=_series_description(files[0]), files=files))
    except RuntimeError as error:
        raise MRIInputError(f"cannot list DICOM series ({error}); expected readable DICOM files", folder) from error
    if not series:
        raise MRIInputError("no DICOM image series found; expected DICOM files of one image series", folder)
    return series


def select_series(folder: Path, series_uid: str | None) -> DicomSeries:
    """The series of ``folder`` to load: its only one, or the one ``series_uid`` names.

    Raises:
        MRIInputError: several series and no ``series_uid`` (each listed with its description and
            slice count), or a ``series_uid`` the folder does not hold (the present ones listed).
    """
    series = list_series(folder)
    listing = "; ".join(s.summary() for s in series)
    if series_uid is None:
        if len(series) > 1:
            raise MRIInputError(
                f"{len(series)} DICOM series in one folder: {listing}; expected one, or --series UID to pick one",
                folder,
            )
        return series[0]
    chosen = next((s for s in series if s.uid == series_uid), None)
    if chosen is None:
        raise MRIInputError(f"series {series_uid!r} is not in this folder; series present: {listing}", folder)
    return chosen


def read_series(series: DicomSeries, folder: Path) -> "sitk.Image":
    """The series as one SimpleITK image (LPS geometry from the slices' position and orientation tags)."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in series.files])
    try:
        return reader.Execute()
    except RuntimeError as error:
        raise MRIInputError(
            f"cannot read DICOM series {series.uid} ({error}); expected slices of one size and pixel type", folder
        ) from error


def _series_description(path: Path) -> str:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    if not reader.HasMetaDataKey(_SERIES_DESCRIPTION_TAG):
        return ""
    return reader.GetMetaData(_SERIES_DESCRIPTION_TAG).strip()
