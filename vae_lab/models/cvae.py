"""Conditional VAE of the reference course project (330,824 parameters at z=20).

The one-hot digit label is concatenated to the flattened image (794 inputs) and to z, so
q(z|x, y) and p(x|z, y) both see it, and ``sample(n, y)`` draws digits of a chosen class.
"""
import torch
import torch.nn.functional as F
from torch import nn

from vae_lab.models.base import VAE


class CVAE(VAE):
    num_classes = 10

    def __init__(self, z_dim: int = 20):
        super().__init__(z_dim)
        self.encoder = nn.Sequential(nn.Linear(784 + self.num_classes, 200), nn.ReLU())
        self.mu = nn.Linear(200, z_dim)
        self.logvar = nn.Linear(200, z_dim)
        self.decoder = nn.Sequential(
            nn.Linear(z_dim + self.num_classes, 200), nn.ReLU(), nn.Linear(200, 784)
        )

    def _with_one_hot(self, features: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if y is None:
            raise ValueError("the cvae model is conditional: pass digit labels y of shape (B,)")
        return torch.cat([features, F.one_hot(y, self.num_classes).to(features.dtype)], dim=1)

    def encoder_input(self, x, y):
        return self._with_one_hot(x.flatten(1), y)

    def decoder_input(self, z, y):
        return self._with_one_hot(z, y)
