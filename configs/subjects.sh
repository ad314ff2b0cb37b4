#!/usr/bin/env bash
# Several subjects in one field: a BraTS root of subject folders, of which the first N (by name) train and the
# rest are held out (never trained on; rendered from their scans by the slice encoder and scored by ns-eval).
# Each subject has its own code and 32^3 feature grid; 64 px views, 1,000 steps of `mri-mednerf` on the CPU:
# the setting of the README's headline figures (24 real brains, 6 held out; scripts/bench_subjects.py).
#
#   configs/subjects.sh brats/ 24
#   configs/subjects.sh brats/ 24 --max-num-iterations 2000      # more arguments: ns-train method flags
# Then fit a held-out subject to one of its views:
#   mri-reconstruct --load-config outputs/.../config.yml --volume brats/<held-out subject> --azimuth-deg 0 --out recon/
set -euo pipefail
data="${1:?usage: configs/subjects.sh DATA N [ns-train method flags...]}"
train="${2:?usage: configs/subjects.sh DATA N [ns-train method flags...]}"
shift 2
exec ns-train mri-mednerf "$@" mri-data --data "$data" --train-subjects "$train" --prepare.image-size 64
