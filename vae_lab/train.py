"""Train one VAE run from the command line (Hydra).

    python -m vae_lab.train                          # dense VAE, BCE, β=1, z=20, 20 epochs
    python -m vae_lab.train model=conv loss=mse beta=8 z_dim=2
    python -m vae_lab.train -m beta=1,3,8,16         # a sweep, one run folder each
    vae-lab ...                                      # the same, as the installed console command

The options are the configs in vae_lab/conf/ (shipped inside the package); every run writes its
config, checkpoints and TensorBoard events to outputs/ under the current folder. In a checkout,
``python train.py`` is the same command.
"""
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from vae_lab.config import check_config
from vae_lab.errors import VaeLabError

# What Hydra writes into a run folder before train(cfg) runs.
HYDRA_FILES = {".hydra", ".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", "train.log"}


def remove_if_half_made(run_dir: Path) -> None:
    """Remove run_dir if it holds nothing but what Hydra wrote for this process.

    Hydra rewrites .hydra/ for every run it starts in a folder, so only train.log, which it appends
    to, could hold something older: the folder is removed only while train.log is still empty.
    """
    log = run_dir / "train.log"
    if ({str(path.relative_to(run_dir)) for path in run_dir.rglob("*")} <= HYDRA_FILES
            and (not log.exists() or log.stat().st_size == 0)):
        shutil.rmtree(run_dir)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    try:
        check_config(cfg)  # before importing torch and Lightning, so that bad values fail fast
        from vae_lab.training import train

        return train(cfg)
    except VaeLabError as error:
        remove_if_half_made(Path(HydraConfig.get().runtime.output_dir))
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            # SystemExit would end the whole sweep; an exception fails only this job, and Hydra
            # reports it (exit status 1) after the other jobs have run. Raised anew, so that the
            # report's traceback is this one frame, not Lightning's.
            print(f"error: {error}", file=sys.stderr)
            raise VaeLabError(str(error)) from None
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
