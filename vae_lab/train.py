"""Train one VAE run from the command line (Hydra).

    python -m vae_lab.train                          # dense VAE, BCE, β=1, z=20, 20 epochs
    python -m vae_lab.train model=conv loss=mse beta=8 z_dim=2
    python -m vae_lab.train -m beta=1,3,8,16         # a sweep, one run folder each (vae_lab.sweep)
    vae-lab ...                                      # the same, as the installed console command
    vae-lab sweep status <sweep folder>              # vae-lab COMMAND ... is python -m vae_lab.COMMAND ...

The options are the configs in vae_lab/conf/ (shipped inside the package); every run writes its
config, checkpoints and TensorBoard events to outputs/ under the current folder. In a checkout,
``python train.py`` is the same command.
"""
import os
import runpy
import sys
import tempfile
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from vae_lab import sweep
from vae_lab.config import check_config, remove_if_half_made
from vae_lab.errors import VaeLabError
from vae_lab.stacked_launcher import StackedLauncher  # noqa: F401  registers hydra/launcher=stacked

# vae-lab COMMAND ... runs python -m vae_lab.COMMAND ...; any other first word is part of a training
# command line (no override is a bare word)
COMMANDS = ("sweep", "explore")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def run(cfg: DictConfig) -> float:
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        return sweep.run_job(cfg)  # skips, resumes or trains the job; a failure does not end the sweep
    try:
        check_config(cfg)  # before importing torch and Lightning, so that bad values fail fast
        from vae_lab.training import train

        return train(cfg)
    except VaeLabError as error:
        remove_if_half_made(Path(HydraConfig.get().runtime.output_dir))
        sys.exit(f"error: {error}")


def main() -> None:
    """``python train.py``, ``python -m vae_lab.train`` and ``vae-lab``: a training command line
    (Hydra's), or ``COMMAND ...`` for one of ``COMMANDS``. A sweep (``-m``) ends with the table of
    its jobs, exit status 1 when one of them did not finish (``vae_lab.sweep.end_of_sweep``)."""
    if len(sys.argv) > 1 and sys.argv[1] in COMMANDS:
        command = sys.argv[1]
        sys.argv = [f"vae-lab {command}", *sys.argv[2:]]
        # as python -m vae_lab.COMMAND; runpy's warning that this module is imported already (here,
        # for Hydra) is moot: it runs anew as __main__
        warnings.filterwarnings("ignore", message=".*found in sys.modules after import of package", category=RuntimeWarning)
        runpy.run_module(f"vae_lab.{command}", run_name="__main__", alter_sys=True)
        return
    with tempfile.TemporaryDirectory(prefix="vae_lab-sweep-") as outcomes:  # where a sweep's jobs say what they did
        os.environ[sweep.OUTCOMES] = outcomes  # inherited by the joblib launcher's worker processes
        try:
            run()
            status = sweep.end_of_sweep(Path(outcomes))
        except KeyboardInterrupt:
            sweep.end_of_sweep(Path(outcomes))
            status = 130
        finally:
            del os.environ[sweep.OUTCOMES]
    if status:
        sys.exit(status)


if __name__ == "__main__":
    main()
