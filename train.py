"""Train one VAE run.

    python train.py                                   # dense VAE, BCE, β=1, z=20, 20 epochs
    python train.py model=conv loss=mse beta=8 z_dim=2
    python train.py -m beta=1,3,8,16                  # a sweep, one run folder each

Options are in conf/; every run writes config, checkpoints and TensorBoard events to outputs/.
"""
import sys

import hydra
from omegaconf import DictConfig

from vae_lab.errors import VaeLabError


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from vae_lab.train import train  # imported here so that --help and config errors stay fast

    try:
        return train(cfg)
    except VaeLabError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
