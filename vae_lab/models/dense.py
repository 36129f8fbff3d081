"""Fully connected VAE: 784-256-128-z and back by default, the reference course project's model
(476,216 parameters at z=20); ``hidden`` sets other widths, e.g. (512, 256) or (200, 200)."""
from torch import nn

from vae_lab.models.base import PIXELS, VAE, mlp


class DenseVAE(VAE):
    def __init__(self, z_dim: int = 20, hidden: tuple[int, ...] = (256, 128)):
        super().__init__(z_dim)
        labels = self.num_classes  # a conditional subclass appends the one-hot label to x and z
        self.encoder = mlp([PIXELS + labels, *hidden], relu_last=True)
        self.mu = nn.Linear(hidden[-1], z_dim)
        self.logvar = nn.Linear(hidden[-1], z_dim)
        self.decoder = mlp([z_dim + labels, *reversed(hidden), PIXELS])

    def encoder_input(self, x, y):
        return x.flatten(1)
