"""``mri-demo``: the main job on the embedded MNI152 template, end to end, offline.

Prepares the default subject (load -> preprocess -> 72 views) into ``demo_out/`` and prints where
everything is. Training, evaluation and rendering join this command when the MedNeRF model lands.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import tyro

from mri_nerfstudio.cli.errors import exit_on_input_error
from mri_nerfstudio.prepare import PrepareConfig, prepare_subject


@dataclass
class DemoCommand:
    """Run the mri-nerfstudio demo on the embedded MNI152 template (no download, CPU is fine)."""

    out: Path = Path("demo_out")
    """Folder for everything the demo writes."""
    image_size: int = 128
    """View size in pixels."""


def run(command: DemoCommand) -> None:
    start = time.perf_counter()
    subject = prepare_subject(
        None,
        command.out / "prepared",
        PrepareConfig(image_size=command.image_size),
        progress=lambda message: print(f"[{time.perf_counter() - start:6.1f} s] {message}", flush=True),
    )
    print(f"\nprepared {subject.name}: {len(subject.images)} views in {time.perf_counter() - start:.1f} s")
    print(f"  preprocessed volume: {subject.directory / 'preprocessed_t1.nii.gz'}")
    print(f"  views (PNG):         {subject.directory / 'views'}")
    print(f"  cameras:             {subject.directory / 'cameras.json'}")
    print(f"  provenance:          {subject.directory / 'provenance.json'}")


def main(argv: list[str] | None = None) -> None:
    exit_on_input_error(run, tyro.cli(DemoCommand, args=argv, description=__doc__))


if __name__ == "__main__":
    main(sys.argv[1:])
