"""``mri-data``: prepared MRI subjects as nerfstudio cameras and in-memory images.

Every subject contributes the same orbit of views (72 at 5 degrees by default), split by view index
(:mod:`mri_nerfstudio.view_split`): "train" when ``i % train_every == 0`` (15 of 72), "val" (the
Trainer's evaluation during ``ns-train``, what settings are chosen on) when ``i % val_every ==
val_offset`` (14), "test" (``ns-eval``, ``ns-render dataset``, the benchmarks) the rest (43). In the
``drr`` and ``mip`` modes, held-out views that are mirror copies of training views are left out of val
and test (15 of the test views with the defaults: test keeps 28).

On top of the view split, a subject split (``--train-subjects``): only the training subjects' training
views are trained on; the other subjects are held out entirely (reconstructed from their scans by the
slice encoder) and their held-out views are evaluated with everyone else's. The slice encoder's input of
every subject (:mod:`mri_nerfstudio.encoder_input`) is prepared once, cached next to the subject, and
passed to the model in the metadata.

The world frame is the one of :mod:`mri_nerfstudio.views`: each subject's brain centred in the unit
sphere, world +Z = superior. This module must not import datamanagers, pipelines or method configs
(nerfstudio drops a dataparser entry point that does, see docs/architecture.md, "Plugin registration").
"""

from __future__ import annotations

import warnings
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
from mri_nerfstudio.subject_files import select_subjects
from mri_nerfstudio.view_split import (
    DEFAULT_TRAIN_EVERY,
    DEFAULT_VAL_EVERY,
    DEFAULT_VAL_OFFSET,
    ViewSplit,
    count_line,
    orbit_view_split,
    restrict_training_views,
)
from mri_nerfstudio.views import ViewCameras

CONSOLE = Console()


def _print_preparation_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning of preparation (a brain cut off by the field of view, an implausible brain volume) as one line
    among its progress, not Python's two lines pointing into this package."""
    CONSOLE.print(f"[mri-data] warning: {message}", markup=False)


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
    """A BraTS root, a subject folder, a BIDS dataset, a NIfTI/NRRD/MHA file, or 'default' (the MNI152 template)."""
    cache_dir: Path = field(default_factory=default_cache_dir)
    """Where prepared subjects are cached (keyed by a hash of the inputs and the settings)."""
    train_every: int = DEFAULT_TRAIN_EVERY
    """View i is a training view when i % train_every == 0 (15 of 72 views); the rest are held out."""
    val_every: int = DEFAULT_VAL_EVERY
    """A held-out view i is a val view (the Trainer's evaluation) when i % val_every == val_offset; the other
    held-out views are the test views (ns-eval, ns-render dataset --split test)."""
    val_offset: int = DEFAULT_VAL_OFFSET
    """See val_every (defaults 5 and 2: 14 val views, 43 test views of 72)."""
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    """Preprocessing and view settings."""
    train_view_subset: Tuple[int, ...] = ()
    """Orbit view indices to train on, a subset of the train split (an ensemble member's views, see
    mri-export --uncertainty-members); empty: the whole train split. Val and test are unchanged."""
    subjects: Tuple[str, ...] = ()
    """Subjects of the data to prepare and use: empty = all; one number N = the first N (sorted by name); else
    subject names. For a quick run on a large root: --subjects 40 --train-subjects 30 prepares 40 of them."""
    train_subjects: Tuple[str, ...] = ()
    """Subjects to train on, among those used: empty = all; one number N = the first N (sorted by name); else
    subject names. The others are held out: never trained on, evaluated on their held-out views."""
    encoder_grid_size: int = DEFAULT_GRID_SIZE
    """Cells per axis of the slice encoder's working grid (a multiple of 8)."""


@dataclass
class MRIDataParser(DataParser):
    """Builds cameras, images and metadata from prepared subjects (prepared once, then cached)."""

    config: MRIDataParserConfig

    def __init__(self, config: MRIDataParserConfig):
        super().__init__(config=config)
        # The orbit's train / val / test views, the same for every subject.
        self.view_split: ViewSplit = orbit_view_split(
            config.prepare, config.train_every, config.val_every, config.val_offset
        )
        if config.train_view_subset:
            self.view_split = restrict_training_views(self.view_split, config.train_view_subset)
        if config.encoder_grid_size < 8 or config.encoder_grid_size % 8:
            raise MRIInputError(f"encoder_grid_size must be a multiple of 8, got {config.encoder_grid_size}")
        self._subjects: list[PreparedSubject] | None = None

    @property
    def subjects(self) -> list[PreparedSubject]:
        if self._subjects is None:
            data = None if str(self.config.data) == DEFAULT_SUBJECT else self.config.data
            with warnings.catch_warnings():
                warnings.showwarning = _print_preparation_warning
                self._subjects = prepare_subjects(
                    data,
                    self.config.cache_dir,
                    self.config.prepare,
                    progress=lambda message: CONSOLE.print(f"[mri-data] {message}", markup=False),
                    subjects=self.config.subjects,
                )
        return self._subjects

    def view_indices(self, split: Literal["train", "val", "test"] | str) -> list[int]:
        """Indices into the orbit that belong to ``split``."""
        return list(self.view_split.views(split))

    def split_view_counts(self) -> dict[str, int]:
        """Images per split over all subjects (val and test: every subject; train: the training subjects),
        and the held-out images left out of val and test as mirror copies of training views."""
        split, subjects = self.view_split, len(self.subjects)
        return {
            "num_train_views": len(self.training_subjects()) * len(split.train),
            "num_val_views": subjects * len(split.val),
            "num_test_views": subjects * len(split.test),
            "num_mirror_views_excluded": subjects * (len(split.val_mirror_copies) + len(split.test_mirror_copies)),
        }

    def training_subjects(self) -> list[int]:
        """Indices (into :attr:`subjects`) of the subjects trained on, from ``train_subjects``."""
        names = [subject.name for subject in self.subjects]
        return select_subjects(names, self.config.train_subjects, "train_subjects", self.config.data)

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
        counts = count_line(self.view_split, split, self.config.prepare.view_mode, len(split_subjects))
        CONSOLE.print(f"[mri-data] {counts}", markup=False)
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
                "scene_radius_mm": [subject.normalization.radius_mm for subject in self.subjects],
                **self._training_views(training),
                "view_mode": settings.view_mode,
                "density_scale": settings.density_scale,
                "camera_radius": settings.camera_radius,
                "train_subjects": training,
                **self._encoder_inputs(),
            },
        )

    def _training_views(self, training: list[int]) -> dict[str, list]:
        """What empty-space skipping may use (:mod:`~mri_nerfstudio.nerf.occupancy`), per subject: its training
        views ``training_views`` [V, H, W] and their nerfstudio ``training_cameras`` [V]; None for both when the
        subject is held out of training (no views of it are ever given to the model)."""
        indices = self.view_indices("train")
        views: list[torch.Tensor | None] = [None] * len(self.subjects)
        cameras: list[Cameras | None] = [None] * len(self.subjects)
        for s in training:
            orbit = self.subjects[s].cameras
            views[s] = torch.from_numpy(self.subjects[s].images[indices])
            cameras[s] = nerfstudio_cameras(orbit.subset(indices))
        return {"training_views": views, "training_cameras": cameras}

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
