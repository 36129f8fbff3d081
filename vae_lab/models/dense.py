"""Fully connected VAE of the reference course project: 784-256-128-z and back (476,216 parameters at z=20)."""
from torch import nn

from vae_lab.models.base import VAE


class DenseVAE(VAE):
    def __init__(self, z_dim: int = 20):
        super().__init__(z_dim)
        self.encoder = nn.Sequential(
            nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU()
        )
        self.mu = nn.Linear(128, z_dim)
        self.logvar = nn.Linear(128, z_dim)
        self.decoder = nn.Sequential(
            nn.Linear(z_dim, 128), nn.ReLU(), nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 784)
        )
