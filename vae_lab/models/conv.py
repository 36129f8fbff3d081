"""Small convolutional VAE of the reference course project (826,424 parameters at z=20).

The reference code prints stride 2 for the third convolution, but its model summary (4x14x14 output)
and parameter count show that stride 1 is what was trained, so stride 1 is used here.
"""
from torch import nn

from vae_lab.models.base import VAE


class ConvVAE(VAE):
    def __init__(self, z_dim: int = 20):
        super().__init__(z_dim)
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 6, 3, stride=1, padding=1), nn.ReLU(),    # 6 x 28 x 28
            nn.Conv2d(6, 16, 3, stride=2, padding=1), nn.ReLU(),   # 16 x 14 x 14
            nn.Conv2d(16, 4, 3, stride=1, padding=1), nn.ReLU(),   # 4 x 14 x 14
            nn.Flatten(), nn.Linear(784, 128), nn.ReLU(),
        )
        self.mu = nn.Linear(128, z_dim)
        self.logvar = nn.Linear(128, z_dim)
        self.decoder = nn.Sequential(
            nn.Linear(z_dim, 128), nn.ReLU(), nn.Linear(128, 784), nn.ReLU(), nn.Linear(784, 784)
        )
