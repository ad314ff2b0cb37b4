#!/usr/bin/env bash
# The CPU demo's training: the ns-train command that `mri-demo` runs (step 2 of 4). The `mri-mednerf` method
# (feature grids: the `cpu` preset at its learning rate) trains 1,000 steps on the CPU on the 15 training views
# (128 px) of the embedded MNI152 template: a few minutes on two cores.
#
#   configs/cpu-demo.sh                                   # the run lands in demo_out/runs/MNI152/mri-mednerf/
#   configs/cpu-demo.sh --viewer.quit-on-train-completion False --vis viewer   # more ns-train method flags
#
# Then score and render it, as the demo does (ns-train prints the run folder):
#   ns-eval --load-config demo_out/runs/MNI152/mri-mednerf/<timestamp>/config.yml --output-path eval.json
#   ns-render camera-path --load-config demo_out/runs/MNI152/mri-mednerf/<timestamp>/config.yml \
#       --camera-path-filename configs/turntable.json --output-path turntable.mp4
set -euo pipefail
exec ns-train mri-mednerf \
    --output-dir demo_out/runs --experiment-name MNI152 \
    --max-num-iterations 1000 --steps-per-save 1000 \
    --pipeline.datamanager.patch-size 32 \
    --vis tensorboard --viewer.quit-on-train-completion True \
    "$@" \
    mri-data --cache-dir demo_out/cache --prepare.image-size 128
