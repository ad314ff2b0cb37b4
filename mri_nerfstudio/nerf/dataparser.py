"""``mri-data``: prepared MRI subjects as nerfstudio cameras and in-memory images.

Every subject contributes the same orbit of views (72 at 5 degrees by default); view ``i`` of every
subject is a training view when ``i % train_every == 0`` (15 of 72) and a held-out view otherwise (57).
"val" (evaluation during training) and "test" (ns-eval, ns-render) both use the held-out views.

On top of the view split, a subject split (``--train-subjects``): only the training subjects' training
views are trained on; the other subjects are held out entirely (reconstructed from their scans by the
slice encoder) and their held-out views are evaluated with everyone else's. The slice encoder's input of
every subject (:mod:`mri_nerfstudio.encoder_input`) is prepared once, cached next to the subject, and
passed to the model in the metadata.

The world frame is the one of :mod:`mri_nerfstudio.views`: each subject's brain centred in the unit
sphere, world +Z = superior. This module must not import datamanagers, pipelines or method configs
(nerfstudio drops a dataparser entry point that does, see NERFSTUDIO_NOTES.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Tuple, Type

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.scene_box import SceneBox
from rich.console import Console

from mri_nerfstudio.encoder_input import DEFAULT_GRID_SIZE, cached_encoder_input
from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.prepare import DEFAULT_SUBJECT, PrepareConfig, PreparedSubject, default_cache_dir, prepare_subjects
from mri_nerfstudio.views import ViewCameras

CONSOLE = Console()


def nerfstudio_cameras(cameras: ViewCameras, metadata: dict[str, torch.Tensor] | None = None) -> Cameras:
    """nerfstudio :class:`Cameras` of the views' cameras (orthographic: ``ORTHOPHOTO``), with per-camera ``metadata``."""
    return Cameras(
        camera_to_worlds=cameras.c2w.float(),
        fx=float(cameras.fx),
        fy=float(cameras.fy),
        cx=float(cameras.cx),
        cy=float(cameras.cy),
        width=cameras.width,
        height=cameras.height,
        camera_type=CameraType.ORTHOPHOTO if cameras.projection == "orthographic" else CameraType.PERSPECTIVE,
        metadata=metadata,
    )


@dataclass
class MRIDataParserConfig(DataParserConfig):
    """MRI subjects (BraTS 2021 root, one subject, one NIfTI/NRRD file, or the embedded MNI152 template)."""

    _target: Type = field(default_factory=lambda: MRIDataParser)
    data: Path = Path(DEFAULT_SUBJECT)
    """A BraTS 2021 root, a subject folder, a NIfTI/NRRD/MHA file, or 'default' for the embedded MNI152 template."""
    cache_dir: Path = field(default_factory=default_cache_dir)
    """Where prepared subjects are cached (keyed by a hash of the inputs and the settings)."""
    train_every: int = 5
    """View i is a training view when i % train_every == 0 (15 of 72 views); the rest are held out."""
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    """Preprocessing and view settings."""
    train_subjects: Tuple[str, ...] = ()
    """Subjects to train on: empty = all; one number N = the first N (sorted by name); else subject names.
    The others are held out: never trained on, evaluated on their held-out views."""
    encoder_grid_size: int = DEFAULT_GRID_SIZE
    """Cells per axis of the slice encoder's working grid (a multiple of 8)."""


@dataclass
class MRIDataParser(DataParser):
    """Builds cameras, images and metadata from prepared subjects (prepared once, then cached)."""

    config: MRIDataParserConfig

    def __init__(self, config: MRIDataParserConfig):
        super().__init__(config=config)
        if config.train_every < 2:
            raise MRIInputError(f"train_every must be >= 2 (some views must be held out), got {config.train_every}")
        if config.encoder_grid_size < 8 or config.encoder_grid_size % 8:
            raise MRIInputError(f"encoder_grid_size must be a multiple of 8, got {config.encoder_grid_size}")
        self._subjects: list[PreparedSubject] | None = None

    @property
    def subjects(self) -> list[PreparedSubject]:
        if self._subjects is None:
            data = None if str(self.config.data) == DEFAULT_SUBJECT else self.config.data
            self._subjects = prepare_subjects(
                data, self.config.cache_dir, self.config.prepare, progress=lambda m: CONSOLE.print(f"[mri-data] {m}")
            )
        return self._subjects

    def view_indices(self, split: Literal["train", "val", "test"] | str) -> list[int]:
        """Indices into the orbit that belong to ``split``."""
        n_views = self.config.prepare.n_views
        if split == "train":
            return [i for i in range(n_views) if i % self.config.train_every == 0]
        return [i for i in range(n_views) if i % self.config.train_every != 0]

    def training_subjects(self) -> list[int]:
        """Indices (into :attr:`subjects`) of the subjects trained on, from ``train_subjects``."""
        names = [subject.name for subject in self.subjects]
        return select_training_subjects(names, self.config.train_subjects)

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        indices = self.view_indices(split)
        training = self.training_subjects()
        split_subjects = training if split == "train" else range(len(self.subjects))
        c2w, images, filenames, subject_index, view_index = [], [], [], [], []
        for s in split_subjects:
            subject = self.subjects[s]
            c2w.append(subject.cameras.c2w[indices])
            images.append(torch.from_numpy(subject.images[indices]))
            filenames += [subject.directory / "views" / f"view_{i:03d}.png" for i in indices]
            subject_index += [s] * len(indices)
            view_index += indices

        first = self.subjects[0].cameras
        n = len(filenames)
        CONSOLE.print(f"[mri-data] {split}: {n} views ({len(split_subjects)} subject(s) x {len(indices)})")
        cameras = nerfstudio_cameras(
            ViewCameras(torch.cat(c2w), width=first.width, height=first.height, projection=first.projection),
            metadata={"subject_index": torch.tensor(subject_index, dtype=torch.float32).reshape(n, 1)},
        )
        settings = self.config.prepare
        return DataparserOutputs(
            image_filenames=filenames,
            cameras=cameras,
            scene_box=SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])),
            metadata={
                "images": torch.cat(images),
                "view_index": torch.tensor(view_index),
                "subject_names": [subject.name for subject in self.subjects],
                "prepared_dirs": [str(subject.directory) for subject in self.subjects],
                "brain_masks": [torch.from_numpy(subject.volume.brain_mask()) for subject in self.subjects],
                "world_from_voxel": [torch.from_numpy(subject.world_from_voxel) for subject in self.subjects],
                "view_mode": settings.view_mode,
                "density_scale": settings.density_scale,
                "camera_radius": settings.camera_radius,
                "train_subjects": training,
                **self._encoder_inputs(),
            },
        )

    def _encoder_inputs(self) -> dict[str, torch.Tensor]:
        """``encoder_scans`` [N, C, G, G, G], ``encoder_present`` [N, C], ``encoder_spacing_mm`` [N, 3]."""
        inputs = [
            cached_encoder_input(
                subject.directory, subject.volume, subject.world_from_voxel, self.config.encoder_grid_size
            )
            for subject in self.subjects
        ]
        return {
            "encoder_scans": torch.from_numpy(np.stack([item.scans for item in inputs])),
            "encoder_present": torch.from_numpy(np.stack([item.present for item in inputs])),
            "encoder_spacing_mm": torch.from_numpy(np.stack([item.spacing_mm for item in inputs])),
        }


def select_training_subjects(names: list[str], selection: Tuple[str, ...]) -> list[int]:
    """Indices into ``names`` of the training subjects (see ``MRIDataParserConfig.train_subjects``)."""
    if not selection:
        return list(range(len(names)))
    if len(selection) == 1 and selection[0].isdigit():
        count = int(selection[0])
        if not 1 <= count <= len(names):
            raise MRIInputError(f"train_subjects: {count} requested, expected 1..{len(names)} (the data has {len(names)})")
        order = sorted(range(len(names)), key=lambda i: names[i])
        return sorted(order[:count])
    missing = [name for name in selection if name not in names]
    if missing:
        raise MRIInputError(f"train_subjects: {missing} not in the data; its subjects are {names}")
    return [i for i, name in enumerate(names) if name in selection]
