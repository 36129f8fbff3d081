"""Train one VAE run: ``python train.py [key=value ...]`` in a checkout, the same command as
``python -m vae_lab.train`` (vae_lab/train.py) and the installed ``vae-lab``.

    python train.py                                   # dense VAE, BCE, β=1, z=20, 20 epochs
    python train.py model=conv loss=mse beta=8 z_dim=2
    python train.py -m beta=1,3,8,16                  # a sweep, one run folder each
"""
from vae_lab.train import main

if __name__ == "__main__":
    main()
