"""Which views of the orbit train, which choose settings (val) and which are scored (test).

Every subject has the same orbit of views (72 at 5 degrees by default), split by view index ``i``:

- ``train``: ``i % train_every == 0`` (15 of 72 with ``train_every = 5``);
- ``val``: the other views with ``i % val_every == val_offset`` (14 with the defaults 5 and 2: 72 views
  hold 14 of each of the residues 2, 3, 4): what the Trainer evaluates during ``ns-train`` and what
  settings are chosen on;
- ``test``: every remaining view (43 with the defaults): what ``ns-eval``, ``ns-render dataset --split
  test`` and the benchmarks report; settings are chosen on val, not on them. (The EMA, the patch size
  and the adversarial window shipped before this split were chosen on all 57 held-out views, the
  test views among them.)

Mirror copies. In the ``drr`` and ``mip`` view modes a pixel is a function of the ray's *line* (an
attenuation sum, a maximum), not of its direction, and an orthographic camera on the opposite side of
the orbit (azimuth + 180 degrees at elevation 0) casts the same lines, with image right and left
swapped: its view is a training view flipped left to right, an exact copy, not an unseen view. Such
views are left out of ``test`` and of ``val`` (a copy would flatter the settings chosen on it, as it
would flatter the test scores). With the defaults, the 15 mirror copies of the training views are all
among the test views (views ``i + 36 mod 72`` of the training views are ``1`` or ``4`` mod 5, never the
val offset 2): test keeps 28 views, val 14. Not mirror copies, and kept:

- ``volume`` views: emission-absorption sees the near side of the brain first, so the view from the
  other side differs;
- perspective cameras: the camera at azimuth + 180 degrees casts rays from another centre, other lines;
- an orbit at a non-zero elevation: the camera at azimuth + 180 degrees and the same elevation looks
  down (or up) as well, so its rays are not the reverse of the training camera's; the true reverse
  (elevation negated) is not on the orbit.

The rule is found from the cameras themselves (:func:`opposite_views`), so it holds for any
``n_views``, ``step_deg`` and ``elevation_deg``. It is per view index: with several subjects, every
subject is scored on the same views.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from mri_nerfstudio import views
from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.prepare import PrepareConfig

Split = Literal["train", "val", "test"]
SPLITS: tuple[str, ...] = ("train", "val", "test")

DEFAULT_TRAIN_EVERY = 5
"""View ``i`` is a training view when ``i % 5 == 0``: 15 of 72."""
DEFAULT_VAL_EVERY = 5
"""With :data:`DEFAULT_VAL_OFFSET`: view ``i`` (not a training view) is a val view when ``i % 5 == 2``."""
DEFAULT_VAL_OFFSET = 2

MIRROR_SYMMETRIC_VIEW_MODES: tuple[str, ...] = ("drr", "mip")
"""View modes whose pixels depend on the ray's line only, not on its direction along it."""

POSE_TOLERANCE = 1e-4
"""World units (and unit-vector components): float32 poses of two opposite cameras agree to about 1e-6."""


@dataclass(frozen=True)
class ViewSplit:
    """Orbit view indices of each split (ascending), and the held-out views left out as mirror copies."""

    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]
    val_mirror_copies: tuple[int, ...]
    """Views with ``i % val_every == val_offset`` left out of val: mirror copies of training views."""
    test_mirror_copies: tuple[int, ...]
    """The other held-out views left out of test: mirror copies of training views."""

    def views(self, split: Split | str) -> tuple[int, ...]:
        """The view indices of ``split`` (``train``, ``val`` or ``test``)."""
        return {"train": self.train, "val": self.val, "test": self.test}[_checked(split)]

    def mirror_copies(self, split: Split | str) -> tuple[int, ...]:
        """The views left out of ``split`` as mirror copies of training views (none for ``train``)."""
        return {"train": (), "val": self.val_mirror_copies, "test": self.test_mirror_copies}[_checked(split)]


def _checked(split: str) -> str:
    if split not in SPLITS:
        raise MRIInputError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def opposite_views(cameras: views.ViewCameras) -> list[int | None]:
    """For each camera, the camera that casts the same rays from the other side, if there is one.

    Camera ``j`` is camera ``i``'s opposite when both are orthographic, ``j`` looks along the reverse of
    ``i``'s viewing direction with the same image up, and their image centres lie on the same line of
    sight: then pixel ``(row, col)`` of ``j`` is the ray of pixel ``(row, width - 1 - col)`` of ``i``
    traversed the other way (image right is reversed, the principal point is the image centre).

    Returns:
        [N]: the index of camera i's opposite, or None (always None for perspective cameras).
    """
    count = cameras.num_views
    if cameras.projection != "orthographic":
        return [None] * count
    c2w = cameras.c2w.double()
    up, backward, position = c2w[:, :, 1], c2w[:, :, 2], c2w[:, :, 3]
    # The image centre's line of sight, as the point of that line closest to the origin.
    centre_line = position - (position * backward).sum(-1, keepdim=True) * backward
    reversed_direction = (backward[:, None] + backward[None, :]).abs().amax(-1) < POSE_TOLERANCE
    same_up = (up[:, None] - up[None, :]).abs().amax(-1) < POSE_TOLERANCE
    same_line = (centre_line[:, None] - centre_line[None, :]).abs().amax(-1) < POSE_TOLERANCE
    opposite = reversed_direction & same_up & same_line
    return [int(row.nonzero()[0, 0]) if bool(row.any()) else None for row in opposite]


def split_views(
    cameras: views.ViewCameras,
    view_mode: str,
    train_every: int = DEFAULT_TRAIN_EVERY,
    val_every: int = DEFAULT_VAL_EVERY,
    val_offset: int = DEFAULT_VAL_OFFSET,
) -> ViewSplit:
    """The train / val / test split of an orbit (module docstring).

    Args:
        cameras: the orbit's cameras, view ``i`` seen by camera ``i``.
        view_mode: ``volume``, ``drr`` or ``mip``; in ``drr`` and ``mip`` mirror copies of training
            views are left out of val and test.
        train_every: view ``i`` trains when ``i % train_every == 0``; >= 2.
        val_every, val_offset: a held-out view ``i`` is a val view when ``i % val_every == val_offset``;
            ``val_every >= 2``, ``0 <= val_offset < val_every``.

    Raises:
        MRIInputError: a setting out of range, or settings that leave val or test without a view.
    """
    if train_every < 2:
        raise MRIInputError(f"train_every must be >= 2 (some views must be held out), got {train_every}")
    if val_every < 2:
        raise MRIInputError(f"val_every must be >= 2 (some held-out views must be left for test), got {val_every}")
    if not 0 <= val_offset < val_every:
        raise MRIInputError(f"val_offset must lie in 0..{val_every - 1} (val_every - 1), got {val_offset}")
    n_views = cameras.num_views
    train = tuple(i for i in range(n_views) if i % train_every == 0)
    opposite = opposite_views(cameras) if view_mode in MIRROR_SYMMETRIC_VIEW_MODES else [None] * n_views
    mirror_copies = {i for i in range(n_views) if i not in train and opposite[i] in train}
    held_out = [i for i in range(n_views) if i % train_every != 0]
    in_val = [i for i in held_out if i % val_every == val_offset]
    in_test = [i for i in held_out if i % val_every != val_offset]
    split = ViewSplit(
        train=train,
        val=tuple(i for i in in_val if i not in mirror_copies),
        test=tuple(i for i in in_test if i not in mirror_copies),
        val_mirror_copies=tuple(i for i in in_val if i in mirror_copies),
        test_mirror_copies=tuple(i for i in in_test if i in mirror_copies),
    )
    for name in ("val", "test"):
        if not split.views(name):
            left_out = len(split.mirror_copies(name))
            mirrors = f" ({left_out} mirror copies of training views left out, {view_mode})" if left_out else ""
            raise MRIInputError(
                f"view split: train_every={train_every}, val_every={val_every}, val_offset={val_offset} over "
                f"n_views={n_views} leave no {name} view{mirrors}; choose settings that leave views for both "
                "val and test"
            )
    return split


def orbit_view_split(
    prepare: PrepareConfig,
    train_every: int = DEFAULT_TRAIN_EVERY,
    val_every: int = DEFAULT_VAL_EVERY,
    val_offset: int = DEFAULT_VAL_OFFSET,
) -> ViewSplit:
    """:func:`split_views` of the orbit a :class:`~mri_nerfstudio.prepare.PrepareConfig` describes."""
    return split_views(prepare.orbit_cameras(), prepare.view_mode, train_every, val_every, val_offset)


def restrict_training_views(split: ViewSplit, kept: tuple[int, ...] | list[int]) -> ViewSplit:
    """``split`` training on the views ``kept`` only (e.g. an ensemble member's subset): val and test are
    unchanged, and the training views left out belong to no split (they are neither trained on nor scored)."""
    kept = tuple(sorted(set(int(view) for view in kept)))
    strangers = [view for view in kept if view not in split.train]
    if not kept or strangers:
        raise MRIInputError(
            f"train_view_subset must name views of the train split {list(split.train)}, got {list(kept) or 'none'}"
        )
    return replace(split, train=kept)


def count_line(split: ViewSplit, name: Split | str, view_mode: str, subjects: int) -> str:
    """``test: 27 views (1 subject(s) x 27; 15 mirror copies of training views left out, drr)``."""
    per_subject = len(split.views(name))
    line = f"{name}: {subjects * per_subject} views ({subjects} subject(s) x {per_subject}"
    left_out = len(split.mirror_copies(name))
    if left_out:
        line += f"; {left_out} mirror copies of training views left out, {view_mode}"
    return line + ")"

