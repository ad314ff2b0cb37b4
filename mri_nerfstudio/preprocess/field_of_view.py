"""Is the brain cut off by the scan's field of view, or by another modality's?

Clinical scans often cover only part of the head: a thick-slice stack that stops below the vertex, or
above the cerebellum. The brain mask then ends abruptly at the grid's edge on that side (or a few
millimetres short of it), and the reconstruction ends flat there. A brain inside the field of
view tapers instead: its outermost slices hold little brain. :func:`brain_cut_by_field_of_view` finds
the abrupt ends near an edge from the mask and the affine, in anatomical terms, so that preparation can
say so.

The other modalities of a subject may cover less: a FLAIR stack of 25 slices beside a whole-brain T1.
Resampled onto the reference's grid, they are 0 outside their own field of view;
:func:`brain_outside_modalities` measures how much of the brain that leaves them.
"""

from __future__ import annotations

import numpy as np
from nibabel.orientations import aff2axcodes

CUT_AREA_CM2 = 5.0
"""Brain area on the mask's outermost slice above which the brain counts as cut off on that side. A mask
that reaches the bottom of the field of view through the medulla alone (about 2 cm^2 in cross-section)
stays under it; a field of view that cuts the cerebrum or cerebellum lies far above it."""

EDGE_BAND_MM = 4.0
"""A mask whose outermost slice lies this close to the grid's edge ends at the edge: masks resampled, or
made by tools whose morphology treats the grid's edge as background, stop a voxel or two short of a cut.
Kept narrow because skull strippings also end flat away from any edge: the BraTS masks' cut below the
cerebellum lies 10 mm or more from the grid's edge on the 6 BraTS 2013 subjects."""

UNCOVERED_SHARE = 0.1
"""Share of the brain at exactly 0 in a modality above which it counts as not covering the brain. Inside a
brain, real scans are almost never exactly 0: at most 0.013 % of the voxels in the 30 IXI T1s (uint8), and
none in the 6 BraTS 2013 T1ce and FLAIR scans."""

SIDE_NAMES = {"R": "right", "L": "left", "A": "anterior", "P": "posterior", "S": "superior", "I": "inferior"}
OPPOSITE = {"R": "L", "L": "R", "A": "P", "P": "A", "S": "I", "I": "S"}


def brain_cut_by_field_of_view(
    mask: np.ndarray, affine: np.ndarray, min_area_cm2: float = CUT_AREA_CM2, band_mm: float = EDGE_BAND_MM
) -> dict[str, float]:
    """The sides on which the brain mask ends abruptly at the edge of its grid.

    On each side, the mask's outermost slice (the last one holding brain) counts as a cut when it lies within
    ``band_mm`` of the grid's edge and holds at least ``min_area_cm2`` of brain.

    Args:
        mask: [X, Y, Z] bool brain mask (not empty).
        affine: [4, 4] voxel -> RAS mm of its grid (oblique grids: each axis is named by its nearest
            anatomical direction, as ``nibabel.aff2axcodes`` does).
        min_area_cm2: smallest brain area on the outermost slice that counts as a cut.
        band_mm: largest distance, mm, from that slice to the grid's edge.

    Returns:
        ``{side: brain area on the outermost slice, cm^2}``, sides named ``right``, ``left``, ``anterior``,
        ``posterior``, ``superior`` or ``inferior``, in the order of the grid's axes; empty when the brain
        lies inside the field of view.
    """
    mask = np.asarray(mask, dtype=bool)
    affine = np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    codes = aff2axcodes(affine)
    cuts = {}
    for axis, code in enumerate(codes):
        others = tuple(other for other in range(3) if other != axis)
        areas_cm2 = mask.sum(axis=others) * float(np.prod(spacing[list(others)])) / 100.0  # per slice along axis
        holding = np.flatnonzero(areas_cm2)
        if holding.size == 0:
            continue
        for outermost, gap_slices, side in (
            (holding[0], holding[0], OPPOSITE[code]),
            (holding[-1], mask.shape[axis] - 1 - holding[-1], code),
        ):
            if gap_slices * spacing[axis] <= band_mm and areas_cm2[outermost] >= min_area_cm2:
                cuts[SIDE_NAMES[side]] = float(areas_cm2[outermost])
    return cuts


def describe_cuts(cuts: dict[str, float]) -> str:
    """``cuts`` (:func:`brain_cut_by_field_of_view`) in words, e.g. ``superior side (23 cm2 of brain on its
    last slice)`` or ``left and superior sides (7 and 23 cm2 of brain on their last slices)``."""
    sides, areas = list(cuts), [f"{area:.0f}" for area in cuts.values()]
    if len(sides) == 1:
        return f"{sides[0]} side ({areas[0]} cm2 of brain on its last slice)"
    joined_sides = ", ".join(sides[:-1]) + f" and {sides[-1]}"
    joined_areas = ", ".join(areas[:-1]) + f" and {areas[-1]}"
    return f"{joined_sides} sides ({joined_areas} cm2 of brain on their last slices)"


def brain_outside_modalities(
    images: dict[str, np.ndarray], mask: np.ndarray, min_share: float = UNCOVERED_SHARE
) -> dict[str, float]:
    """The modalities that are exactly 0 on at least ``min_share`` of the brain, and that share.

    Args:
        images: modality -> [X, Y, Z] intensities on the mask's grid (resampled there with 0 outside their
            own field of view).
        mask: [X, Y, Z] bool brain mask (not empty).
        min_share: smallest share of brain voxels at 0 that is reported.

    Returns:
        ``{modality: share in [0, 1]}`` in the order of ``images``.
    """
    mask = np.asarray(mask, dtype=bool)
    shares = {modality: float(np.mean(np.asarray(image)[mask] == 0)) for modality, image in images.items()}
    return {modality: share for modality, share in shares.items() if share >= min_share}
