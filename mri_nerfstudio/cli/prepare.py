"""``mri-prepare``: load, preprocess and render the 72 views of every subject, into a cache folder.

Examples::

    mri-prepare --data brats/ --out prepared/          # a BraTS 2021 / 2023 root, one folder per subject
    mri-prepare --data BraTS2021_00000/ --out prepared/
    mri-prepare --data IXI002-Guys_T1.nii.gz --out prepared/                 # a whole-head scan: brain extracted
    mri-prepare --data ds000001/ --out prepared/                             # a BIDS dataset: its anat folders
    mri-prepare --data T1.nii.gz --mask brain.nii.gz --out prepared/         # a brain mask of your own
    mri-prepare --data dicom/series_folder/ --out prepared/                  # one DICOM series
    mri-prepare --data subject/ --modality 't1=*MPRAGE*.nii.gz' 'flair=*FLAIR*.nii.gz' --out prepared/
    mri-prepare --out prepared/                        # the embedded MNI152 template
    mri-prepare --data brats/ --out prepared/ --subjects 40                  # the first 40 subjects by name
    mri-prepare --data brats/ --out prepared/ --shard-index $SLURM_ARRAY_TASK_ID --shard-count 8

The brain mask comes from --mask, else a *brainmask* / *brain_mask* file in the subject folder, else the
scan itself (--skull-strip auto decides whether it is already skull-stripped; the decision, the brain volume
and the method are printed and kept in provenance.json). Thick slices along any axis are interpolated
towards --target-spacing-mm. A re-run with the same inputs and settings is instant (the folder is keyed by
a hash of both).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Tuple

import tyro

from mri_nerfstudio.cli.errors import exit_on_input_error
from mri_nerfstudio.prepare import PrepareConfig, default_cache_dir, prepare_subjects


@dataclass
class PrepareCommand:
    """Prepare MRI subjects for mri-mednerf: load -> register -> rescale -> equalise -> 72 views."""

    data: Path | None = None
    """A BraTS root, one subject folder (NIfTI / NRRD / MHA files, or one DICOM series), a BIDS dataset (its
    anat folders), or one image file. None: the embedded MNI152 template."""
    out: Path = field(default_factory=default_cache_dir)
    """Cache folder for prepared subjects (one sub-folder per subject and settings)."""
    subjects: Tuple[str, ...] = ()
    """Subjects to prepare: empty = all; one number N = the first N (sorted by name); else subject names (the
    names ns-train's --subjects and --train-subjects take)."""
    shard_index: int = 0
    """This process prepares subjects shard_index, shard_index + shard_count, ... (cluster array jobs)."""
    shard_count: int = 1
    """Number of shards the subject list is split into."""
    settings: Annotated[PrepareConfig, tyro.conf.arg(name="")] = field(default_factory=PrepareConfig)


def run(command: PrepareCommand) -> None:
    start = time.perf_counter()
    prepared = prepare_subjects(
        command.data,
        command.out,
        command.settings,
        progress=lambda message: print(f"[{time.perf_counter() - start:6.1f} s] {message}", flush=True),
        shard=(command.shard_index, command.shard_count),
        subjects=command.subjects,
    )
    for subject in prepared:
        n, height, width = subject.images.shape
        print(f"{subject.name}: {n} views {width}x{height} -> {subject.directory}")
    print(f"prepared {len(prepared)} subject(s) in {time.perf_counter() - start:.1f} s")


def main(argv: list[str] | None = None) -> None:
    command = tyro.cli(PrepareCommand, args=argv, description=__doc__)
    exit_on_input_error(run, command)


if __name__ == "__main__":
    main(sys.argv[1:])
