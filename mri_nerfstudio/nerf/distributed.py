"""Training across processes: torch.distributed with NCCL on GPUs and gloo on CPUs, under nerfstudio's launcher.

``mri-train mri-mednerf --machine.num-devices N [--machine.num-machines M --machine.machine-rank R
--machine.dist-url tcp://HOST:PORT]`` spawns one process per device (on GPUs, ``ns-train`` with nerfstudio's
own worker does too; not run here: no GPU was lent); each runs nerfstudio's own Trainer
on its own seed (``machine.seed + rank``), so ranks draw different patches and subjects, and
:class:`~mri_nerfstudio.nerf.pipeline.MRIPipeline` wraps the model in DDP (:func:`wrap_for_data_parallel`):
rank 0's weights are broadcast at the start and gradients are averaged every step, so the weights, and
with them the EMA, stay identical on every rank. With the adversarial loss (two generator passes per step,
the discriminator's R1 double backward: neither fits DDP) the ranks average their weights, the
discriminator's included, after every step instead (:func:`average_parameters`). Only rank 0 writes
checkpoints, logs and the viewer (nerfstudio's ``check_main_thread``).

nerfstudio 1.1.5's spawned worker (``scripts/train.py``, ``_distributed_worker``) asserts CUDA even with
``--machine.device-type cpu``, and its pipeline passes ``device_ids`` to DDP, which only suits GPUs.
:func:`distributed_worker` is that worker without the CUDA assumption (and with one-line errors for
setups that cannot run); :func:`use_cpu_capable_worker` puts it in nerfstudio's launcher. ``mri-train``
is ``ns-train`` with it (a plugin cannot install it into ``ns-train`` itself: nerfstudio loads plugins
while its training script is still being defined). On GPUs the worker does what nerfstudio's does.
:func:`train_and_record` is a ``main_func`` for tests and benchmarks: steps, losses and each rank's
weights on disk.
"""

from __future__ import annotations

import os
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from mri_nerfstudio.errors import MRIInputError


def backend_for(device_type: str) -> str:
    """``nccl`` for CUDA devices, ``gloo`` for CPUs."""
    if device_type not in ("cpu", "cuda"):
        raise MRIInputError(f"machine.device_type {device_type!r}: distributed training runs on 'cuda' or 'cpu'")
    return "nccl" if device_type == "cuda" else "gloo"


def check_devices(device_type: str, num_devices_per_machine: int) -> None:
    """One-line errors for a device count this machine cannot give."""
    if num_devices_per_machine < 1:
        raise MRIInputError(f"--machine.num-devices must be at least 1, got {num_devices_per_machine}")
    if device_type == "cuda":
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if num_devices_per_machine > available:
            raise MRIInputError(
                f"--machine.num-devices {num_devices_per_machine} asks for more GPUs than the {available} visible "
                "here; lower it, or train on processes with --machine.device-type cpu"
            )
    elif num_devices_per_machine > (os.cpu_count() or 1):
        raise MRIInputError(
            f"--machine.num-devices {num_devices_per_machine} asks for more CPU processes than the "
            f"{os.cpu_count()} cores here; lower it"
        )


def wrap_for_data_parallel(model: torch.nn.Module, device: str | torch.device) -> DistributedDataParallel:
    """``model`` in DDP for the current process group: rank 0's weights broadcast now, gradients averaged in
    every backward pass. ``device_ids`` only on CUDA (a CPU module takes none); buffers are not broadcast
    (the model's buffers are its data, the same on every rank); parameters a step leaves unused (another
    subject's encoder input, say) are allowed."""
    if not dist.is_available() or not dist.is_initialized():
        raise MRIInputError(
            "world_size > 1 but no torch.distributed process group is initialised; start training with ns-train "
            "--machine.num-devices N (or torch.distributed.init_process_group first)"
        )
    device = torch.device(device)
    device_ids = None
    if device.type == "cuda":
        device_ids = [device.index if device.index is not None else torch.cuda.current_device()]
    wrapped = DistributedDataParallel(
        model, device_ids=device_ids, find_unused_parameters=True, broadcast_buffers=False
    )
    dist.barrier()
    return wrapped


def every_rank_sees(path: Path) -> bool:
    """Whether ``path`` is a file on every rank of the process group."""
    seen = torch.tensor([int(Path(path).is_file())])
    dist.all_reduce(seen, op=dist.ReduceOp.MIN)
    return bool(seen)


def broadcast_state(modules: list[torch.nn.Module], src: int = 0) -> None:
    """Every rank's parameters and buffers of ``modules`` (e.g. spectral norm's power-iteration vectors, which
    then evolve alike on every rank) set to rank ``src``'s."""
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=src)


@torch.no_grad()
def average_parameters(modules: list[torch.nn.Module]) -> None:
    """Every rank's parameters of ``modules`` replaced by their mean over the ranks (same order everywhere:
    every rank makes the same calls, whatever it trained)."""
    world_size = dist.get_world_size()
    for module in modules:
        for parameter in module.parameters():
            dist.all_reduce(parameter.data)
            parameter.data /= world_size


def prepare_on_rank_zero(config: Any) -> None:
    """Rank 0 prepares the subjects into the cache (the others would race it on the same files), then every
    rank checks that it sees that cache: a token file rank 0 writes there. Does nothing for data that does
    not come from the ``mri-data`` dataparser."""
    from mri_nerfstudio.nerf.dataparser import MRIDataParser, MRIDataParserConfig

    dataparser = config.pipeline.datamanager.dataparser
    if not isinstance(dataparser, MRIDataParserConfig):
        return
    cache = Path(dataparser.cache_dir)
    token = [f".mri-distributed-{uuid.uuid4().hex}"]
    dist.broadcast_object_list(token, src=0)
    if dist.get_rank() == 0:
        MRIDataParser(dataparser).subjects  # noqa: B018 (prepares and caches every subject)
        (cache / token[0]).touch()
    dist.barrier()
    seen = every_rank_sees(cache / token[0])
    dist.barrier()
    if dist.get_rank() == 0:
        (cache / token[0]).unlink(missing_ok=True)
    if not seen:
        raise MRIInputError(
            "the prepared-subject cache is not visible to every rank: put --pipeline.datamanager.dataparser.cache-dir "
            "on a filesystem every machine mounts at the same path",
            cache,
        )


def distributed_worker(
    local_rank: int,
    main_func: Callable,
    world_size: int,
    num_devices_per_machine: int,
    machine_rank: int,
    dist_url: str,
    config: Any,
    timeout: timedelta = timedelta(minutes=30),
    device_type: str = "cuda",
) -> Any:
    """nerfstudio's spawned worker (same arguments, as ``mp.spawn`` passes them): joins the process group
    (NCCL on CUDA, gloo on CPU), creates the per-machine group nerfstudio's ``comms`` uses, runs
    ``main_func(local_rank, world_size, config, global_rank)`` and leaves the group."""
    from nerfstudio.utils import comms

    check_devices(device_type, num_devices_per_machine)
    global_rank = machine_rank * num_devices_per_machine + local_rank
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    else:  # the machine's cores shared out, not each process's threads on all of them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // num_devices_per_machine))
    dist.init_process_group(
        backend=backend_for(device_type), init_method=dist_url, world_size=world_size, rank=global_rank,
        timeout=timeout,
    )  # fmt: skip
    for machine in range(world_size // num_devices_per_machine):
        ranks = list(range(machine * num_devices_per_machine, (machine + 1) * num_devices_per_machine))
        group = dist.new_group(ranks)
        if machine == machine_rank:
            comms.LOCAL_PROCESS_GROUP = group
    try:
        prepare_on_rank_zero(config)
        output = main_func(local_rank, world_size, config, global_rank)
        comms.synchronize()
    except MRIInputError as error:  # one line here; the launcher exits without a traceback (use_cpu_capable_worker)
        print(f"error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    finally:
        dist.destroy_process_group()
    return output


def use_cpu_capable_worker() -> None:
    """Make nerfstudio's launcher (``ns-train``) spawn :func:`distributed_worker`, and refuse a GPU count the
    machine lacks before any process is spawned."""
    from nerfstudio.scripts import train

    if train._distributed_worker is distributed_worker:
        return
    launch = train.launch  # nerfstudio's: it spawns train._distributed_worker, looked up when it runs

    def checked_launch(main_func, num_devices_per_machine, *args, device_type="cuda", **kwargs):
        try:
            if num_devices_per_machine * kwargs.get("num_machines", 1) > 1:
                check_devices(device_type, num_devices_per_machine)
            return launch(main_func, num_devices_per_machine, *args, device_type=device_type, **kwargs)
        except MRIInputError as error:
            print(f"error: {error}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        except torch.multiprocessing.ProcessExitedException:  # a rank printed its one-line error and exited
            raise SystemExit(2) from None

    train._distributed_worker = distributed_worker
    train.launch = checked_launch


def run_on_processes(main_func: Callable, config: Any, num_processes: int, dist_url: str = "auto") -> None:
    """``main_func(local_rank, world_size, config, global_rank)`` on ``num_processes`` processes of this machine
    on ``config.machine.device_type``, with nerfstudio's launcher and :func:`distributed_worker`."""
    from nerfstudio.scripts import train

    use_cpu_capable_worker()
    train.launch(main_func=main_func, num_devices_per_machine=num_processes, num_machines=1, machine_rank=0,
                 dist_url=dist_url, config=config, device_type=config.machine.device_type)  # fmt: skip


def train_and_record(record_dir: Path, local_rank: int, world_size: int, config: Any, global_rank: int = 0) -> None:
    """Train ``config.max_num_iterations`` steps on this rank (nerfstudio's seed: ``machine.seed + rank``), then
    write ``rank<R>.pt`` into ``record_dir``: the losses per step, the training seconds, the rays this rank
    drew and the model's state (trained weights and EMA). Rank 0 also saves the run (config.yml and a
    checkpoint under ``config.output_dir``) and writes ``run.txt`` with its config path."""
    from mri_nerfstudio.nerf.session import TrainingSession, seed_everything

    seed_everything(config.machine.seed + global_rank)
    session = TrainingSession(config, config.output_dir, local_rank=local_rank, world_size=world_size)
    losses = [sum(session.step().values()) for _ in range(config.max_num_iterations)]
    if global_rank == 0:
        session.trainer.config.save_config()
        session.save_checkpoint()
        (Path(record_dir) / "run.txt").write_text(str(session.trainer.config.get_base_dir() / "config.yml"))
    state = {name: value.detach().cpu() for name, value in session.pipeline.state_dict().items()}
    rays = session.pipeline.datamanager.get_train_rays_per_batch() * config.max_num_iterations
    torch.save({"losses": losses, "seconds": session.train_seconds, "rays": rays, "state": state},
               Path(record_dir) / f"rank{global_rank}.pt")  # fmt: skip
