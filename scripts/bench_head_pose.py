"""How well the brain mask's outline gives the head's pose (``--prepare.align-head``), on real scans.

Questions: how far are real heads tilted against MNI152; does the mask fit (:func:`estimate_head_pose`) agree
with a fit that sees the brain's inside; and does it recover a tilt added to a real brain?

Protocol:

- Data: each ``--data`` path is a folder of IXI-style pairs (``<ID>-*_T1.nii.gz`` + ``<ID>-*_brainmask.nii.gz``,
  ``../shared/data/ixi-t1``) or a root of subject folders with brain-mask files (``../shared/data/brats2013-glioma``:
  T1ce, z-scored, gliomas). Loaded on their canonical grids; nothing is written next to them.
- ``mask``: the shipped estimate (the smoothed brain mask's outline against MNI152's, mean squares).
- ``brain MI``: a reference that sees the brain's inside (ventricles, corpus callosum, cerebellum): the subject's
  masked reference image against nilearn's skull-stripped MNI152 T1, Mattes mutual information (any contrast),
  the same similarity transform, starts and 3 mm grid. Agreement: the angle between the two rotations.
- ``known tilts``: the subject's grid is turned by each of :data:`TILTS` about its brain's centre; the mask
  fit must change by exactly that tilt. Error: the angle between the change it finds and the tilt.
- Seconds per fit on this machine (ratios only on a shared CPU).

Writes ``head_pose.json`` to ``--out`` and prints a table. Stopping rule: one pass over the given subjects.

    .venv/bin/python scripts/bench_head_pose.py --out benchmarks     # 30 IXI + 6 BraTS 2013, about 10 min on 2 cores
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from mri_nerfstudio.atomic_write import write_json
from mri_nerfstudio.benchmarking import machine_info
from mri_nerfstudio.head_pose import HeadPose, estimate_head_pose, fit_rotation, grid_over_mask
from mri_nerfstudio.json_values import to_plain
from mri_nerfstudio.lazy_import import lazy_module
from mri_nerfstudio.preprocess.register import rotation_angle_deg
from mri_nerfstudio.subject_files import find_subjects
from mri_nerfstudio.volume import load_default_subject, load_subject

sitk = lazy_module("SimpleITK", "for the reference fit")

DATA = (Path("../shared/data/ixi-t1"), Path("../shared/data/brats2013-glioma"))
TILTS = {"pitch +15": (15.0, 0.0, 0.0), "pitch -10, roll 5": (-10.0, 5.0, 0.0), "pitch 20, yaw 8": (20.0, 0.0, 8.0)}
"""Tilts (degrees about R, A, S, in that order) added to each subject's grid."""
REFERENCE_SPACING_MM = 3.0


@dataclass
class Subject:
    name: str
    image: np.ndarray
    """[X, Y, Z] float32: the reference scan inside its brain mask."""
    mask: np.ndarray
    affine: np.ndarray


def ixi_subjects(folder: Path) -> list[Subject]:
    subjects = []
    for t1 in sorted(folder.glob("*_T1.nii.gz")):
        image = nib.as_closest_canonical(nib.load(t1))
        mask = np.asarray(nib.as_closest_canonical(nib.load(str(t1).replace("_T1", "_brainmask"))).dataobj) > 0
        scan = np.asarray(image.dataobj, dtype=np.float32)
        subjects.append(Subject(t1.name.split("-")[0], np.where(mask, scan, 0), mask, image.affine))
    return subjects


def folder_subjects(root: Path) -> list[Subject]:
    subjects = []
    for folder in find_subjects(root):
        volume = load_subject(folder)
        mask = volume.brain_mask()
        scan = volume.images[volume.reference]
        subjects.append(Subject(volume.name, np.where(mask, scan, 0).astype(np.float32), mask, volume.affine))
    return subjects


def _on_grid(image: np.ndarray, mask: np.ndarray, affine: np.ndarray) -> "sitk.Image":
    """The masked image, anti-aliased, on a :data:`REFERENCE_SPACING_MM` grid over the mask's bounding box."""
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    sigma = 0.5 * np.sqrt(np.maximum(REFERENCE_SPACING_MM**2 - spacing**2, 0.0)) / spacing
    smoothed = ndimage.gaussian_filter(image, sigma).astype(np.float32)
    return grid_over_mask(smoothed, mask, affine, REFERENCE_SPACING_MM, margin_mm=8.0)


def template_image() -> "sitk.Image":
    """The reference fit's fixed image: nilearn's skull-stripped 2 mm MNI152 T1 on its grid."""
    volume = load_default_subject(resolution_mm=2)
    mask = volume.brain_mask()
    return _on_grid(np.where(mask, volume.images["t1"], 0).astype(np.float32), mask, volume.affine)


def brain_mi_pose(subject: Subject, template: "sitk.Image") -> HeadPose:
    """The reference fit: the masked scan against the masked MNI152 T1 by mutual information."""
    moving = _on_grid(subject.image, subject.mask, subject.affine)

    def centroid(image: "sitk.Image") -> np.ndarray:
        z, y, x = ndimage.center_of_mass(sitk.GetArrayFromImage(image) != 0)
        return np.asarray(image.TransformContinuousIndexToPhysicalPoint((float(x), float(y), float(z))))

    centre = centroid(template)
    return fit_rotation(
        template, moving, centre, centroid(moving) - centre, lambda m: m.SetMetricAsMattesMutualInformation(32)
    )


def tilted_affine(subject: Subject, tilt: np.ndarray) -> np.ndarray:
    """The subject's affine turned by ``tilt`` about its brain's centre."""
    voxels = np.argwhere(subject.mask).mean(axis=0)
    centre = subject.affine[:3, :3] @ voxels + subject.affine[:3, 3]
    turn = np.eye(4)
    turn[:3, :3] = tilt
    turn[:3, 3] = centre - tilt @ centre
    return turn @ subject.affine


def timed(function, *args):
    began = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - began


def measure(subject: Subject, template: "sitk.Image") -> dict:
    pose, seconds = timed(estimate_head_pose, subject.mask, subject.affine)
    reference, reference_seconds = timed(brain_mi_pose, subject, template)
    tilt_errors = {}
    for label, angles in TILTS.items():
        tilt = Rotation.from_euler("xyz", angles, degrees=True).as_matrix()
        turned = estimate_head_pose(subject.mask, tilted_affine(subject, tilt))
        # turning the head by `tilt` must turn the pose by its inverse: turned.rotation = pose.rotation @ tilt.T
        tilt_errors[label] = rotation_angle_deg(turned.rotation @ tilt @ pose.rotation.T)
    return {
        "subject": subject.name,
        "mask": pose.angles_deg,
        "brain_mi": reference.angles_deg,
        "agreement_deg": rotation_angle_deg(pose.rotation @ reference.rotation.T),
        "tilt_error_deg": tilt_errors,
        "seconds": {"mask": seconds, "brain_mi": reference_seconds},
    }


def summary(rows: list[dict]) -> dict:
    pitch = np.array([row["mask"]["pitch"] for row in rows])
    agreement = np.array([row["agreement_deg"] for row in rows])
    tilt = np.array([list(row["tilt_error_deg"].values()) for row in rows])
    seconds = np.array([[row["seconds"]["mask"], row["seconds"]["brain_mi"]] for row in rows])
    return {
        "subjects": len(rows),
        "pitch_deg": {"mean": pitch.mean(), "std": pitch.std(), "min": pitch.min(), "max": pitch.max()},
        "agreement_deg": {"mean": agreement.mean(), "median": float(np.median(agreement)), "max": agreement.max()},
        "tilt_error_deg": {"mean": tilt.mean(), "max": tilt.max()},
        "seconds_per_fit": {"mask": seconds[:, 0].mean(), "brain_mi": seconds[:, 1].mean()},
    }


def table(groups: dict[str, list[dict]]) -> str:
    lines = ["| subject | pitch / roll / yaw (mask) | pitch (brain MI) | agreement | worst known-tilt error | s |",
             "|---|---|---|---|---|---|"]
    for rows in groups.values():
        for row in rows:
            m = row["mask"]
            lines.append(
                f"| {row['subject']} | {m['pitch']:+.1f} / {m['roll']:+.1f} / {m['yaw']:+.1f} | "
                f"{row['brain_mi']['pitch']:+.1f} | {row['agreement_deg']:.1f} | "
                f"{max(row['tilt_error_deg'].values()):.1f} | {row['seconds']['mask']:.1f} |"
            )
    for group, rows in groups.items():
        s = summary(rows)
        lines.append(
            f"\n{group}: {s['subjects']} subjects, pitch {s['pitch_deg']['mean']:+.1f} +- {s['pitch_deg']['std']:.1f} "
            f"({s['pitch_deg']['min']:+.1f} to {s['pitch_deg']['max']:+.1f}); agreement with brain MI "
            f"{s['agreement_deg']['mean']:.1f} (median {s['agreement_deg']['median']:.1f}, max "
            f"{s['agreement_deg']['max']:.1f}) deg; known tilts recovered to {s['tilt_error_deg']['mean']:.1f} "
            f"(max {s['tilt_error_deg']['max']:.1f}) deg; {s['seconds_per_fit']['mask']:.1f} s per mask fit, "
            f"{s['seconds_per_fit']['brain_mi']:.1f} s per brain-MI fit"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, nargs="+", default=list(DATA),
                        help="folders of IXI-style pairs or roots of subject folders")
    parser.add_argument("--out", type=Path, default=Path("bench_out/head_pose"), help="folder of head_pose.json")
    args = parser.parse_args(argv)
    template = template_image()
    groups: dict[str, list[dict]] = {}
    for data in args.data:
        subjects = ixi_subjects(data) if any(data.glob("*_T1.nii.gz")) else folder_subjects(data)
        groups[data.name] = []
        for subject in subjects:
            groups[data.name].append(measure(subject, template))
            row = groups[data.name][-1]
            print(f"{subject.name}: pitch {row['mask']['pitch']:+.1f}, agreement {row['agreement_deg']:.1f} deg",
                  flush=True)
    report = {
        "command": " ".join(["scripts/bench_head_pose.py", *(argv if argv is not None else sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine_info(),
        "tilts_deg": TILTS,
        "groups": {group: {"summary": summary(rows), "subjects": rows} for group, rows in groups.items()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "head_pose.json", to_plain(report))
    print(table(groups))


if __name__ == "__main__":
    main()
