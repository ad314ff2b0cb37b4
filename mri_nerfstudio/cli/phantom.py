"""``mri-phantom``: write SIMULATED BraTS 2021-like subjects (T1, T1ce, T2, FLAIR, seg) for testing.

Examples::

    mri-phantom --out brats/ --n 4 --seed 0
    mri-phantom --out tiny/ --n 2 --shape 40 48 36 --spacing-mm 4
    mri-phantom --out thick/ --n 1 --slice-thickness-mm 5 --slice-motion-mm 2
    mri-phantom --out heads/ --n 2 --head --shape 192 224 192      # whole heads: not skull-stripped

Each subject folder holds ``simulated.json``: every random choice (misalignments, bias fields,
tumour, slice shifts) and the generator settings, so results can be checked against the truth.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mri_nerfstudio.cli.errors import exit_on_input_error
from mri_nerfstudio.phantom import PhantomConfig, write_brats_root
from mri_nerfstudio.volume import MODALITIES


def build_parser() -> argparse.ArgumentParser:
    defaults = PhantomConfig()
    parser = argparse.ArgumentParser(
        prog="mri-phantom",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="The data written is SIMULATED (from the MNI152 maps shipped in nilearn), not patient data.",
    )
    parser.add_argument("--out", type=Path, required=True, help="BraTS root to write BraTS2021_XXXXX folders into")
    parser.add_argument("--n", type=int, default=4, help="number of subjects (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="subject i uses seed + i (default: %(default)s)")
    parser.add_argument(
        "--shape", type=int, nargs=3, metavar=("X", "Y", "Z"), default=defaults.shape,
        help="grid in voxels (default: %(default)s, the BraTS 2021 grid)",
    )
    parser.add_argument(
        "--spacing-mm", type=float, default=defaults.spacing_mm, help="voxel size (default: %(default)s)"
    )
    parser.add_argument(
        "--slice-thickness-mm", type=float, default=None,
        help="average slices into thick ones of this thickness, a multiple of --spacing-mm (default: none)",
    )
    parser.add_argument(
        "--slice-motion-mm", type=float, default=defaults.slice_motion_mm,
        help="random in-plane shift per slice of non-reference modalities, up to this (default: %(default)s)",
    )
    parser.add_argument(
        "--max-rotation-deg", type=float, default=defaults.max_rotation_deg,
        help="misalignment of non-reference modalities: each Euler angle up to this (default: %(default)s)",
    )
    parser.add_argument(
        "--max-translation-mm", type=float, default=defaults.max_translation_mm,
        help="misalignment: each translation component up to this (default: %(default)s)",
    )
    parser.add_argument(
        "--bias-strength", type=float, default=defaults.bias_strength,
        help="smooth multiplicative bias field, about +-this (default: %(default)s)",
    )
    parser.add_argument(
        "--noise-std", type=float, default=defaults.noise_std,
        help="Rician noise sigma relative to the brightest tissue (default: %(default)s)",
    )
    parser.add_argument("--no-tumour", action="store_true", help="healthy subjects (seg all zero)")
    parser.add_argument(
        "--head", action="store_true",
        help="whole-head subjects: CSF, skull and scalp around the brain, noisy air (not skull-stripped); "
             "the grid must hold the head, e.g. --shape 48 56 48 --spacing-mm 4",
    )
    parser.add_argument(
        "--reference", choices=MODALITIES, default=defaults.reference,
        help="modality written without misalignment or motion (default: %(default)s)",
    )
    return parser


def run(args: argparse.Namespace) -> None:
    config = PhantomConfig(
        shape=tuple(args.shape),
        spacing_mm=args.spacing_mm,
        reference=args.reference,
        tumour=not args.no_tumour,
        head=args.head,
        bias_strength=args.bias_strength,
        noise_std=args.noise_std,
        max_rotation_deg=args.max_rotation_deg,
        max_translation_mm=args.max_translation_mm,
        slice_thickness_mm=args.slice_thickness_mm,
        slice_motion_mm=args.slice_motion_mm,
    )
    written = write_brats_root(
        args.out, args.n, args.seed, config, on_written=lambda folder: print(f"wrote {folder} (SIMULATED)", flush=True)
    )
    print(f"{len(written)} SIMULATED subject(s) in {args.out}: synthetic phantoms for testing, not patient data.")


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    exit_on_input_error(run, args)


if __name__ == "__main__":
    main(sys.argv[1:])
