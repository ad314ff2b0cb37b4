"""Surface meshes of volumes in scanner millimetres (marching cubes), written as PLY and STL.

Vertices are RAS millimetres (the frame of the volume's NIfTI affine), so a mesh overlays its volume in
3D Slicer or ITK-SNAP. Volumes are padded by one voxel of background first, so every surface is closed
even where the object touches the grid's edge; vertices then stay within half a voxel of the voxel
centres, i.e. inside the grid's extent. No nerfstudio here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh
from skimage.measure import marching_cubes

from mri_nerfstudio.atomic_write import write_atomically
from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.labels import ENHANCING, NECROTIC_CORE, NON_ENHANCING, OEDEMA

MESH_FORMATS: tuple[str, ...] = ("ply", "stl")

TUMOUR_LABELS: dict[str, tuple[int, ...]] = {
    "tumour": (NECROTIC_CORE, OEDEMA, NON_ENHANCING, ENHANCING),
    "necrosis": (NECROTIC_CORE,),
    "oedema": (OEDEMA,),
    "non_enhancing": (NON_ENHANCING,),
    "enhancing": (ENHANCING,),
}
"""Mesh name -> internal labels (:data:`mri_nerfstudio.labels.INTERNAL_LABELS`) it encloses: the whole tumour,
then each label (non_enhancing only in BraTS 2013-2016 segs)."""


def surface_mesh(volume: np.ndarray, level: float, affine: np.ndarray) -> trimesh.Trimesh | None:
    """The ``level`` iso-surface of ``volume``, in the millimetres of ``affine``; None if nothing exceeds ``level``.

    Args:
        volume: [X, Y, Z] float.
        level: iso-value; the surface encloses the voxels above it.
        affine: [4, 4] voxel index -> RAS mm.

    Returns:
        A watertight-where-possible triangle mesh with outward normals (vertices [V, 3] mm, faces [F, 3]).
    """
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim != 3:
        raise MRIInputError(f"mesh: volume must be 3D, got shape {volume.shape}")
    if not (volume > level).any():
        return None
    padded = np.pad(volume, 1, constant_values=min(float(volume.min()), level) - 1.0)
    vertices, faces, _, _ = marching_cubes(padded, level=level)
    vertices -= 1.0  # undo the padding: back to voxel indices of ``volume``
    affine = np.asarray(affine, dtype=np.float64)
    vertices_mm = vertices @ affine[:3, :3].T + affine[:3, 3]
    if np.linalg.det(affine[:3, :3]) < 0:  # a mirroring affine turns the faces inside out
        faces = faces[:, ::-1]
    mesh = trimesh.Trimesh(vertices=vertices_mm, faces=faces, process=True)
    # skimage orients faces towards decreasing values; trimesh wants normals pointing out of the object.
    mesh.invert()
    return mesh


def label_meshes(seg: np.ndarray, affine: np.ndarray) -> dict[str, trimesh.Trimesh]:
    """One mesh per entry of :data:`TUMOUR_LABELS` present in ``seg`` (int [X, Y, Z] internal labels)."""
    meshes = {}
    for name, labels in TUMOUR_LABELS.items():
        mesh = surface_mesh(np.isin(seg, labels).astype(np.float32), 0.5, affine)
        if mesh is not None:
            meshes[name] = mesh
    return meshes


def write_mesh(mesh: trimesh.Trimesh, path: Path) -> Path:
    """Write ``mesh`` atomically as PLY or STL (binary), the format chosen by ``path``'s suffix."""
    path = Path(path)
    file_type = path.suffix.lstrip(".").lower()
    if file_type not in MESH_FORMATS:
        raise MRIInputError(f"mesh format must be one of {MESH_FORMATS}", path)
    write_atomically(path, lambda tmp: mesh.export(tmp, file_type=file_type))
    return path
