"""An ensemble of short fits beside a trained run, for its uncertainty map (:mod:`mri_nerfstudio.uncertainty`).

Each member is the run's own config trained again from scratch, in this process, with nerfstudio's
Trainer (:class:`~mri_nerfstudio.nerf.session.TrainingSession`): fewer steps, its own seed and its own
subset of the run's training views (the dataparser's ``train_view_subset``). Nothing but those views is
seen, so the spread holds no ground truth. Members train every subject of the run (the field is shared
between subjects), write nothing to disk and are returned in eval mode (EMA weights, when the run has an
EMA).
"""

from __future__ import annotations

import copy
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.uncertainty import member_view_subsets


@dataclass(frozen=True)
class EnsembleSettings:
    """How many short fits, how short, and on which views."""

    members: int = 4
    """Fits besides the run (each from scratch)."""
    steps: int | None = None
    """Training steps per member; None: half the run's ``max_num_iterations``."""
    view_fraction: float = 0.8
    """Share of the run's training views each member trains on (12 of 15 by default), a different draw each."""
    seed: int = 1
    """Member ``m`` trains with seed ``seed + m``; the view subsets are drawn from ``seed`` too."""

    def __post_init__(self):
        if self.members < 1:
            raise MRIInputError(f"an ensemble needs at least one member, got {self.members}")
        if self.steps is not None and self.steps < 1:
            raise MRIInputError(f"ensemble members need at least one training step, got {self.steps}")
        if not 0.0 < self.view_fraction <= 1.0:
            raise MRIInputError(f"the members' view fraction must be in (0, 1], got {self.view_fraction}")


@dataclass
class EnsembleMember:
    """One trained member: its model (eval mode), what it saw and what it cost."""

    model: object
    seed: int
    views: tuple[int, ...]
    steps: int
    seconds: float


def member_steps(config, settings: EnsembleSettings) -> int:
    """The steps each member trains (``settings.steps`` or half the run's)."""
    return settings.steps if settings.steps is not None else max(1, config.max_num_iterations // 2)


def train_ensemble(config, train_views: list[int], settings: EnsembleSettings) -> list[EnsembleMember]:
    """Train ``settings.members`` short fits of the run ``config`` (a loaded ``TrainerConfig``), one after another.

    Args:
        config: the run's config (as ``config.yml`` holds it; not changed).
        train_views: the run's training views (orbit indices); each member trains on a subset.
        settings: members, steps, view fraction and seed.
    """
    from mri_nerfstudio.nerf.session import TrainingSession, seed_everything

    steps = member_steps(config, settings)
    subsets = member_view_subsets(train_views, settings.members, settings.view_fraction, settings.seed)
    members = []
    columns = (TextColumn("[mri] ensemble member {task.fields[member]}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("steps"), TimeElapsedColumn())
    with tempfile.TemporaryDirectory(prefix="mri-ensemble-") as scratch, Progress(*columns, transient=True) as bar:
        for index, views in enumerate(subsets):
            seed = settings.seed + index
            member_config = copy.deepcopy(config)
            member_config.max_num_iterations = steps
            member_config.machine.seed = seed
            member_config.pipeline.datamanager.dataparser.train_view_subset = views
            seed_everything(seed)
            start = time.perf_counter()
            session = TrainingSession(member_config, Path(scratch))
            task = bar.add_task("member", total=steps, member=f"{index + 1}/{len(subsets)}")
            for _ in range(steps):
                session.step()
                bar.advance(task)
            session.pipeline.eval()
            members.append(EnsembleMember(session.pipeline.model, seed, views, steps, time.perf_counter() - start))
    return members
