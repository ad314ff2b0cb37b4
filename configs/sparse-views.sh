#!/usr/bin/env bash
# Sparse views: 4 training views per subject instead of 15. View i of the 72-view orbit trains when
# i % 18 == 0 (azimuths 0, 90, 180, 270 degrees); of the other 68, 14 are val views (the Trainer's
# evaluation) and 54 test views (ns-eval). The `mri-mednerf` method (feature grids, 1,000 steps on the CPU).
#
#   configs/sparse-views.sh brats/
#   configs/sparse-views.sh brats/ --max-num-iterations 500    # more arguments: ns-train method flags
set -euo pipefail
data="${1:?usage: configs/sparse-views.sh DATA [ns-train method flags...]}"
shift
exec ns-train mri-mednerf "$@" mri-data --data "$data" --train-every 18
