"""``mri-phantom``: write SIMULATED BraTS 2021-like subjects (T1, T1ce, T2, FLAIR, seg) for testing.

Examples::

    mri-phantom --out brats/ --n 4 --seed 0
    mri-phantom --out tiny/ --n 2 --shape 40 48 36 --spacing-mm 4
    mri-phantom --out thick/ --n 1 --slice-thickness-mm 5 --slice-motion-mm 2
    mri-phantom --out heads/ --n 2 --head --shape 192 224 192      # whole heads: not skull-stripped

Each subject folder holds ``simulated.json``: every random choice (misalignments, bias fields,
tumour, slice shifts) and the generator settings, so results can be checked against the truth. The data
written is SIMULATED (from the MNI152 maps shipped in nilearn), not patient data.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from mri_nerfstudio.cli.errors import exit_on_input_error
from mri_nerfstudio.phantom import PhantomConfig, write_brats_root


@dataclass
class PhantomCommand:
    """Write SIMULATED BraTS 2021-like subjects: ``n`` folders under ``out``, with the phantom settings below."""

    out: Path
    """BraTS root to write BraTS2021_XXXXX folders into."""
    n: int = 4
    """Number of subjects."""
    seed: int = 0
    """Subject i uses seed + i."""
    settings: Annotated[PhantomConfig, tyro.conf.arg(name="")] = field(default_factory=PhantomConfig)


def run(command: PhantomCommand) -> None:
    written = write_brats_root(
        command.out,
        command.n,
        command.seed,
        command.settings,
        on_written=lambda folder: print(f"wrote {folder} (SIMULATED)", flush=True),
    )
    print(f"{len(written)} SIMULATED subject(s) in {command.out}: synthetic phantoms for testing, not patient data.")


def main(argv: list[str] | None = None) -> None:
    # PhantomConfig checks its settings as tyro builds it: a bad one is an error line too.
    command = exit_on_input_error(tyro.cli, PhantomCommand, args=argv, description=__doc__)
    exit_on_input_error(run, command)


if __name__ == "__main__":
    main(sys.argv[1:])
