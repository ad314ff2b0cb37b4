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

``--conditional``: the held-out subjects of one conditional model instead (``bench_subjects``' protocol:
``--training-subjects`` IXI brains train, the next ``--held-out`` by name are reconstructed from their 15
training-orbit views as ``mri-reconstruct --finetune-field`` does, starting from the encoder's prediction).
Its arms replace the ensemble by the **population** term: the spread, at each voxel, of the model's other
subjects' volumes sampled at the same normalised points: where brains differ from one another, what the
prior fills in is least sure. The first ``--validation`` held-out subjects
choose (the blend weight, and whether ``blend + population`` ranks better than ``blend``, by >= 0.03); the
others are the test subjects. Writes ``uncertainty_conditional.json`` / ``.png``.

    .venv/bin/python scripts/bench_uncertainty.py --out benchmarks     # about 25 min on 2 cores
    .venv/bin/python scripts/bench_uncertainty.py --conditional --steps 600 --out benchmarks   # about 10 min
    .venv/bin/python scripts/bench_uncertainty.py --quick --out /tmp/u  # smoke run on the template
"""

from __future__ import annotations

import argparse
import sys
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
CONDITIONAL_ARMS = ("blend", "population", "blend + population", "oracle")
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
    parser.add_argument("--conditional", action="store_true",
                        help="held-out subjects of one conditional model, with the population term (see above)")
    parser.add_argument("--ixi", type=Path, default=DATA / "ixi-t1",
                        help="--conditional: folder of <ID>_T1.nii.gz + <ID>_brainmask.nii.gz files")
    parser.add_argument("--training-subjects", type=int, default=24, help="--conditional: the first by name")
    parser.add_argument("--held-out", type=int, default=6, help="--conditional: the next by name")
    parser.add_argument("--validation", type=int, default=2, help="--conditional: held-out subjects that choose")
    parser.add_argument("--fit-steps", type=int, default=150, help="--conditional: steps of each 15-view fit")
    args = parser.parse_args(argv)
    if args.quick:
        args.subjects, args.image_size, args.steps, args.members = ["default", "default"], 16, 4, 2
    if len(args.subjects) < 2:
        parser.error("--subjects needs a validation subject and at least one test subject")
    if args.conditional and not 1 <= args.validation < args.held_out:
        parser.error(f"--validation must be in 1..{args.held_out - 1} (at least one held-out subject is a test one)")
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
    ensemble = ensemble_spread([estimate, *[reconstruct_in_mask(member.model, prepared, 0) for member in members]])
    seconds = {"reconstruction": main[0].seconds, "ensemble": sum(m.seconds for m in members)}
    return scored_maps(prepared, path, estimate, "ensemble", ensemble, seconds)


def scored_maps(prepared, path: str, estimate: np.ndarray, term: str, spread: np.ndarray, seconds: dict) -> dict:
    """One subject's row: the blend map, ``term``'s ``spread`` [X, Y, Z], both (variances added) and the oracle,
    each scored against the absolute error of ``estimate`` inside the brain mask; ``seconds`` gains the blend's."""
    reference, mask = prepared.volume.images[prepared.volume.reference], prepared.volume.brain_mask()
    error = np.abs(estimate - reference)
    start = time.perf_counter()
    blend = blend_spread(estimate)
    seconds = {**seconds, "blend": time.perf_counter() - start}
    smoothed = ndimage.gaussian_filter(error * mask, ORACLE_SIGMA_VOXELS)
    oracle = smoothed / np.maximum(ndimage.gaussian_filter(mask.astype(np.float64), ORACLE_SIGMA_VOXELS), 1e-6)
    both = predictive_spread(estimate, spread)
    maps = {"blend": blend, term: spread, f"blend + {term}": both, "oracle": oracle}
    return {
        "subject": prepared.name,
        "path": path,
        **volume_fidelity(estimate, reference, mask),
        "arms": {arm: uncertainty_calibration(value, error, mask) for arm, value in maps.items()},
        "seconds": seconds,
        "_figure": {"truth": reference, "estimate": estimate, "error": error, "uncertainty": both, "mask": mask},
    }


def run_conditional(args: argparse.Namespace) -> list[dict]:
    """One conditional model on ``--training-subjects`` IXI brains; each held-out subject reconstructed from its
    15 training-orbit views (code + field from the encoder's start), its maps scored (population term: the
    spread of every other subject of the model, sampled on its grid)."""
    import torch
    from bench_subjects import ARMS as SUBJECT_ARMS
    from bench_subjects import make_session, subject_root, subject_scans

    from mri_nerfstudio.nerf.dataparser import nerfstudio_cameras
    from mri_nerfstudio.nerf.single_view import fit_single_view
    from mri_nerfstudio.nerf.single_view_settings import SingleViewSettings

    root = args.out / "conditional_subjects"
    names = subject_root(args.ixi, args.training_subjects + args.held_out, root)
    training = names[: args.training_subjects]
    session_args = argparse.Namespace(image_size=args.image_size, cache_dir=args.cache_dir or args.out / "cache",
                                      out=args.out, split="val", align_head=False)
    session = make_session(root, names, training, SUBJECT_ARMS[0], 0, args.steps, session_args)
    while session.step_count < args.steps:
        session.step()
    session.pipeline.eval()
    model, dataparser = session.pipeline.model, session.pipeline.datamanager.dataparser
    orbit = nerfstudio_cameras(dataparser.subjects[0].cameras)
    train_views = list(orbit_view_split(dataparser.config.prepare, dataparser.config.train_every).train)
    settings = SingleViewSettings(steps=args.fit_steps, finetune_field=True)
    rows = []
    for index, name in enumerate(names):
        if name in training:
            continue
        truth = dataparser.subjects[index]
        began = time.perf_counter()
        fitted, _ = fit_single_view(model, torch.from_numpy(truth.images[train_views]),
                                    orbit[torch.tensor(train_views)], settings, subject_scans(session, truth))
        estimate = reconstruct_in_mask(fitted, truth, 0)
        seconds = {"reconstruction": time.perf_counter() - began}
        began = time.perf_counter()
        others = [subject for subject in range(model.num_subjects) if subject != index]
        population = ensemble_spread([reconstruct_in_mask(model, truth, subject) for subject in others])
        seconds["population"] = time.perf_counter() - began
        rows.append(scored_maps(truth, name, estimate, "population", population, seconds))
        row = rows[-1]
        spearman = ", ".join(f"{arm} {value['spearman']:+.3f}" for arm, value in row["arms"].items())
        print(f"[bench_uncertainty]   {name}: {spearman}; volume {row['volume_psnr']:.2f} dB", flush=True)
    return rows


def calibrated_blend_weight(deciles: list[dict]) -> float:
    """The blend weight whose map, per decile, best predicts the mean absolute error as a Gaussian would
    (``sqrt(2 / pi) * sigma``; least squares), from deciles of the map at ``BLEND_WEIGHT``."""
    sigma = np.sqrt(2 / np.pi) * np.array([decile["uncertainty"] for decile in deciles])
    error = np.array([decile["abs_error"] for decile in deciles])
    scale = float(error @ sigma / (sigma @ sigma))  # sigma grows with sqrt(weight)
    return BLEND_WEIGHT * scale**2


def summarise(rows: list[dict], arms: tuple[str, ...], validation: int) -> dict:
    """Test subjects' (all but the first ``validation`` rows) Spearman per arm (mean, std) and mean calibration
    deciles."""
    test = rows[validation:]
    summary = {}
    for arm in arms:
        values = [row["arms"][arm]["spearman"] for row in test]
        deciles = [[row["arms"][arm]["deciles"][d] for row in test] for d in range(10)]
        summary[arm] = {
            "spearman": float(np.mean(values)),
            "spearman_std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "deciles": [{"uncertainty": float(np.mean([c["uncertainty"] for c in cells])),
                         "abs_error": float(np.mean([c["abs_error"] for c in cells]))} for cells in deciles],
        }
    return summary


def write_figure(shown: dict, summary: dict, arms: tuple[str, ...], path: Path) -> None:
    """Calibration curves of the three maps, and mid-slices of the row ``shown`` (a test subject)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 5, figsize=(18, 3.6))
    for arm in arms[:3]:
        deciles = summary[arm]["deciles"]
        label = f"{arm} ({summary[arm]['spearman']:.2f})"
        axes[0].plot(range(1, 11), [d["abs_error"] for d in deciles], marker="o", label=label)
    axes[0].set(xlabel="uncertainty decile", ylabel="mean |error| (test subjects)", title="calibration")
    axes[0].legend(fontsize=7)
    volumes = shown["_figure"]
    axis = 2  # the preprocessed grid is canonical (RAS): axis 2 is inferior-superior
    centre = int(np.round(np.argwhere(volumes["mask"])[:, axis].mean()))
    panels = (("truth", volumes["truth"], "gray", 1.0), ("estimate", volumes["estimate"], "gray", 1.0),
              ("|error|", volumes["error"] * volumes["mask"], "magma", 0.5),
              (arms[2], volumes["uncertainty"] * volumes["mask"], "magma", 0.25))
    for axis_, (name, volume, colours, high) in zip(axes[1:], panels):
        image = axis_.imshow(np.rot90(np.take(volume, centre, axis=axis)), cmap=colours, vmin=0, vmax=high)
        axis_.set_title(f"{shown['subject']}: {name}", fontsize=8)
        axis_.axis("off")
        figure.colorbar(image, ax=axis_, fraction=0.046)
    figure.tight_layout()
    write_atomically(path, lambda tmp: figure.savefig(tmp, dpi=80, format="png"))
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict:
    began = time.perf_counter()
    args = parse_arguments(argv)
    if args.conditional:
        arms, validation, stem = CONDITIONAL_ARMS, args.validation, "uncertainty_conditional"
        print(f"[bench_uncertainty] one model of {args.training_subjects} subjects, {args.held_out} held out "
              f"(the first {validation} validate)", flush=True)
        rows = run_conditional(args)
    else:
        arms, validation, stem, rows = ARMS, 1, "uncertainty", []
        for index, path in enumerate(args.subjects):
            print(f"[bench_uncertainty] {path} ({'validation' if index == 0 else 'test'})", flush=True)
            rows.append(run_subject(path, args))
            row = rows[-1]
            print("[bench_uncertainty]   " + ", ".join(f"{arm} {row['arms'][arm]['spearman']:+.3f}" for arm in arms)
                  + f"; volume {row['volume_psnr']:.2f} dB", flush=True)
    fitted_weight = float(np.mean([calibrated_blend_weight(row["arms"]["blend"]["deciles"])
                                   for row in rows[:validation]]))
    validation_spearman = {arm: float(np.mean([row["arms"][arm]["spearman"] for row in rows[:validation]]))
                           for arm in arms}
    summary = summarise(rows, arms, validation)
    names = ", ".join(row["subject"] for row in rows[:validation])
    print(f"\nvalidation ({names}): calibrated blend weight {fitted_weight:.3f} (shipped {BLEND_WEIGHT}); Spearman "
          + ", ".join(f"{arm} {value:+.3f}" for arm, value in validation_spearman.items()))
    print(f"\n{'arm':18s} {'Spearman (test)':>18s}  error per decile, lowest to highest uncertainty")
    for arm in arms:
        s = summary[arm]
        print(f"{arm:18s} {s['spearman']:+8.3f} +- {s['spearman_std']:.3f}  "
              + " ".join(f"{d['abs_error']:.3f}" for d in s["deciles"]))
    seconds = {key: float(np.mean([row["seconds"][key] for row in rows])) for key in rows[0]["seconds"]}
    print("\nseconds per subject: " + ", ".join(f"{key} {value:.2f}" for key, value in seconds.items()))
    report = {
        "question": "which uncertainty map ranks the 15-view reconstruction's per-voxel absolute error (goal >= 0.4)",
        "command": " ".join(["scripts/bench_uncertainty.py", *(argv if argv is not None else sys.argv[1:])]),
        "settings": to_plain(vars(args)),
        "machine": machine_info(),
        "validation_subjects": [row["subject"] for row in rows[:validation]],
        "validation_spearman": validation_spearman,
        "shipped_blend_weight": BLEND_WEIGHT,
        "calibrated_blend_weight": fitted_weight,
        "test_summary": summary,
        "seconds_per_subject": seconds,
        "seconds": time.perf_counter() - began,
        "subjects": [{key: value for key, value in row.items() if key != "_figure"} for row in rows],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / f"{stem}.json", report)
    write_figure(rows[validation], summary, arms, args.out / f"{stem}.png")
    print(f"[bench_uncertainty] wrote {args.out / stem}.json and {stem}.png")
    return report


if __name__ == "__main__":
    main()
