"""Marching-cubes surfaces in millimetres, closed at the grid's edge, and their PLY / STL files."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.mesh import label_meshes, surface_mesh, write_mesh


def ball(shape=(20, 20, 20), centre=(10, 9, 10), radius=6.0) -> np.ndarray:
    grid = np.indices(shape)
    return (sum((axis - c) ** 2 for axis, c in zip(grid, centre)) < radius**2).astype(np.float32)


@pytest.mark.parametrize("flip", [False, True])
def test_surface_mesh_is_closed_in_millimetres(flip):
    affine = np.diag([-2.0 if flip else 2.0, 2.0, 3.0, 1.0])
    affine[:3, 3] = (5.0, 6.0, 7.0)
    mesh = surface_mesh(ball(), 0.5, affine)
    assert mesh.is_watertight
    expected_mm3 = 4 / 3 * np.pi * 6.0**3 * 12.0  # voxel volume 2 x 2 x 3 mm
    assert mesh.volume == pytest.approx(expected_mm3, rel=0.05)  # positive: normals point outwards
    centre_mm = affine[:3, :3] @ np.array([10.0, 9.0, 10.0]) + affine[:3, 3]
    assert np.allclose(mesh.centroid, centre_mm, atol=0.2)


def test_surface_touching_the_edge_is_closed_within_the_grid():
    volume = ball()
    volume[0] = 1.0
    mesh = surface_mesh(volume, 0.5, np.eye(4))
    assert mesh.is_watertight and mesh.bounds[0].min() >= -0.5 and mesh.bounds[1].max() <= 19.5
    assert surface_mesh(np.zeros((4, 4, 4)), 0.5, np.eye(4)) is None


def test_label_meshes_and_files(tmp_path):
    seg = np.zeros((20, 20, 20), dtype=np.int16)
    seg[ball(radius=6.0) > 0] = 2
    seg[ball(radius=3.0) > 0] = 1
    meshes = label_meshes(seg, np.eye(4))
    assert set(meshes) == {"tumour", "necrosis", "oedema"}  # no enhancing label present
    assert meshes["tumour"].volume > meshes["necrosis"].volume > 0
    for suffix in ("ply", "stl"):
        path = write_mesh(meshes["tumour"], tmp_path / f"tumour.{suffix}")
        loaded = trimesh.load(path)
        assert np.allclose(loaded.bounds, meshes["tumour"].bounds, atol=1e-4)
        assert len(loaded.faces) == len(meshes["tumour"].faces)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tumour.ply", "tumour.stl"]  # no temporary left
    with pytest.raises(MRIInputError, match="mesh format"):
        write_mesh(meshes["tumour"], tmp_path / "tumour.obj")


def test_label_meshes_use_the_internal_labels():
    seg = np.zeros((20, 20, 20), dtype=np.int16)
    seg[ball(radius=7.0) > 0] = 2  # oedema
    seg[ball(radius=5.0) > 0] = 3  # non-enhancing tumour (BraTS 2013-2016 only)
    seg[ball(radius=3.0) > 0] = 4  # enhancing tumour

    meshes = label_meshes(seg, np.eye(4))

    assert set(meshes) == {"tumour", "oedema", "non_enhancing", "enhancing"}
    assert meshes["tumour"].volume == pytest.approx(4 / 3 * np.pi * 7.0**3, rel=0.1)  # every label inside
