#!/usr/bin/env bash
# Run the reference β sweep (conv VAE, MSE, z=20, 10 epochs, β = 1, 3, 8, 16), one run folder per β
# under outputs/sweeps/<date_time>/; every argument passes through to Hydra, after the preset.
#
#   ./sweep.sh                                          # python train.py -m +experiment=conv_mse_z20_beta
#   ./sweep.sh hydra/launcher=joblib hydra.launcher.n_jobs=2 trainer.accelerator=cpu
#   ./sweep.sh experiment=conv_mse_z2_beta beta=3,16    # another preset, with a grid of its own
#   PYTHON=.venv/bin/python ./sweep.sh                  # another interpreter (default: python)
#   ./sweep.sh hydra.sweep.dir=outputs/sweeps/<date_time>   # killed, or a job failed: the same again finishes it
#
# Any other grid: python train.py -m model=conv beta=1,4 z_dim=2,20. Afterwards:
# python -m vae_lab.report outputs/sweeps/<date_time> (see docs/sweeps.md).
set -euo pipefail
cd "$(dirname "$0")"
exec "${PYTHON:-python}" train.py -m +experiment=conv_mse_z20_beta "$@"
