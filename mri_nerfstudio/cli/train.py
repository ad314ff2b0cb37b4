"""``mri-train``: ``ns-train``, whose ``--machine.num-devices N`` also runs on CPUs (gloo).

Every argument is ``ns-train``'s. nerfstudio 1.1.5 spawns its distributed workers only on CUDA; this
command swaps in :func:`~mri_nerfstudio.nerf.distributed.distributed_worker` (NCCL on GPUs as before, gloo
on CPUs) and refuses, on one line, a device count the machine lacks. Examples::

    mri-train mri-mednerf --machine.num-devices 2 --machine.device-type cpu mri-data --data brats/
    mri-train mri-mednerf-gpu --machine.num-devices 4 mri-data --data brats/   # 4 GPUs, as ns-train does
"""

from __future__ import annotations


def main() -> None:
    from nerfstudio.scripts import train

    from mri_nerfstudio.nerf.distributed import use_cpu_capable_worker

    use_cpu_capable_worker()
    train.entrypoint()


if __name__ == "__main__":
    main()
