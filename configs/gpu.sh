#!/usr/bin/env bash
# MedNeRF's network on a GPU: the `mri-mednerf-gpu` method (the `mednerf` preset: GRAF / MedNeRF's 8 x 256 MLP,
# 64 samples per ray, at its learning rate 5e-4) trains 30,000 steps on CUDA with mixed precision, on every
# subject of DATA (a BraTS root, a subject folder or a NIfTI / NRRD file), 15 training views each at 128 px.
# The viewer runs on http://127.0.0.1:7007 and tensorboard logs the val views' scores as it trains.
#
#   configs/gpu.sh brats/
#   configs/gpu.sh brats/ --max-num-iterations 10000      # more arguments: ns-train method flags
#   configs/gpu.sh brats/ --pipeline.model.preset cpu     # the feature grids on the GPU (their own rate, 2e-2)
set -euo pipefail
data="${1:?usage: configs/gpu.sh DATA [ns-train method flags...]}"
shift
exec ns-train mri-mednerf-gpu --vis viewer+tensorboard "$@" mri-data --data "$data"
