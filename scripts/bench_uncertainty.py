"""Does the uncertainty map rank the reconstruction's error? Real subjects, per voxel, with the time it costs.

Question: which map ranks the absolute error of the shipped 15-view reconstruction best (Spearman rank
correlation over the brain-mask voxels of the preprocessed grid; issue goal >= 0.4), and how calibrated
is it (mean absolute error per uncertainty decile)? Arms, all from what training sees (15 views):

- ``blend``: :func:`~mri_nerfstudio.uncertainty.blend_spread` of the estimate (free);
- ``ensemble``: the spread of the estimate and ``--members`` short fits (half the steps, 80 % of the
  training views each, their own seeds; :func:`~mri_nerfstudio.nerf.ensemble.train_ensemble`);
- ``blend + ensemble``: :func:`~mri_nerfstudio.uncertainty.predictive_spread`, what ``mri-export
  --uncertainty-members`` writes;
- ``oracle``: the true absolute error smoothed by a Gaussian of 2 voxels: not a method, the ceiling of any
  smooth map (the unresolved texture of each voxel is unpredictable).

Choice on the validation subject (the first of ``--subjects``): the blend weight (the map's scale; a
rank correlation does not depend on it), fitted so that each decile's mean absolute error matches a
Gaussian's ``sqrt(2 / pi) * sigma`` (least squares over the deciles); the shipped ``BLEND_WEIGHT`` is
compared. The other subjects are the test subjects, reported with mean and std. Stopping rule: one pass
over the subjects, the arms above; no further variants. Prints a table, writes JSON (atomically) and a
PNG (calibration curves; mid-slices of the first test subject).

    .venv/bin/python scripts/bench_uncertainty.py --out benchmarks     # about 25 min on 2 cores
    .venv/bin/python scripts/bench_uncertainty.py --quick --out /tmp/u  # smoke run on the template
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from mri_nerfstudio.atomic_write import write_atomically, write_json
from mri_nerfstudio.benchmarking import machine_info
from mri_nerfstudio.json_values import to_plain
from mri_nerfstudio.metrics import volume_fidelity
from mri_nerfstudio.nerf.ensemble import EnsembleSettings, train_ensemble
from mri_nerfstudio.nerf.field_sampling import reconstruct_in_mask
from mri_nerfstudio.nerf.training_config import shipped_config
from mri_nerfstudio.prepare import PrepareConfig, prepare_subjects
from mri_nerfstudio.uncertainty import (
    BLEND_WEIGHT,
    blend_spread,
    ensemble_spread,
    predictive_spread,
    uncertainty_calibration,
)
from mri_nerfstudio.view_split import orbit_view_split

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SUBJECTS = (
    "ixi-t1/IXI132-HH-1415_T1.nii.gz",  # validation: the blend weight is chosen here
    "ixi-t1/IXI162-HH-1548_T1.nii.gz",
    "ixi-t1/IXI174-HH-1571_T1.nii.gz",
    "ixi-t1/IXI206-HH-1650_T1.nii.gz",
    "brats2013-glioma/BraTS2013_0001",
)
ARMS = ("blend", "ensemble", "blend + ensemble", "oracle")
ORACLE_SIGMA_VOXELS = 2.0


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", nargs="+", default=list(SUBJECTS),
                        help="scans under --data (first: validation); 'default' is the MNI152 template")
    parser.add_argument("--data", type=Path, default=DATA, help="root of the --subjects paths")
    parser.add_argument("--image-size", type=int, default=64, help="view size, px")
    parser.add_argument("--steps", type=int, default=1000, help="training steps of the reconstruction")
    parser.add_argument("--members", type=int, default=3, help="short fits of the ensemble")
    parser.add_argument("--cache-dir", type=Path, default=None, help="prepared subjects' cache")
    parser.add_argument("--out", type=Path, default=Path("benchmarks"), help="folder of uncertainty.json / .png")
    parser.add_argument("--quick", action="store_true", help="smoke run: the template twice, 16 px, 4 steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.subjects, args.image_size, args.steps, args.members = ["default", "default"], 16, 4, 2
    if len(args.subjects) < 2:
        parser.error("--subjects needs a validation subject and at least one test subject")
    return args


def subject_config(path: str, args: argparse.Namespace):
    """The shipped config on one subject (its reference modality alone: BraTS 2013 has no T1, so T1ce)."""
    data = None if path == "default" else args.data / path
    modalities = ("t1ce",) if "brats" in path.lower() else PrepareConfig().modalities
    config = shipped_config(data, args.image_size, args.cache_dir, modalities=modalities)
    config.max_num_iterations = args.steps
    return config


def run_subject(path: str, args: argparse.Namespace) -> dict:
    """Train the reconstruction and the ensemble on one subject; every arm's map, scored."""
    config = subject_config(path, args)
    dataparser = config.pipeline.datamanager.dataparser
    train_views = list(orbit_view_split(dataparser.prepare, dataparser.train_every).train)
    main = train_ensemble(config, train_views, EnsembleSettings(members=1, steps=args.steps, view_fraction=1.0, seed=0))
    members = train_ensemble(config, train_views, EnsembleSettings(members=args.members))
    data = None if path == "default" else dataparser.data
    prepared = prepare_subjects(data, dataparser.cache_dir, dataparser.prepare)[0]
    estimate = reconstruct_in_mask(main[0].model, prepared, 0)
    member_estimates = [reconstruct_in_mask(member.model, prepared, 0) for member in members]
    reference, mask = prepared.volume.images[prepared.volume.reference], prepared.volume.brain_mask()
    error = np.abs(estimate - reference)
    start = time.perf_counter()
    blend = blend_spread(estimate)
    blend_seconds = time.perf_counter() - start
    ensemble = ensemble_spread([estimate, *member_estimates])
    smoothed = ndimage.gaussian_filter(error * mask, ORACLE_SIGMA_VOXELS)
    oracle = smoothed / np.maximum(ndimage.gaussian_filter(mask.astype(np.float64), ORACLE_SIGMA_VOXELS), 1e-6)
    maps = {"blend": blend, "ensemble": ensemble, "blend + ensemble": predictive_spread(estimate, ensemble),
            "oracle": oracle}
    return {
        "subject": prepared.name,
        "path": path,
        **volume_fidelity(estimate, reference, mask),
        "arms": {arm: uncertainty_calibration(maps[arm], error, mask) for arm in ARMS},
        "seconds": {"reconstruction": main[0].seconds, "ensemble": sum(m.seconds for m in members),
                    "blend": blend_seconds},
        "_figure": {"truth": reference, "estimate": estimate, "error": error, "uncertainty": maps["blend + ensemble"],
                    "mask": mask},
    }


def calibrated_blend_weight(deciles: list[dict]) -> float:
    """The blend weight whose map, per decile, best predicts the mean absolute error as a Gaussian would
    (``sqrt(2 / pi) * sigma``; least squares), from deciles of the map at ``BLEND_WEIGHT``."""
    sigma = np.sqrt(2 / np.pi) * np.array([decile["uncertainty"] for decile in deciles])
    error = np.array([decile["abs_error"] for decile in deciles])
    scale = float(error @ sigma / (sigma @ sigma))  # sigma grows with sqrt(weight)
    return BLEND_WEIGHT * scale**2


def summarise(rows: list[dict]) -> dict:
    """Test subjects' Spearman per arm (mean, std) and mean calibration deciles."""
    test = rows[1:]
    summary = {}
    for arm in ARMS:
        values = [row["arms"][arm]["spearman"] for row in test]
        deciles = [[row["arms"][arm]["deciles"][d] for row in test] for d in range(10)]
        summary[arm] = {
            "spearman": float(np.mean(values)),
            "spearman_std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "deciles": [{"uncertainty": float(np.mean([c["uncertainty"] for c in cells])),
                         "abs_error": float(np.mean([c["abs_error"] for c in cells]))} for cells in deciles],
        }
    return summary


def write_figure(rows: list[dict], summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 5, figsize=(18, 3.6))
    for arm in ARMS[:3]:
        deciles = summary[arm]["deciles"]
        label = f"{arm} ({summary[arm]['spearman']:.2f})"
        axes[0].plot(range(1, 11), [d["abs_error"] for d in deciles], marker="o", label=label)
    axes[0].set(xlabel="uncertainty decile", ylabel="mean |error| (test subjects)", title="calibration")
    axes[0].legend(fontsize=7)
    shown = rows[1]["_figure"]
    axis = 2  # the preprocessed grid is canonical (RAS): axis 2 is inferior-superior
    centre = int(np.round(np.argwhere(shown["mask"])[:, axis].mean()))
    panels = (("truth", shown["truth"], "gray", 1.0), ("estimate", shown["estimate"], "gray", 1.0),
              ("|error|", shown["error"] * shown["mask"], "magma", 0.5),
              ("uncertainty", shown["uncertainty"] * shown["mask"], "magma", 0.25))
    for axis_, (name, volume, colours, high) in zip(axes[1:], panels):
        image = axis_.imshow(np.rot90(np.take(volume, centre, axis=axis)), cmap=colours, vmin=0, vmax=high)
        axis_.set_title(f"{rows[1]['subject']}: {name}", fontsize=8)
        axis_.axis("off")
        figure.colorbar(image, ax=axis_, fraction=0.046)
    figure.tight_layout()
    write_atomically(path, lambda tmp: figure.savefig(tmp, dpi=80, format="png"))
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict:
    args = parse_arguments(argv)
    rows = []
    for index, path in enumerate(args.subjects):
        role = "validation" if index == 0 else "test"
        print(f"[bench_uncertainty] {path} ({role})", flush=True)
        rows.append(run_subject(path, args))
        row = rows[-1]
        print("[bench_uncertainty]   " + ", ".join(f"{arm} {row['arms'][arm]['spearman']:+.3f}" for arm in ARMS)
              + f"; volume {row['volume_psnr']:.2f} dB", flush=True)
    fitted_weight = calibrated_blend_weight(rows[0]["arms"]["blend"]["deciles"])
    summary = summarise(rows)
    print(f"\nvalidation ({rows[0]['subject']}): calibrated blend weight {fitted_weight:.3f} (shipped {BLEND_WEIGHT})")
    print(f"\n{'arm':18s} {'Spearman (test)':>18s}  error per decile, lowest to highest uncertainty")
    for arm in ARMS:
        s = summary[arm]
        print(f"{arm:18s} {s['spearman']:+8.3f} +- {s['spearman_std']:.3f}  "
              + " ".join(f"{d['abs_error']:.3f}" for d in s["deciles"]))
    seconds = {key: float(np.mean([row["seconds"][key] for row in rows])) for key in rows[0]["seconds"]}
    print(f"\nseconds per subject: reconstruction {seconds['reconstruction']:.0f}, ensemble of {args.members} "
          f"{seconds['ensemble']:.0f}, blend {seconds['blend']:.2f}")
    report = {
        "question": "which uncertainty map ranks the 15-view reconstruction's per-voxel absolute error (goal >= 0.4)",
        "settings": to_plain(vars(args)),
        "machine": machine_info(),
        "validation_subject": rows[0]["subject"],
        "shipped_blend_weight": BLEND_WEIGHT,
        "calibrated_blend_weight": fitted_weight,
        "test_summary": summary,
        "seconds_per_subject": seconds,
        "subjects": [{key: value for key, value in row.items() if key != "_figure"} for row in rows],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "uncertainty.json", report)
    write_figure(rows, summary, args.out / "uncertainty.png")
    print(f"[bench_uncertainty] wrote {args.out / 'uncertainty.json'} and uncertainty.png")
    return report


if __name__ == "__main__":
    main()
