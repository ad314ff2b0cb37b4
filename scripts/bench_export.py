"""Sampling a field on a BraTS-size scanner grid (as ``mri-export`` does): seconds and peak memory per preset.

Builds each model preset (weights as initialised: evaluation cost does not depend on training), then
samples its volume estimate with :func:`mri_nerfstudio.nerf.volume_export.sample_field` on a
240 x 240 x 155 grid of 1 mm voxels (BraTS 2021's) or a coarser one, chunked as the command does.
Peak memory is the process's maximum resident set size after each run (it only grows), so run one
configuration per process for exact per-configuration figures; the table gives the growth as well.

    .venv/bin/python scripts/bench_export.py --runs cpu:1 cpu:2 mednerf:2
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from nerfstudio.data.scene_box import SceneBox

from mri_nerfstudio.atomic_write import write_json
from mri_nerfstudio.benchmarking import machine_info
from mri_nerfstudio.grids import POINTS_PER_CHUNK, VoxelGrid
from mri_nerfstudio.nerf.model import MRIMedNeRFModelConfig
from mri_nerfstudio.nerf.volume_export import sample_field

BRATS_SHAPE_1MM = (240, 240, 155)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", default=["cpu:1", "cpu:2", "mednerf:2"], help="preset:spacing_mm")
    parser.add_argument("--points-per-chunk", type=int, default=POINTS_PER_CHUNK)
    parser.add_argument("--out", type=Path, default=Path("bench_out/export"))
    return parser.parse_args(argv)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def brats_grid(spacing_mm: float) -> tuple[VoxelGrid, np.ndarray]:
    """BraTS's field of view at ``spacing_mm``, and RAS -> world for a brain of radius 90 mm at its centre."""
    shape = tuple(round(size / spacing_mm) for size in BRATS_SHAPE_1MM)
    affine = np.diag([spacing_mm] * 3 + [1.0])
    affine[:3, 3] = [-(size - 1) * spacing_mm / 2 for size in shape]
    return VoxelGrid(shape, affine), np.diag([1 / 90.0] * 3 + [1.0])


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for run in args.runs:
        preset, spacing = run.split(":")
        torch.manual_seed(0)
        model = MRIMedNeRFModelConfig(preset=preset).setup(scene_box=SceneBox(torch.tensor([[-1.0] * 3, [1.0] * 3])),
                                                            num_train_data=1, metadata={})
        model.eval()
        grid, world_from_ras = brats_grid(float(spacing))
        before = peak_rss_mb()
        start = time.perf_counter()
        volume = sample_field(model, 0, grid, world_from_ras, args.points_per_chunk)
        seconds = time.perf_counter() - start
        results.append({
            "preset": preset, "spacing_mm": float(spacing), "shape": list(grid.shape), "voxels": grid.size,
            "seconds": seconds, "microseconds_per_voxel": 1e6 * seconds / grid.size,
            "peak_rss_mb": peak_rss_mb(), "peak_rss_growth_mb": peak_rss_mb() - before,
            "output_mb": volume.nbytes / 2**20,
        })
        print(f"{preset} {spacing} mm {grid.shape}: {seconds:.1f} s, peak RSS {peak_rss_mb():.0f} MB", flush=True)
    header = f"{'preset':>8} {'grid':>16} {'voxels':>11} {'seconds':>8} {'us/voxel':>9} {'peak RSS MB':>12} {'growth MB':>10}"
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(f"{r['preset']:>8} {'x'.join(map(str, r['shape'])) + ' @' + format(r['spacing_mm'], 'g'):>16} "
                     f"{r['voxels']:>11,} {r['seconds']:>8.1f} {r['microseconds_per_voxel']:>9.2f} "
                     f"{r['peak_rss_mb']:>12.0f} {r['peak_rss_growth_mb']:>10.0f}")
    print("\n" + "\n".join(lines))
    report = {"command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
              "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine_info(),
              "points_per_chunk": args.points_per_chunk, "results": results}
    path = args.out / "export.json"
    write_json(path, report)
    print(f"\nJSON: {path}")


if __name__ == "__main__":
    main()
