"""Small convolutional VAE of the reference course project (826,424 parameters at z=20):
three 3x3 convolutions (strides 1, 2, 1; ``channels`` wide) and a dense layer of ``hidden``
units to mu and logvar; the decoder is dense, z -> hidden -> 784 -> 784.

The reference code prints stride 2 for the third convolution, but its model summary (4x14x14 output)
and parameter count show that stride 1 is what was trained, so stride 1 is used here.
"""
from torch import nn

from vae_lab.models.base import PIXELS, VAE


class ConvVAE(VAE):
    def __init__(self, z_dim: int = 20, channels: tuple[int, int, int] = (6, 16, 4), hidden: int = 128):
        super().__init__(z_dim)
        c1, c2, c3 = channels
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c1, 3, stride=1, padding=1), nn.ReLU(),    # c1 x 28 x 28
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.ReLU(),   # c2 x 14 x 14
            nn.Conv2d(c2, c3, 3, stride=1, padding=1), nn.ReLU(),   # c3 x 14 x 14
            nn.Flatten(), nn.Linear(c3 * 14 * 14, hidden), nn.ReLU(),
        )
        self.mu = nn.Linear(hidden, z_dim)
        self.logvar = nn.Linear(hidden, z_dim)
        self.decoder = nn.Sequential(
            nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, PIXELS), nn.ReLU(), nn.Linear(PIXELS, PIXELS)
        )
