"""Benchmark of brain masks derived from real scans: brain extraction on IXI, the skull-stripped decision on BraTS 2013.

1. **IXI** (``<data>/ixi-t1/``): 30 whole-head T1s (skull, scalp, face, neck; 2 mm) with reference brain
   masks (labels > 0 of an automatic parcellation). Every method of ``--methods`` extracts the brain of
   every subject; per subject and per method it records the Dice against the reference, the volume
   error (ml and %) and the seconds taken (wall and process CPU). Summaries (median, worst,
   mean +- std Dice; median absolute and mean signed volume error; mean seconds) are given for the
   first 15 subjects (sorted by name: every tuning choice was made on them), the last 15 and all 30.
2. **BraTS 2013** (``<data>/brats2013-glioma/``): 6 skull-stripped, z-scored glioma subjects (the
   background is a negative constant). ``derive_brain_mask(..., "auto")`` runs on T1ce and FLAIR,
   the given ``_brainmask`` files ignored; it records the decision and the Dice against those masks
   (goal: "already skull-stripped", Dice >= 0.97).

Methods:

- ``registration-refined``: :func:`mri_nerfstudio.preprocess.skull_strip.extract_brain`, the one shipped.
- ``registration``: the same without the intensity refinement (the MNI152 mask registered, as is).
- ``morphology``: a classic baseline: Otsu threshold inside the head, 6 mm erosion, largest
  component, 8 mm dilation within the head, holes filled.
- ``brainextractor``: the ``brainextractor`` package (a Python re-implementation of FSL BET),
  default settings, 1,000 iterations; skipped with a message when it is not installed (it is not
  a dependency of the project).

The scans are read with nibabel and put in canonical RAS orientation, as ``load_subject`` does;
input files are never written. Prints a table and writes JSON (atomically) with the machine, the
command and every figure. Exits 0 with a message when the data folder is absent (a fresh clone has
no ``../shared``).

Example::

    .venv/bin/python scripts/bench_brain_mask.py --methods registration-refined registration morphology brainextractor
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from skimage.filters import threshold_otsu

from mri_nerfstudio.atomic_write import write_json
from mri_nerfstudio.benchmarking import cpu_model
from mri_nerfstudio.json_values import to_plain
from mri_nerfstudio.preprocess.skull_strip import (
    ball,
    derive_brain_mask,
    extract_brain,
    fill_holes,
    head_foreground,
    spacing_of,
    voxel_volume_ml,
)

REPOSITORY = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPOSITORY.parent / "shared" / "data"
DEFAULT_JSON = REPOSITORY / "benchmarks" / "brain_mask.json"
TUNING_SUBJECTS = 15
"""The first this many IXI subjects (sorted by name) are the ones every tuning choice was made on."""
GOALS = {"ixi_median_dice": 0.93, "ixi_median_dice_at_least": 0.90, "ixi_worst_dice": 0.85, "seconds": 10.0,
         "brats_dice": 0.97}


def morphological_brain(image: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Baseline brain mask [X, Y, Z]: the largest bright body of the head, eroded apart from the scalp then regrown."""
    spacing = spacing_of(affine)
    head = head_foreground(image, spacing)
    bright = head & (image > threshold_otsu(image[head]))
    core = ndimage.binary_erosion(bright, ball(6.0, spacing))
    labels, count = ndimage.label(core)
    if count == 0:
        return np.zeros(image.shape, dtype=bool)
    largest = labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1
    return fill_holes(ndimage.binary_dilation(largest, ball(8.0, spacing)) & head)


def brainextractor_brain(image: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Brain mask [X, Y, Z] by the ``brainextractor`` package (default settings; its progress output is muted)."""
    from brainextractor import BrainExtractor

    with contextlib.redirect_stdout(io.StringIO()):
        extractor = BrainExtractor(img=nib.Nifti1Image(image, affine))
        extractor.run(iterations=1000)
        return np.asarray(extractor.compute_mask()) > 0


METHODS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "registration-refined": extract_brain,
    "registration": lambda image, affine: extract_brain(image, affine, refine=False),
    "morphology": morphological_brain,
    "brainextractor": brainextractor_brain,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Measure brain masks derived from real scans: Dice, volume error and seconds of each brain "
            "extraction method on the 30 whole-head IXI T1s (first 15 / last 15 / all 30), and the "
            "skull-stripped decision and Dice on the 6 BraTS 2013 subjects. Prints a table and writes JSON. "
            "Exits 0 with a message when the data folder is absent."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="folder holding ixi-t1/ and brats2013-glioma/ (never written to)")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=["registration-refined"],
                        help="brain extraction methods to compare on IXI")
    parser.add_argument("--limit", type=int, default=None, help="only the first N IXI subjects (a quick look)")
    parser.add_argument("--no-brats", action="store_true", help="skip the BraTS 2013 part")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write the JSON results")
    return parser.parse_args(argv)


def machine_info() -> dict[str, Any]:
    """What the timings depend on: cores, thread pools, load, platform and library versions."""
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "sitk_threads": sitk.ProcessObject.GetGlobalDefaultNumberOfThreads(),
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "simpleitk": sitk.Version.VersionString(),
    }


def read_canonical(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """float32 [X, Y, Z] voxels of a NIfTI file in canonical RAS orientation, and their affine."""
    image = nib.as_closest_canonical(nib.load(path))
    return image.get_fdata(dtype=np.float32), image.affine


def dice(mask: np.ndarray, reference: np.ndarray) -> float:
    """Dice overlap of two bool masks (1: identical)."""
    total = int(np.count_nonzero(mask)) + int(np.count_nonzero(reference))
    return 2.0 * np.count_nonzero(mask & reference) / total if total else 1.0


def ixi_subjects(folder: Path) -> list[tuple[str, Path, Path]]:
    """(subject, T1 file, reference mask file) of every IXI subject, sorted by name."""
    subjects = []
    for t1 in sorted(folder.glob("IXI*_T1.nii.gz")):
        name = t1.name[: -len("_T1.nii.gz")]
        mask = folder / f"{name}_brainmask.nii.gz"
        if mask.is_file():
            subjects.append((name, t1, mask))
    return subjects


def measure_ixi(folder: Path, methods: list[str], limit: int | None) -> dict[str, list[dict[str, Any]]]:
    """Per method, one row per subject: Dice, volumes (ml), volume error (ml, %), seconds (wall, CPU)."""
    rows: dict[str, list[dict[str, Any]]] = {method: [] for method in methods}
    for name, t1_file, mask_file in ixi_subjects(folder)[:limit]:
        image, affine = read_canonical(t1_file)
        reference = read_canonical(mask_file)[0] > 0
        voxel_ml = voxel_volume_ml(affine)
        reference_ml = np.count_nonzero(reference) * voxel_ml
        for method in methods:
            wall, cpu = time.perf_counter(), time.process_time()
            mask = METHODS[method](image, affine)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            mask_ml = np.count_nonzero(mask) * voxel_ml
            row = {
                "subject": name,
                "dice": dice(mask, reference),
                "brain_ml": mask_ml,
                "reference_ml": reference_ml,
                "volume_error_ml": mask_ml - reference_ml,
                "volume_error_percent": 100.0 * (mask_ml - reference_ml) / reference_ml,
                "seconds": wall,
                "cpu_seconds": cpu,
            }
            rows[method].append(row)
            print(f"  {name:<16} {method:<22} Dice {row['dice']:.4f}  {mask_ml:7.0f} ml "
                  f"(ref {reference_ml:5.0f}, {row['volume_error_percent']:+6.1f} %)  {wall:5.1f} s", flush=True)
    return rows


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Median, worst, mean and std of Dice; median |volume error| and mean signed error; mean seconds."""
    if not rows:
        return {"subjects": 0}
    dices = np.array([row["dice"] for row in rows])
    errors_ml = np.array([row["volume_error_ml"] for row in rows])
    errors_percent = np.array([row["volume_error_percent"] for row in rows])
    seconds = np.array([row["seconds"] for row in rows])
    worst = int(np.argmin(dices))
    return {
        "subjects": len(rows),
        "dice_median": float(np.median(dices)),
        "dice_worst": float(dices[worst]),
        "worst_subject": rows[worst]["subject"],
        "dice_mean": float(dices.mean()),
        "dice_std": float(dices.std()),
        "volume_error_abs_median_ml": float(np.median(np.abs(errors_ml))),
        "volume_error_abs_median_percent": float(np.median(np.abs(errors_percent))),
        "volume_error_mean_percent": float(errors_percent.mean()),
        "volume_error_std_percent": float(errors_percent.std()),
        "seconds_mean": float(seconds.mean()),
        "seconds_max": float(seconds.max()),
        "cpu_seconds_mean": float(np.mean([row["cpu_seconds"] for row in rows])),
    }


def measure_brats(folder: Path) -> list[dict[str, Any]]:
    """The auto decision and Dice against the given brain mask, for T1ce and FLAIR of every subject."""
    rows = []
    for subject in sorted(p for p in folder.iterdir() if p.is_dir()):
        mask_file = subject / f"{subject.name}_brainmask.nii.gz"
        if not mask_file.is_file():
            continue
        reference = read_canonical(mask_file)[0] > 0
        for modality in ("t1ce", "flair"):
            image_file = subject / f"{subject.name}_{modality}.nii.gz"
            if not image_file.is_file():
                continue
            image, affine = read_canonical(image_file)
            wall = time.perf_counter()
            mask, record = derive_brain_mask(image, affine, "auto")
            wall = time.perf_counter() - wall
            row = {
                "subject": subject.name,
                "modality": modality,
                "decision": record["decision"],
                "dice": dice(mask, reference),
                "dice_of_positive_voxels": dice(image > 0, reference),
                "brain_ml": record["brain_ml"],
                "reference_ml": np.count_nonzero(reference) * voxel_volume_ml(affine),
                "evidence": record["evidence"],
                "seconds": wall,
            }
            rows.append(row)
            print(f"  {subject.name:<16} {modality:<6} {record['decision']:<32} Dice {row['dice']:.4f} "
                  f"(> 0 voxels: {row['dice_of_positive_voxels']:.4f})  {wall:4.1f} s", flush=True)
    return rows


def print_table(summaries: dict[str, dict[str, dict[str, Any]]]) -> None:
    header = (f"{'method':<22} {'subjects':<10} {'median':>7} {'worst':>7} {'mean +- std':>16} "
              f"{'|vol err| median':>18} {'vol err mean':>13} {'s/subject':>10}")
    print("\nIXI brain extraction (Dice against the reference masks)")
    print(header)
    print("-" * len(header))
    for method, parts in summaries.items():
        for part, s in parts.items():
            if not s.get("subjects"):
                continue
            print(f"{method:<22} {part:<10} {s['dice_median']:7.4f} {s['dice_worst']:7.4f} "
                  f"{s['dice_mean']:8.4f} +- {s['dice_std']:.4f} "
                  f"{s['volume_error_abs_median_ml']:8.1f} ml {s['volume_error_abs_median_percent']:5.1f} % "
                  f"{s['volume_error_mean_percent']:+11.1f} % {s['seconds_mean']:10.2f}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ixi_folder, brats_folder = args.data / "ixi-t1", args.data / "brats2013-glioma"
    if not ixi_folder.is_dir() and not brats_folder.is_dir():
        print(f"skipped: no real data at {args.data} (expected ixi-t1/ and brats2013-glioma/ there; "
              "a fresh clone has no ../shared)")
        return 0
    if "brainextractor" in args.methods:
        try:
            import brainextractor  # noqa: F401
        except ImportError:
            print("brainextractor is not installed (pip install brainextractor==0.3.0): that method is skipped")
            args.methods = [m for m in args.methods if m != "brainextractor"]
    results: dict[str, Any] = {
        "benchmark": "brain masks from real scans (scripts/bench_brain_mask.py)",
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(),
        "goals": GOALS,
        "tuning_subjects": f"the first {TUNING_SUBJECTS} IXI subjects sorted by name",
    }
    if ixi_folder.is_dir():
        print(f"IXI: {ixi_folder}")
        rows = measure_ixi(ixi_folder, args.methods, args.limit)
        summaries = {
            method: {
                f"first {len(method_rows[:TUNING_SUBJECTS])}": summarise(method_rows[:TUNING_SUBJECTS]),
                f"last {len(method_rows[TUNING_SUBJECTS:])}": summarise(method_rows[TUNING_SUBJECTS:]),
                f"all {len(method_rows)}": summarise(method_rows),
            }
            for method, method_rows in rows.items()
        }
        results["ixi"] = {"summary": summaries, "subjects": rows}
        print_table(summaries)
    if brats_folder.is_dir() and not args.no_brats:
        print(f"\nBraTS 2013 (given brain masks ignored): {brats_folder}")
        brats_rows = measure_brats(brats_folder)
        dices = [row["dice"] for row in brats_rows]
        stripped = sum(row["decision"] == "auto: already skull-stripped" for row in brats_rows)
        results["brats2013"] = {
            "summary": {
                "scans": len(brats_rows),
                "decided_skull_stripped": stripped,
                "dice_min": min(dices, default=None),
                "dice_median": float(np.median(dices)) if dices else None,
                "seconds_mean": float(np.mean([row["seconds"] for row in brats_rows])) if brats_rows else None,
            },
            "scans": brats_rows,
        }
        if dices:
            print(f"BraTS 2013: {stripped}/{len(brats_rows)} decided already skull-stripped; "
                  f"Dice median {np.median(dices):.4f}, worst {min(dices):.4f}")
    results["machine"]["load_average_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    write_json(args.json, to_plain(results))
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
