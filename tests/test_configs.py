"""The recipes in configs/: each one's ns-train command line parses as ns-train parses it (nothing trains), and
nothing in configs/ names a path of the machine it was written on."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from mri_nerfstudio.cli.demo import DemoCommand, train_arguments
from mri_nerfstudio.nerf.trainer import preset_optimizers
from mri_nerfstudio.view_split import orbit_view_split

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
# Stands in for ns-train on PATH: writes its arguments, NUL-separated, where $RECIPE_ARGUMENTS says.
FAKE_NS_TRAIN = '#!/bin/sh\nfor argument in "$@"; do printf \'%s\\0\' "$argument"; done > "$RECIPE_ARGUMENTS"\n'


def _recipe_arguments(recipe: str, *arguments: str, tmp_path: Path) -> list[str]:
    """The arguments that ``configs/<recipe> *arguments`` passes to ns-train."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "ns-train").write_text(FAKE_NS_TRAIN)
    (bin_dir / "ns-train").chmod(0o755)
    recorded = tmp_path / "arguments"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "RECIPE_ARGUMENTS": str(recorded)}
    command = ["bash", str(CONFIGS / recipe), *arguments]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return recorded.read_text().split("\0")[:-1]


def _field_rate(config) -> float:
    return preset_optimizers(config)["fields"]["optimizer"].lr


def test_the_cpu_demo_recipe_is_the_command_mri_demo_runs(ns_train_cli, tmp_path):
    recipe = ns_train_cli(_recipe_arguments("cpu-demo.sh", tmp_path=tmp_path))
    command = DemoCommand()
    demo = ns_train_cli(train_arguments(command, command.out / "cache", "a-timestamp")[1:])  # without ns-train's path
    demo.timestamp = recipe.timestamp
    assert recipe == demo
    assert (recipe.method_name, recipe.pipeline.model.preset) == ("mri-mednerf", "cpu")
    assert recipe.machine.device_type == "cpu"
    assert _field_rate(recipe) == 2e-2


def test_the_gpu_recipe_trains_mednerfs_network_on_cuda(ns_train_cli, tmp_path):
    config = ns_train_cli(_recipe_arguments("gpu.sh", "brats", tmp_path=tmp_path))
    assert (config.method_name, config.pipeline.model.preset) == ("mri-mednerf-gpu", "mednerf")
    assert (config.machine.device_type, config.mixed_precision, config.max_num_iterations) == ("cuda", True, 30_000)
    assert config.pipeline.datamanager.dataparser.data == Path("brats")
    assert _field_rate(config) == 5e-4
    # One flag switches the preset, and its learning rate with it.
    grids = ns_train_cli(_recipe_arguments("gpu.sh", "brats", "--pipeline.model.preset", "cpu", tmp_path=tmp_path))
    assert (grids.pipeline.model.preset, _field_rate(grids)) == ("cpu", 2e-2)


def test_the_sparse_views_recipe_trains_on_4_views(ns_train_cli, tmp_path):
    arguments = _recipe_arguments("sparse-views.sh", "brats", "--max-num-iterations", "500", tmp_path=tmp_path)
    config = ns_train_cli(arguments)
    dataparser = config.pipeline.datamanager.dataparser
    assert orbit_view_split(dataparser.prepare, dataparser.train_every).train == (0, 18, 36, 54)
    assert (config.method_name, config.max_num_iterations, dataparser.data) == ("mri-mednerf", 500, Path("brats"))


def test_the_subjects_recipe_holds_out_all_but_the_first_n(ns_train_cli, tmp_path):
    config = ns_train_cli(_recipe_arguments("subjects.sh", "brats", "24", tmp_path=tmp_path))
    dataparser = config.pipeline.datamanager.dataparser
    assert (dataparser.data, dataparser.train_subjects, dataparser.prepare.image_size) == (Path("brats"), ("24",), 64)
    assert config.pipeline.model.subject_grid_resolution == 32


@pytest.mark.parametrize("recipe", ["gpu.sh", "sparse-views.sh", "subjects.sh"])
def test_a_recipe_without_its_data_says_how_to_call_it(recipe, tmp_path):
    result = subprocess.run(["bash", str(CONFIGS / recipe)], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode != 0 and f"usage: configs/{recipe} DATA" in result.stderr


def test_every_recipe_is_tested_and_executable():
    recipes = sorted(path.name for path in CONFIGS.glob("*.sh"))
    assert recipes == ["cpu-demo.sh", "gpu.sh", "sparse-views.sh", "subjects.sh"]
    assert all(os.access(CONFIGS / recipe, os.X_OK) for recipe in recipes)


def test_nothing_in_configs_names_a_machine_path():
    absolute = re.compile(r"(^|[\s\"'=:(\[])/(?!usr/bin/env )[\w.~-]")
    for path in sorted(CONFIGS.iterdir()):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            assert not absolute.search(line), f"{path.name}:{number}: {line}"
            assert "~/" not in line and "$HOME" not in line, f"{path.name}:{number}: {line}"
