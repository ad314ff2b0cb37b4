"""A trained run back in memory: its config, pipeline and checkpoint, loaded as ``ns-eval`` does.

Shared by the commands that read a run (``mri-report``, ``mri-export``, ``mri-reconstruct``): every
check that nerfstudio would otherwise answer with an assertion or a traceback becomes an
:class:`~mri_nerfstudio.errors.MRIInputError` naming the config file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from mri_nerfstudio.errors import MRIInputError

if TYPE_CHECKING:
    from nerfstudio.engine.trainer import TrainerConfig
    from nerfstudio.pipelines.base_pipeline import VanillaPipeline

    from mri_nerfstudio.nerf.model import MRIMedNeRFModel
    from mri_nerfstudio.prepare import PreparedSubject


@dataclass
class TrainedRun:
    """A run loaded for evaluation (``test_mode="test"``: the test views as the eval split)."""

    config: TrainerConfig
    pipeline: VanillaPipeline
    checkpoint: Path
    step: int

    @property
    def model(self) -> MRIMedNeRFModel:
        return self.pipeline.model


def read_trainer_config(config_path: Path) -> TrainerConfig:
    """The ``TrainerConfig`` that ns-train saved in ``config_path``, checked to name an installed method."""
    # Imported here: method_configs imports every installed nerfstudio method (seconds), --help needs none.
    from nerfstudio.configs.method_configs import all_methods
    from nerfstudio.engine.trainer import TrainerConfig

    config_path = Path(config_path)
    if not config_path.is_file():
        raise MRIInputError("no such config file; pass the config.yml that ns-train wrote", config_path)
    try:
        config = yaml.load(config_path.read_text(), Loader=yaml.Loader)
    except (yaml.YAMLError, UnicodeDecodeError, AttributeError, TypeError, ValueError) as error:
        raise MRIInputError(f"not a config.yml written by ns-train ({type(error).__name__})", config_path) from None
    if not isinstance(config, TrainerConfig):
        raise MRIInputError(f"holds a {type(config).__name__}, expected the TrainerConfig ns-train writes", config_path)
    if config.method_name not in all_methods:
        raise MRIInputError(f"method_name {config.method_name!r} is not an installed nerfstudio method", config_path)
    return config


def load_run(config_path: Path) -> TrainedRun:
    """Load a trained run as ``ns-eval`` does (``eval_setup``), after checking what it would assert on."""
    from nerfstudio.utils.eval_utils import eval_setup

    config = read_trainer_config(config_path)
    checkpoint_dir = config.get_checkpoint_dir()
    if not any(checkpoint_dir.glob("step-*.ckpt")):
        raise MRIInputError(
            f"no checkpoint in {checkpoint_dir} (paths in the config are relative to where ns-train ran)", config_path
        )
    config, pipeline, checkpoint, step = eval_setup(Path(config_path), test_mode="test")
    return TrainedRun(config=config, pipeline=pipeline, checkpoint=Path(checkpoint), step=int(step))


def load_mednerf_run(config_path: Path) -> TrainedRun:
    """:func:`load_run` for a run of the ``mri-mednerf`` model (any other method is refused before loading)."""
    from mri_nerfstudio.nerf.model import MRIMedNeRFModelConfig

    config = read_trainer_config(config_path)
    model_config = config.pipeline.model
    if not isinstance(model_config, MRIMedNeRFModelConfig):
        raise MRIInputError(
            f"method {config.method_name!r} (model {type(model_config).__name__}) is not an mri-mednerf run; "
            "this command needs the config.yml of `ns-train mri-mednerf`",
            config_path,
        )
    return load_run(config_path)


def selected_subjects(run: TrainedRun, subject: str | None, config_path: Path) -> list[tuple[int, PreparedSubject]]:
    """(index in the model, prepared subject) of every subject of ``run``, or of the one named ``subject``
    (a one-line error naming the run's subjects when it has none of that name)."""
    from mri_nerfstudio.nerf.field_sampling import prepared_subjects

    subjects = prepared_subjects(run.pipeline)
    names = [prepared.name for prepared in subjects]
    if subject is not None and subject not in names:
        raise MRIInputError(f"--subject {subject!r} is not in this run; its subjects: {', '.join(names)}", config_path)
    return [(index, prepared) for index, prepared in enumerate(subjects) if subject in (None, prepared.name)]
