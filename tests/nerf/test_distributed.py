"""Training on two CPU processes (gloo) with the method's own Trainer and pipeline (nerf/distributed.py)."""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from mri_nerfstudio.cli.export import main as export_main
from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.nerf import distributed
from mri_nerfstudio.nerf.distributed import (
    backend_for,
    check_devices,
    prepare_on_rank_zero,
    run_on_processes,
    train_and_record,
)
from mri_nerfstudio.nerf.trained_run import load_mednerf_run

STEPS = 40


@pytest.fixture(scope="module")
def two_process_run(tiny_method_config, phantom_subject_dir, tmp_path_factory) -> Path:
    """Records of 40 steps of BraTS2021_00000 trained on 2 CPU processes (rank<R>.pt, run.txt)."""
    config = tiny_method_config(phantom_subject_dir, tmp_path_factory.mktemp("cache"))
    config.max_num_iterations = STEPS
    config.output_dir = tmp_path_factory.mktemp("outputs")
    records = tmp_path_factory.mktemp("records")
    run_on_processes(functools.partial(train_and_record, records), config, num_processes=2)
    return records


def _records(folder: Path) -> list[dict]:
    return [torch.load(folder / f"rank{rank}.pt") for rank in (0, 1)]


def test_both_ranks_hold_the_same_weights_and_ema_after_training(two_process_run):
    first, second = _records(two_process_run)
    assert first["state"].keys() == second["state"].keys()
    assert any(name.startswith("generator_ema.") for name in first["state"])  # the EMA is on by default
    for name, value in first["state"].items():
        torch.testing.assert_close(value, second["state"][name], rtol=0, atol=1e-6, msg=name)


def test_ranks_draw_different_batches_and_the_loss_goes_down(two_process_run):
    first, second = _records(two_process_run)
    assert len(first["losses"]) == len(second["losses"]) == STEPS
    assert first["losses"][:3] != second["losses"][:3]  # other patches, other losses, from the first step on
    for losses in (first["losses"], second["losses"]):
        assert sum(losses[-5:]) < 0.5 * sum(losses[:5])


def test_the_two_process_checkpoint_loads_and_exports_in_one_process(two_process_run, tmp_path):
    config_path = Path((two_process_run / "run.txt").read_text())
    run = load_mednerf_run(config_path)
    assert run.step == STEPS - 1
    trained = _records(two_process_run)[0]["state"]
    run.pipeline.train()  # the trained weights in place (eval mode holds the averages)
    loaded = run.pipeline.state_dict()
    for name, value in trained.items():  # DDP's "module." prefix is gone in one process
        torch.testing.assert_close(loaded[name.replace("_model.module.", "_model.")], value, rtol=0, atol=0, msg=name)
    export_main(["--load-config", str(config_path), "--out", str(tmp_path), "--no-meshes"])
    assert (tmp_path / "BraTS2021_00000" / "reconstruction.nii.gz").is_file()


def test_with_the_adversarial_loss_ranks_average_their_weights_and_discriminators(
    tiny_method_config, phantom_subject_dir, tmp_path
):
    config = tiny_method_config(phantom_subject_dir, tmp_path / "cache")
    config.max_num_iterations = 12
    config.output_dir = tmp_path / "outputs"
    config.pipeline.adversarial.lambda_adv = 0.01
    run_on_processes(functools.partial(train_and_record, tmp_path), config, num_processes=2)
    first, second = _records(tmp_path)
    assert any(name.startswith("adversarial.discriminator.") for name in first["state"])
    for name, value in first["state"].items():
        torch.testing.assert_close(value, second["state"][name], rtol=0, atol=1e-6, msg=name)
    assert first["losses"][:3] != second["losses"][:3]


def test_more_gpus_than_the_machine_has_is_a_one_line_error(tiny_method_config, phantom_subject_dir, tmp_path, capsys):
    config = tiny_method_config(phantom_subject_dir, tmp_path)
    config.machine.device_type = "cuda"
    with pytest.raises(SystemExit) as exit_info:
        run_on_processes(functools.partial(train_and_record, tmp_path), config, torch.cuda.device_count() + 2)
    assert exit_info.value.code == 2
    printed = capsys.readouterr().err.strip().splitlines()
    assert printed[-1].startswith("error: --machine.num-devices") and "more GPUs than" in printed[-1]


def test_more_cpu_processes_than_cores_is_refused():
    with pytest.raises(MRIInputError, match="more CPU processes than the"):
        check_devices("cpu", (os.cpu_count() or 1) + 1)
    check_devices("cpu", 1)
    with pytest.raises(MRIInputError, match="'cuda' or 'cpu'"):
        backend_for("mps")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_cache_some_rank_cannot_see_is_refused(tiny_method_config, phantom_subject_dir, tmp_path, monkeypatch):
    config = tiny_method_config(phantom_subject_dir, tmp_path / "cache")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", world_size=1, rank=0)
    try:
        prepare_on_rank_zero(config)  # one rank, which sees its own cache
        assert not list((tmp_path / "cache").glob(".mri-distributed-*"))  # the token is cleaned up
        monkeypatch.setattr(distributed, "every_rank_sees", lambda path: False)
        with pytest.raises(MRIInputError, match="not visible to every rank"):
            prepare_on_rank_zero(config)
    finally:
        dist.destroy_process_group()
