"""Write the camera paths of ``configs/`` for ``ns-render camera-path``: the 72-view turntable and the
elevation sweep (:mod:`mri_nerfstudio.camera_paths`).

The committed files are this script's output with its defaults (views of 128 px, cameras at 4 world units:
``PrepareConfig``'s); for a run prepared with other settings, write its own next to it::

    python3 scripts/write_camera_paths.py                                      # configs/, the committed files
    python3 scripts/write_camera_paths.py --out paths/ --image-size 256 --radius 3
    ns-render camera-path --load-config outputs/.../config.yml --camera-path-filename paths/turntable.json \\
        --output-path renders/turntable.mp4
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mri_nerfstudio.camera_paths import write_camera_paths
from mri_nerfstudio.cli.errors import exit_on_input_error
from mri_nerfstudio.prepare import PrepareConfig

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    defaults = PrepareConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=CONFIGS, help="folder to write into (default: configs/)")
    parser.add_argument("--image-size", type=int, default=defaults.image_size, help="frame width and height, pixels")
    parser.add_argument("--radius", type=float, default=defaults.camera_radius, help="camera distance, world units")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    for path in exit_on_input_error(write_camera_paths, args.out, image_size=args.image_size, radius=args.radius):
        print(path)


if __name__ == "__main__":
    main()
