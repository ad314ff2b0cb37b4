"""Session fixtures shared by every test file: tiny SIMULATED BraTS and IXI-named subjects, written once per session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mri_nerfstudio.phantom import PhantomConfig, make_phantom, write_brats_root
from mri_nerfstudio.volume import save_nifti


@pytest.fixture(scope="session")
def phantom_config_tiny() -> PhantomConfig:
    """A BraTS-like phantom on a 40 x 48 x 36 grid of 4 mm voxels: about 0.1 s each once the templates are loaded."""
    return PhantomConfig(shape=(40, 48, 36), spacing_mm=4.0)


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory: pytest.TempPathFactory, phantom_config_tiny: PhantomConfig) -> Path:
    """A BraTS root with two tiny subjects, BraTS2021_00000 (seed 0) and BraTS2021_00001 (seed 1)."""
    root = tmp_path_factory.mktemp("brats")
    write_brats_root(root, n=2, seed=0, config=phantom_config_tiny)
    return root


@pytest.fixture(scope="session")
def phantom_subject_dir(phantom_root: Path) -> Path:
    """The first subject folder of :func:`phantom_root`."""
    return phantom_root / "BraTS2021_00000"


@pytest.fixture(scope="session")
def tiny_method_config():
    """Factory of the shipped ``mri-mednerf`` config shrunk for CPU tests.

    ``make(data, cache_dir, **prepare)``: the CPU preset (with its learning rate) on the CPU, 16 / 32-vertex
    grids, 24 samples per ray, 256 rays in 8 x 8 patches per step, views of 24 px (``prepare`` overrides
    :class:`~mri_nerfstudio.prepare.PrepareConfig`).
    """
    import torch

    from mri_nerfstudio.nerf.training_config import shipped_config

    def make(data: Path, cache_dir: Path, **prepare):
        torch.manual_seed(0)
        image_size = prepare.pop("image_size", 24)
        config = shipped_config(data, image_size, cache_dir, preset="cpu", device="cpu", **prepare)
        config.pipeline.model.grid_resolutions = (16, 32)
        config.pipeline.model.num_samples = 24
        datamanager = config.pipeline.datamanager
        datamanager.train_num_rays_per_batch = 256
        datamanager.patch_size = 8
        return config

    return make


@pytest.fixture(scope="session")
def ns_train_cli():
    """``parse(arguments)``: the ``TrainerConfig`` that ``ns-train *arguments`` would train, parsed by tyro with the
    shipped methods as subcommands, as nerfstudio's ``ns-train`` builds them (its ``AnnotatedBaseConfigUnion``),
    but from the worktree's method configs instead of the installed entry points. ``--help`` prints the help text
    to stdout and raises ``SystemExit``."""
    import tyro

    from mri_nerfstudio.nerf.method_config import mri_mednerf, mri_mednerf_gpu

    methods = (mri_mednerf, mri_mednerf_gpu)
    union = tyro.conf.SuppressFixed[
        tyro.conf.FlagConversionOff[
            tyro.extras.subcommand_type_from_defaults(
                defaults={method.config.method_name: method.config for method in methods},
                descriptions={method.config.method_name: method.description for method in methods},
            )
        ]
    ]

    def parse(arguments):
        return tyro.cli(union, args=list(arguments))

    return parse


@pytest.fixture(scope="session")
def trained_phantom_run(tiny_method_config, phantom_subject_dir, tmp_path_factory) -> Path:
    """config.yml of an ``mri-mednerf`` run trained 200 steps on BraTS2021_00000 alone (72 views of 24 px, 15 for
    training), with its checkpoint; BraTS2021_00001 stays unseen. About 20 s on two CPU cores."""
    from mri_nerfstudio.nerf.session import TrainingSession

    config = tiny_method_config(phantom_subject_dir, tmp_path_factory.mktemp("cache"))
    session = TrainingSession(config, tmp_path_factory.mktemp("outputs"))
    for _ in range(200):
        session.step()
    session.trainer.config.save_config()
    session.trainer.save_checkpoint(session.step_count)
    return session.trainer.config.get_base_dir() / "config.yml"


@pytest.fixture(scope="session")
def phantom_root_4(tmp_path_factory: pytest.TempPathFactory, phantom_config_tiny: PhantomConfig) -> Path:
    """A BraTS root with four tiny subjects (seeds 0..3): multi-subject training and subject splits."""
    root = tmp_path_factory.mktemp("brats4")
    write_brats_root(root, n=4, seed=0, config=phantom_config_tiny)
    return root


@pytest.fixture(scope="session")
def tiny_encoder_model():
    """Factory of a tiny ``cpu``-preset model with the slice encoder on random 8^3 scans (no data needed).

    ``make(num_subjects=3, **config_overrides)``: subjects ``s0, s1, ...``, subject s's scans scaled by (s + 1) / 4.
    """
    import torch
    from nerfstudio.data.scene_box import SceneBox

    from mri_nerfstudio.nerf.model import MRIMedNeRFModelConfig

    def make(num_subjects: int = 3, **overrides):
        torch.manual_seed(0)
        tiny = dict(preset="cpu", grid_resolutions=(4, 8), grid_channels=2, grid_width=8, num_samples=8)
        config = MRIMedNeRFModelConfig(**{**tiny, **overrides})
        brightness = (1 + torch.arange(num_subjects).float())[:, None, None, None, None] / 4
        metadata = {
            "view_mode": "volume",
            "density_scale": 3.0,
            "subject_names": [f"s{i}" for i in range(num_subjects)],
            "encoder_scans": torch.rand(num_subjects, 4, 8, 8, 8) * brightness,
            "encoder_present": torch.ones(num_subjects, 4),
            "encoder_spacing_mm": torch.ones(num_subjects, 3),
        }
        scene_box = SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
        return config.setup(scene_box=scene_box, num_train_data=4, metadata=metadata)

    return make


@pytest.fixture(scope="session")
def head_phantom_config() -> PhantomConfig:
    """A whole-head phantom (CSF, skull, scalp, noisy air; not skull-stripped) on a 48 x 56 x 48 grid of 4 mm
    voxels: it holds the head with the brain centred (the 40 x 48 x 36 tiny grid does not; 44 x 53 x 46 would)."""
    return PhantomConfig(shape=(48, 56, 48), spacing_mm=4.0, head=True)


@pytest.fixture(scope="session")
def head_phantom(head_phantom_config: PhantomConfig):
    """The seed-0 :func:`head_phantom_config` phantom in memory (``.brain`` is its true brain mask)."""
    return make_phantom(0, head_phantom_config)


@pytest.fixture(scope="session")
def ixi_like_folder(tmp_path_factory, phantom_config_tiny) -> Path:
    """Four SIMULATED subjects named as the IXI files are: ``IXI90N-HH-000N_T1.nii.gz`` + ``_brainmask``."""
    folder = tmp_path_factory.mktemp("ixi")
    for seed in range(4):
        phantom = make_phantom(seed, phantom_config_tiny)
        stem = f"IXI90{seed}-HH-000{seed}"
        save_nifti(phantom.images["t1"].astype(np.float32), phantom.affine, folder / f"{stem}_T1.nii.gz")
        save_nifti(phantom.brain.astype(np.uint8), phantom.affine, folder / f"{stem}_brainmask.nii.gz")
    return folder


@pytest.fixture(scope="session")
def template_tilt_deg() -> float:
    """The pitch of :func:`tilted_template_folder`'s head in the scanner, degrees."""
    return 20.0


@pytest.fixture(scope="session")
def tilted_template_folder(tmp_path_factory, template_tilt_deg) -> Path:
    """The 2 mm MNI152 template (T1 + brain mask) written with its grid pitched ``template_tilt_deg`` in the
    scanner (about the left-right axis), as a subject folder ``tilted/``."""
    from mri_nerfstudio.volume import load_default_subject

    template = load_default_subject(resolution_mm=2)
    angle = np.radians(template_tilt_deg)
    tilt = np.eye(4)
    tilt[1:3, 1:3] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    folder = tmp_path_factory.mktemp("tilted") / "tilted"
    folder.mkdir()
    save_nifti(template.images["t1"], tilt @ template.affine, folder / "tilted_t1.nii.gz")
    save_nifti(template.brain_mask().astype(np.uint8), tilt @ template.affine, folder / "tilted_brainmask.nii.gz")
    return folder
