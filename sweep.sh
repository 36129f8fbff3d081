#!/usr/bin/env bash
# Run a sweep: every argument passes through to `python train.py -m`; without arguments, the
# reference β sweep (conv VAE, MSE, z=20, 10 epochs, β = 1, 3, 8, 16).
#
#   ./sweep.sh                                          # = python train.py -m +experiment=conv_mse_z20_beta
#   ./sweep.sh +experiment=conv_mse_z2_beta hydra/launcher=joblib hydra.launcher.n_jobs=3
#   ./sweep.sh model=conv loss=mse beta=1,4 z_dim=2,20  # any grid
#   PYTHON=.venv/bin/python ./sweep.sh                  # another interpreter (default: python)
#
# Afterwards: python -m vae_lab.report outputs/sweeps/<date_time>  (see docs/sweeps.md)
set -euo pipefail
cd "$(dirname "$0")"
if [ $# -eq 0 ]; then
    set -- +experiment=conv_mse_z20_beta
fi
exec "${PYTHON:-python}" train.py -m "$@"
