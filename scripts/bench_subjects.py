"""The poster's protocol on real subjects: one conditional model on 24 IXI brains, 6 held out, arms side by side.

Questions: does one conditional field hold 24 real brains (the training subjects' held-out views), how well
does what it learned carry to brains it never saw (from their scans alone, then after ``mri-reconstruct`` on
1 and on 15 views), and do the slice encoder, its SE block, its grid head and the adversarial loss help?

Protocol:

- Data: ``--data`` (``../shared/data/ixi-t1``): real whole-head T1s with reference brain masks, prepared with
  those masks; or a root of subject folders (``../shared/data/brats2013-glioma``: glioma patients, T1ce and
  FLAIR, z-scored, with brain masks). A root of subject folders is made of symbolic links under ``--out``
  (the scans are only read). Held out, by name: the last ``--held-out`` subjects (IXI396, IXI437, IXI443,
  IXI452, IXI481, IXI508 with the defaults); the others train, 15 views each.
- Training: this machine's shipped method (``mri-mednerf-gpu`` with CUDA, else ``mri-mednerf``) at
  ``--image-size`` px, ``--steps`` for the full part and ``--arm-steps`` for the arms (600 and 200 by default,
  so that the whole bench fits in an hour on two CPU cores).
- Choices (``--split val``): scored on the val views (14 per subject). Reports (default ``--split test``): the
  test views (43 per subject), or every ``--arm-view-stride``-th of them (24th by default: 2 per subject) for the arms.
- Scores: (a) the training subjects' held-out views; (b) the held-out subjects rendered from their scans
  alone (encoder start: its codes and subject grid from its scans) and from the mean training code (no scans:
  with the mean subject grid), both on the test views, then fitted (code + field, as ``mri-reconstruct
  --finetune-field``, starting from the encoder's prediction, ``--fit-steps``) to 1 view (azimuth 0) and to their
  15 training-orbit views, scored on the other 71 / 57 views.
  PSNR / SSIM per subject and overall with std; FID / KID over all images of a group (the count is given);
  volume PSNR / SSIM on the brain mask.

Arms (stopping rule: one pass, then stop; each arm against the first, paired by seed):

- ``shipped``: encoder with SE and grid head, subject grids, adversarial off (seeds ``--seeds``);
- ``codes only`` (no encoder), ``encoder, no SE``: the first seed only; ``encoder, no grid head`` (the encoder
  predicts codes only) and ``no subject grids``: the same, only with ``--arms`` (measured in round 2);
- ``adversarial burst``: the shipped run with ``lambda_adv`` 0.03 over its last 15 % of steps, branched
  from it at that step (every seed: the two runs share everything before the burst);
- ``adversarial whole run``: ``lambda_adv`` 0.03 from the first step (the first seed).

Writes ``subjects.json`` (after every arm, atomically) and ``subjects_<subject>.png`` for each held-out subject
(truth, render and error of unseen views; mid-slices) to ``--out``.

    .venv/bin/python scripts/bench_subjects.py --out bench_out/subjects       # about an hour on 2 cores
    .venv/bin/python scripts/bench_subjects.py --parts full --out bench_out/subjects   # the full part alone
    .venv/bin/python scripts/bench_subjects.py --quick --out /tmp/subjects    # smoke run, not a result
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from mri_nerfstudio.atomic_write import write_json
from mri_nerfstudio.benchmarking import machine_info
from mri_nerfstudio.encoder_input import cached_encoder_input
from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.json_values import to_plain
from mri_nerfstudio.metrics import fid_kid_from_features, image_features, mean_and_std, view_scores
from mri_nerfstudio.nerf.adversarial import AdversarialConfig
from mri_nerfstudio.nerf.dataparser import nerfstudio_cameras
from mri_nerfstudio.nerf.field_sampling import subject_volume_scores
from mri_nerfstudio.nerf.session import TrainingSession, seed_everything
from mri_nerfstudio.nerf.single_view import (
    initial_grid,
    input_view_occupancy,
    reconstruct_from_view,
    single_subject_model,
    trained_codes,
)
from mri_nerfstudio.nerf.single_view_settings import SingleViewSettings
from mri_nerfstudio.nerf.training_config import shipped_config
from mri_nerfstudio.subject_files import find_subjects, subject_name
from mri_nerfstudio.view_split import orbit_view_split

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ixi-t1"
BURST_FRACTION = 0.15
ADVERSARIAL_WEIGHT = 0.03
TRAINING, ENCODER, MEAN_CODE = "training subjects", "held-out subjects (model)", "held-out subjects (mean code)"
GROUPS = (TRAINING, ENCODER, MEAN_CODE)


@dataclass(frozen=True)
class Arm:
    """One training configuration: a change to the shipped config, and whether it branches off the first arm."""

    name: str
    configure: Callable[[object, int], None] = lambda config, steps: None
    all_seeds: bool = False
    branch_at: float | None = None
    """Fraction of the steps at which the arm starts from the first arm's state (None: trained from scratch)."""
    default: bool = True
    """Run without ``--arms``."""


def _encoder(
    enabled: str, squeeze_excitation: bool = True, grid_features: bool = True
) -> Callable[[object, int], None]:
    def configure(config, steps: int) -> None:
        config.pipeline.model.encoder.enabled = enabled
        config.pipeline.model.encoder.squeeze_excitation = squeeze_excitation
        config.pipeline.model.encoder.grid_features = grid_features

    return configure


def _no_subject_grids(config, steps: int) -> None:
    config.pipeline.model.subject_grid_resolution = 0


def _adversarial(start_fraction: float) -> Callable[[object, int], None]:
    def configure(config, steps: int) -> None:
        config.pipeline.adversarial = AdversarialConfig(
            lambda_adv=ADVERSARIAL_WEIGHT, start_step=round(start_fraction * steps)
        )

    return configure


ARMS = (
    Arm("shipped", all_seeds=True),
    Arm("codes only", _encoder("off")),
    Arm("encoder, no SE", _encoder("on", squeeze_excitation=False)),
    Arm("encoder, no grid head", _encoder("on", grid_features=False), default=False),
    Arm("no subject grids", _no_subject_grids, default=False),
    Arm("adversarial burst", _adversarial(1 - BURST_FRACTION), all_seeds=True, branch_at=1 - BURST_FRACTION),
    Arm("adversarial whole run", _adversarial(0.0)),
)


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA,
                        help="folder of IXI <ID>-*_T1.nii.gz + <ID>-*_brainmask.nii.gz files, or a root of subject "
                        "folders (e.g. ../shared/data/brats2013-glioma)")
    parser.add_argument("--subjects", type=int, default=30, help="subjects used, the first by name")
    parser.add_argument("--held-out", type=int, default=6, help="of which held out: the last by name")
    parser.add_argument("--image-size", type=int, default=64, help="view size, px")
    parser.add_argument("--steps", type=int, default=600, help="training steps of the full part's model")
    parser.add_argument("--arm-steps", type=int, default=200,
                        help="training steps of every arm (when equal to --steps, the full part is the first arm's "
                        "first seed)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the multi-seed arms")
    parser.add_argument("--arms", nargs="+", default=[arm.name for arm in ARMS if arm.default],
                        choices=[arm.name for arm in ARMS],
                        help="arms to run (the first is the reference of the others)")
    parser.add_argument("--arm-view-stride", type=int, default=24,
                        help="arms other than the first seed of the first arm score every N-th held-out view")
    parser.add_argument("--fit-steps", type=int, default=150, help="steps of each held-out subject's fit")
    parser.add_argument("--split", choices=["test", "val"], default="test", help="views scored (val: to choose)")
    parser.add_argument("--parts", nargs="+", choices=["full", "arms"], default=["full", "arms"],
                        help="full: the first arm's first seed on every view, its volumes and the held-out subjects' "
                        "fits; arms: every arm and seed on every --arm-view-stride-th view, paired differences")
    parser.add_argument("--align-head", action="store_true",
                        help="prepare with --prepare.align-head: the orbit turns about each brain's own superior axis")
    parser.add_argument("--cache-dir", type=Path, default=None, help="prepared subjects' cache (default: under --out)")
    parser.add_argument("--out", type=Path, default=Path("bench_out/subjects"), help="folder of subjects.json / .png")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 5 subjects (2 held out), 32 px, 60 steps, 1 seed, val views; not a result")
    args = parser.parse_args(argv)
    if args.quick:
        args.subjects, args.held_out, args.image_size, args.steps, args.arm_steps, args.seeds = 5, 2, 32, 60, 60, [0]
        args.fit_steps, args.split, args.arm_view_stride = 20, "val", 8
    if not 1 <= args.held_out < args.subjects:
        parser.error(f"--held-out must be in 1..{args.subjects - 1}")
    if not args.data.is_dir():
        parser.error(f"--data {args.data}: no such folder (e.g. the IXI T1s of ../shared/data/ixi-t1)")
    return args


def subject_root(data: Path, count: int, root: Path) -> list[str]:
    """``root/<name>`` for the first ``count`` subjects of ``data`` by name, and their names: from a folder of IXI
    scans, a folder of links to ``<ID>-*_T1.nii.gz`` and its brain mask; from a root of subject folders, a link
    to each folder."""
    scans = sorted(data.glob("IXI*_T1.nii.gz"))
    if not scans:
        return _linked_subject_folders(data, count, root)
    if len(scans) < count:
        raise MRIInputError(f"{len(scans)} *_T1.nii.gz files, --subjects asks for {count}", data)
    names = []
    for scan in scans[:count]:
        name = scan.name.split("-")[0]
        mask = scan.with_name(scan.name.replace("_T1.nii.gz", "_brainmask.nii.gz"))
        if not mask.is_file():
            raise MRIInputError(f"no brain mask {mask.name} beside the scan", scan)
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for source in (scan, mask):
            link = folder / source.name
            if not link.is_symlink():
                link.symlink_to(source.resolve())
        names.append(name)
    return names


def _linked_subject_folders(data: Path, count: int, root: Path) -> list[str]:
    folders = [path for path in find_subjects(data) if path.is_dir()]
    if len(folders) < count:
        raise MRIInputError(f"{len(folders)} subject folders, --subjects asks for {count}", data)
    root.mkdir(parents=True, exist_ok=True)
    names = []
    for folder in folders[:count]:
        link = root / subject_name(folder)
        if not link.is_symlink():
            link.symlink_to(folder.resolve(), target_is_directory=True)
        names.append(link.name)
    return names


def inception_features(images: list[torch.Tensor]) -> torch.Tensor:
    """[N, 2048] features of grey images [H, W] in [0, 1]."""
    return image_features(torch.stack(images)[..., None].expand(-1, -1, -1, 3))


@dataclass
class Renders:
    """Held-out views of several subjects: [N, H, W] float renders and truths, with each view's subject and
    eval-dataset index; ``truth_features`` caches the Inception features [2048] of each index's ground truth
    (the same in every arm)."""

    truth_features: dict[int, torch.Tensor]
    renders: list[torch.Tensor] = field(default_factory=list)
    truths: list[torch.Tensor] = field(default_factory=list)
    subjects: list[str] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)

    def add(self, renders: torch.Tensor, truths: torch.Tensor, subject: str, indices: list[int]) -> None:
        self.renders += list(renders)
        self.truths += list(truths)
        self.subjects += [subject] * len(renders)
        self.indices += indices

    def real_features(self) -> torch.Tensor:
        """[N, 2048] features of the truths, computed only for indices not cached yet."""
        missing = [i for i, index in enumerate(self.indices) if index not in self.truth_features]
        if missing:
            for i, features in zip(missing, inception_features([self.truths[i] for i in missing])):
                self.truth_features[self.indices[i]] = features
        return torch.stack([self.truth_features[index] for index in self.indices])

    def scores(self) -> dict:
        """PSNR / SSIM overall and per subject (mean and std over views), FID / KID over every image."""
        renders, truths = torch.stack(self.renders), torch.stack(self.truths)
        overall = view_scores(renders, truths)
        per_subject = {}
        for name in dict.fromkeys(self.subjects):
            rows = [i for i, subject in enumerate(self.subjects) if subject == name]
            per_subject[name] = view_scores(renders[rows], truths[rows])
        psnrs = [s["psnr"] for s in per_subject.values()]
        overall["psnr_subject_std"] = mean_and_std(psnrs)[1]
        overall.update(fid_kid_from_features(self.real_features(), inception_features(self.renders)))
        return {**overall, "images": len(renders), "per_subject": per_subject}


def make_session(
    root: Path, names: list[str], training: list[str], arm: Arm, seed: int, steps: int, args
) -> TrainingSession:
    config = shipped_config(root, args.image_size, args.cache_dir, align_head=args.align_head)
    config.max_num_iterations = steps
    config.pipeline.datamanager.dataparser.train_subjects = tuple(training)
    arm.configure(config, steps)
    seed_everything(seed)
    return TrainingSession(config, args.out / "runs", eval_split=args.split)


def optimizer_states(session: TrainingSession) -> dict[str, dict]:
    """A copy of each optimizer's state (moments, step counts), by param group: what a branch starts from."""
    optimizers = session.trainer.optimizers.optimizers
    return {group: copy.deepcopy(optimizer.state_dict()) for group, optimizer in optimizers.items()}


def eval_indices(session: TrainingSession, names: list[str], stride: int) -> dict[str, list[int]]:
    """Eval-dataset indices per subject name: every ``stride``-th of its held-out views."""
    subject_of = session.pipeline.datamanager.eval_dataset.cameras.metadata["subject_index"][:, 0].round().long()
    return {name: torch.nonzero(subject_of == s).flatten()[::stride].tolist() for s, name in enumerate(names)}


@torch.no_grad()
def render_views(session: TrainingSession, indices: list[int], one_subject=None) -> tuple[torch.Tensor, torch.Tensor]:
    """([N, H, W], [N, H, W]) float renders (the pipeline's eval model: EMA; or ``one_subject``, a
    :func:`single_subject_model`, seen by the same cameras) and truths of eval views."""
    dataset, model = session.pipeline.datamanager.eval_dataset, session.pipeline.model
    renders, truths = [], []
    for index in indices:
        camera = dataset.cameras[index : index + 1].to(model.device)
        if one_subject is not None:
            camera.metadata = None  # rays without a subject render the copy's only one
        outputs = (model if one_subject is None else one_subject).get_outputs_for_camera(camera)
        renders.append(outputs["rgb"].clamp(0, 1).mean(dim=-1).cpu())
        truths.append(dataset[index]["image"][..., :3].mean(dim=-1))
    return torch.stack(renders), torch.stack(truths)


def mean_code_start(session: TrainingSession, name: str, names: list[str], training: list[str]):
    """A held-out subject as a model without its scans starts: the mean training code, the mean subject grid
    (:func:`initial_grid` without scans), and empty space skipped outside the hull of its view 0 (as
    ``mri-reconstruct`` from that view)."""
    model, dataparser = session.pipeline.model, session.pipeline.datamanager.dataparser
    orbit = nerfstudio_cameras(dataparser.subjects[0].cameras)
    view = torch.from_numpy(dataparser.subjects[names.index(name)].images[:1])
    code = trained_codes(model)[[names.index(n) for n in training]].mean(dim=0)
    occupancy = input_view_occupancy(model, view, orbit[0:1])
    return single_subject_model(model, code, occupancy, initial_grid(model)).eval()


def score_model(
    session: TrainingSession, names: list[str], training: list[str], stride: int, full: bool, truth_features: dict
) -> dict:
    """(a) the training subjects' held-out views as the model renders them; (b) the held-out subjects' as the model
    renders them (from their scans alone when the model has an encoder). With ``full``, also (b) from the mean code
    (no scans, as :func:`mean_code_start`) and the volume scores of every group."""
    session.pipeline.eval()
    model, subjects = session.pipeline.model, session.pipeline.datamanager.dataparser.subjects
    groups = {group: Renders(truth_features) for group in GROUPS if full or group != MEAN_CODE}
    volumes: dict[str, list[dict]] = {group: [] for group in groups}
    for name, indices in eval_indices(session, names, stride).items():
        subject = names.index(name)
        if name in training:
            groups[TRAINING].add(*render_views(session, indices), name, indices)
            if full:
                volumes[TRAINING].append(subject_volume_scores(model, subjects[subject], subject))
            continue
        groups[ENCODER].add(*render_views(session, indices), name, indices)
        if full:
            volumes[ENCODER].append(subject_volume_scores(model, subjects[subject], subject))
            start = mean_code_start(session, name, names, training)
            groups[MEAN_CODE].add(*render_views(session, indices, start), name, indices)
            volumes[MEAN_CODE].append(subject_volume_scores(start, subjects[subject], 0))
    result = {group: renders.scores() for group, renders in groups.items()}
    for group, scores in volumes.items():
        for key in ("volume_psnr", "volume_ssim") if scores else ():
            result[group][key], result[group][f"{key}_std"] = mean_and_std([v[key] for v in scores])
    session.pipeline.train()
    return result


def subject_scans(session: TrainingSession, truth):
    """The encoder input of a prepared subject (``truth``), or None when the session's model has no encoder."""
    if session.pipeline.model.encoder is None:
        return None
    grid_size = session.pipeline.datamanager.dataparser.config.encoder_grid_size
    return cached_encoder_input(truth.directory, truth.volume, truth.world_from_voxel, grid_size)


def held_out_fits(session: TrainingSession, names: list[str], training: list[str], args) -> tuple[dict, dict]:
    """(b) every held-out subject fitted (code + field, from the encoder's prediction) to view 0 and to its 15
    training-orbit views, scored on the views not fitted (its starts are scored by :func:`score_model`). Also
    the figure's data."""
    session.pipeline.eval()
    model, dataparser = session.pipeline.model, session.pipeline.datamanager.dataparser
    orbit = nerfstudio_cameras(dataparser.subjects[0].cameras)
    train_views = list(orbit_view_split(dataparser.config.prepare, dataparser.config.train_every).train)
    settings = SingleViewSettings(steps=args.fit_steps, finetune_field=True)
    rows, figure = [], {}
    for name in names:
        if name in training:
            continue
        truth = dataparser.subjects[names.index(name)]
        row = {"subject": name}
        views = torch.from_numpy(truth.images)
        scans = subject_scans(session, truth)
        for label, fitted_views in (("1 view", [0]), ("15 views", train_views)):
            began = time.perf_counter()
            result = reconstruct_from_view(model, orbit, fitted_views, views[fitted_views], settings, truth,
                                           baseline=False, scans=scans)
            row[f"fit, {label}"] = {**result.scores, "seconds": time.perf_counter() - began}
            if label == "1 view":
                figure[name] = {"truth": views, "render": result.renders, "model": result.model, "prepared": truth}
        scores = ", ".join(f"{k} {v['psnr']:.2f} dB" for k, v in row.items() if isinstance(v, dict))
        print(f"    {name}: {scores}", flush=True)
        rows.append(row)
    summary = {}
    for key in [k for k in rows[0] if k != "subject"]:
        summary[key] = {}
        for metric in ("psnr", "ssim", "volume_psnr", "volume_ssim"):
            values = [row[key][metric] for row in rows if metric in row[key]]
            if values:
                summary[key][metric], summary[key][f"{metric}_std"] = mean_and_std(values)
    session.pipeline.train()
    return {"summary": summary, "per_subject": rows}, figure


def write_figure(path: Path, name: str, shown: dict, scores: dict) -> None:
    """``mri-report``'s subject figure of a held-out subject fitted to view 0: unseen views, then mid-slices."""
    from mri_nerfstudio.cli.report import (
        VolumeSlices,
        field_slices,
        mask_centre,
        plane_aspects,
        volume_slices,
        write_subject_figure,
    )
    from mri_nerfstudio.nerf.held_out import HeldOutRender

    def as_uint8(image: torch.Tensor) -> torch.Tensor:
        return (image.clamp(0, 1) * 255).round().to(torch.uint8)[..., None].expand(-1, -1, 3)

    truth, render, prepared = shown["truth"], shown["render"], shown["prepared"]
    views = [9, 18, 36, 54]  # 45, 90, 180, 270 degrees: none of them was fitted
    renders = [
        HeldOutRender(index=v, subject=0, view=v, image=as_uint8(truth[v]), rendering=as_uint8(render[v]),
                      psnr=view_scores(render[v : v + 1], truth[v : v + 1])["psnr"], ssim=float("nan"))
        for v in views
    ]
    centre = mask_centre(prepared)
    volume = VolumeSlices(
        reference=volume_slices(prepared.volume.images[prepared.volume.reference], centre),
        estimate=field_slices(shown["model"], prepared, 0, centre),
        aspects=plane_aspects(prepared),
    )
    title = (f"{name} (held out) fitted to view 0: {scores['psnr']:.1f} dB, SSIM {scores['ssim']:.3f} on the other "
             f"{scores['views']} views")
    write_subject_figure(path, title, renders, volume)


def paired_differences(results: list[dict], reference: str) -> dict:
    """Each arm minus the reference arm, per seed both ran, on the scores every arm has (mean and std over seeds)."""
    keys = {
        "training PSNR": (TRAINING, "psnr"),
        "training SSIM": (TRAINING, "ssim"),
        "training FID": (TRAINING, "fid"),
        "training KID": (TRAINING, "kid"),
        "held-out (model) PSNR": (ENCODER, "psnr"),
    }
    by_arm: dict[str, dict[int, dict]] = {}
    for result in results:
        by_arm.setdefault(result["arm"], {})[result["seed"]] = result["arm_scores"]
    differences = {}
    for arm, seeds in by_arm.items():
        if arm == reference:
            continue
        paired = [seed for seed in seeds if seed in by_arm.get(reference, {})]
        if not paired:
            continue
        differences[arm] = {"seeds": paired}
        for label, (group, metric) in keys.items():
            values = [seeds[s][group][metric] - by_arm[reference][s][group][metric] for s in paired]
            differences[arm][label], differences[arm][f"{label} std"] = mean_and_std(values)
    return differences


def tables(report: dict) -> str:
    lines = [f"{'arm':>24} {'seed':>4} {'training subj. PSNR / SSIM / FID / KID':>40} {'held-out subj. PSNR':>20}"]
    for r in report["runs"]:
        a, h = r["arm_scores"][TRAINING], r["arm_scores"][ENCODER]
        lines.append(f"{r['arm']:>24} {r['seed']:>4} {a['psnr']:>10.2f} / {a['ssim']:.3f} / {a['fid']:6.1f} / "
                     f"{a['kid']:.3f} {h['psnr']:>20.2f} ({a['images']} + {h['images']} images, "
                     f"{r['steps']} steps, {r['train_seconds']:.0f} s)")
    if report.get("paired_differences"):
        lines += ["", f"paired differences against '{report['arms'][0]}' (mean +- std over seeds):"]
        for arm, d in report["paired_differences"].items():
            lines.append(f"{arm:>24}: PSNR {d['training PSNR']:+.2f} +- {d['training PSNR std']:.2f} dB, "
                         f"SSIM {d['training SSIM']:+.4f}, "
                         f"FID {d['training FID']:+.1f} +- {d['training FID std']:.1f}, "
                         f"KID {d['training KID']:+.4f}, held-out PSNR {d['held-out (model) PSNR']:+.2f} dB "
                         f"(seeds {d['seeds']})")
    full = report.get("full_scores")
    if full:
        a = full[TRAINING]
        lines += ["", f"'{report['arms'][0]}', seed {report['seeds'][0]}, {report['full_run']['steps']} steps, every "
                  "held-out view:",
                  f"  (a) training subjects: PSNR {a['psnr']:.2f} +- {a['psnr_std']:.2f} dB (subjects' std "
                  f"{a['psnr_subject_std']:.2f}), SSIM {a['ssim']:.3f}, FID {a['fid']:.1f}, KID {a['kid']:.3f} over "
                  f"{a['images']} images; volume PSNR {a['volume_psnr']:.2f} +- {a['volume_psnr_std']:.2f} dB, "
                  f"SSIM {a['volume_ssim']:.3f}"]
        for group, label in ((ENCODER, "as the model renders them"), (MEAN_CODE, "from the mean code")):
            h = full[group]
            lines.append(f"  (b) held-out subjects {label}: PSNR {h['psnr']:.2f} +- {h['psnr_std']:.2f} dB, SSIM "
                         f"{h['ssim']:.3f}, FID {h['fid']:.1f}, KID {h['kid']:.3f} over {h['images']} images; volume "
                         f"PSNR {h['volume_psnr']:.2f} dB")
        for label, s in report["held_out_fits"]["summary"].items():
            volume = f", volume PSNR {s['volume_psnr']:.2f} dB" if "volume_psnr" in s else ""
            lines.append(f"  (b) {label:>15}: PSNR {s['psnr']:.2f} +- {s['psnr_std']:.2f} dB, "
                         f"SSIM {s['ssim']:.3f}{volume}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    began = time.perf_counter()
    args = parse_arguments(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    args.cache_dir = args.cache_dir or args.out / "cache"
    root = args.out / "subjects"
    names = subject_root(args.data, args.subjects, root)
    training, held_out = names[: -args.held_out], names[-args.held_out :]
    arms = [arm for arm in ARMS if arm.name in args.arms]
    report = {
        "command": " ".join(["scripts/bench_subjects.py", *(argv if argv is not None else sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine_info(),
        "settings": to_plain(vars(args)),
        "training_subjects": training,
        "held_out_subjects": held_out,
        "arms": [arm.name for arm in arms],
        "seeds": args.seeds,
        "runs": [],
    }
    json_path = args.out / ("subjects.json" if len(set(args.parts)) == 2 else f"subjects_{args.parts[0]}.json")
    truth_features: dict[int, torch.Tensor] = {}  # Inception features of the ground truths, by eval index
    print(f"{len(training)} training subjects, held out: {', '.join(held_out)}; {args.image_size} px, "
          f"{args.steps} steps, split {args.split}", flush=True)
    first, with_arms, with_full = arms[0], "arms" in args.parts, "full" in args.parts
    shared = with_full and with_arms and args.arm_steps == args.steps  # the full part is the first arm's first seed
    if with_full and not shared:
        session = make_session(root, names, training, first, args.seeds[0], args.steps, args)
        while session.step_count < args.steps:
            session.step()
        record_full(report, session, names, training, args, truth_features)
        write_json(json_path, report)
        del session
    for seed in args.seeds if with_arms else []:
        branches = [arm for arm in arms[1:] if arm.branch_at is not None and arm.all_seeds]
        session = make_session(root, names, training, first, seed, args.arm_steps, args)
        snapshots = {}
        while session.step_count < args.arm_steps:
            for arm in branches:
                if session.step_count == round(arm.branch_at * args.arm_steps):
                    snapshots[arm.name] = (session.step_count, copy.deepcopy(session.pipeline.state_dict()),
                                           optimizer_states(session), session.train_seconds)
            session.step()
        record_run(report, session, first, seed, names, training, args, truth_features)
        if shared and seed == args.seeds[0]:
            record_full(report, session, names, training, args, truth_features)
        write_json(json_path, report)
        del session
        for arm in branches:
            branch = make_session(root, names, training, arm, seed, args.arm_steps, args)
            step, state, optimizers, seconds = snapshots[arm.name]
            branch.pipeline.load_state_dict(state, strict=False)  # the discriminator starts fresh
            for group, optimizer_state in optimizers.items():
                branch.trainer.optimizers.optimizers[group].load_state_dict(optimizer_state)
            branch.step_count, branch.train_seconds = step, seconds
            while branch.step_count < args.arm_steps:
                branch.step()
            record_run(report, branch, arm, seed, names, training, args, truth_features)
            write_json(json_path, report)
    for arm in arms[1:] if with_arms else []:
        if arm.all_seeds and arm.branch_at is not None:
            continue
        for seed in args.seeds if arm.all_seeds else args.seeds[:1]:
            session = make_session(root, names, training, arm, seed, args.arm_steps, args)
            while session.step_count < args.arm_steps:
                session.step()
            record_run(report, session, arm, seed, names, training, args, truth_features)
            write_json(json_path, report)
    if with_arms:
        report["paired_differences"] = paired_differences(report["runs"], first.name)
    report["seconds"] = time.perf_counter() - began
    write_json(json_path, report)
    print("\n" + tables(report))
    print(f"\nJSON: {json_path} ({report['seconds'] / 60:.0f} min)")


def record_run(
    report: dict, session: TrainingSession, arm: Arm, seed: int, names, training, args, truth_features
) -> None:
    """Score a trained arm on every ``--arm-view-stride``-th held-out view."""
    began = time.perf_counter()
    scores = score_model(session, names, training, args.arm_view_stride, False, truth_features)
    run = {"arm": arm.name, "seed": seed, "steps": session.step_count, "train_seconds": session.train_seconds,
           "arm_scores": scores, "score_seconds": time.perf_counter() - began}
    report["runs"].append(run)
    a, h = scores[TRAINING], scores[ENCODER]
    print(f"{arm.name:>24} seed {seed}: training subjects {a['psnr']:.2f} dB / {a['ssim']:.3f} / FID {a['fid']:.1f}, "
          f"held-out subjects (model) {h['psnr']:.2f} dB "
          f"({session.train_seconds:.0f} s training, {run['score_seconds']:.0f} s scoring)", flush=True)


def record_full(report: dict, session: TrainingSession, names, training, args, truth_features) -> None:
    """The full part: every held-out view and the volumes of the first arm's first seed, the held-out subjects'
    fits and their figures."""
    began = time.perf_counter()
    report["full_run"] = {"steps": session.step_count, "train_seconds": session.train_seconds}
    report["full_scores"] = score_model(session, names, training, 1, True, truth_features)
    report["full_run"]["view_score_seconds"] = time.perf_counter() - began
    report["held_out_fits"], figure = held_out_fits(session, names, training, args)
    for row in report["held_out_fits"]["per_subject"]:
        name = row["subject"]
        write_figure(args.out / f"subjects_{name}.png", name, figure[name], row["fit, 1 view"])
    report["full_run"]["score_seconds"] = time.perf_counter() - began
    print(f"full part: {session.train_seconds:.0f} s training, {report['full_run']['score_seconds']:.0f} s scoring "
          "and fitting", flush=True)


if __name__ == "__main__":
    main()
