"""Fully connected VAE: 784-256-128-z and back by default, the reference course project's model
(476,216 parameters at z=20 on 1×28×28 images); ``hidden`` sets other widths, e.g. (512, 256) or
(200, 200). Any image shape: it sees the flattened C·H·W pixels."""
from torch import nn

from vae_lab.arguments import PositiveInt
from vae_lab.likelihoods.base import Likelihood
from vae_lab.models.base import VAE, mlp
from vae_lab.registry import MODELS


@MODELS.register("dense")
class DenseVAE(VAE):
    def __init__(self, z_dim: PositiveInt = 20, hidden: tuple[PositiveInt, ...] = (256, 128), *,
                 image_shape: tuple[int, int, int], likelihood: Likelihood | None = None):
        super().__init__(z_dim, image_shape, likelihood)
        if not hidden:
            raise ValueError("hidden=[] needs at least one width")
        labels = self.num_classes  # a conditional subclass appends the one-hot label to x and z
        self.encoder = mlp([self.pixels + labels, *hidden], relu_last=True)
        self.mu = nn.Linear(hidden[-1], z_dim)
        self.logvar = nn.Linear(hidden[-1], z_dim)
        self.decoder = mlp([z_dim + labels, *reversed(hidden), self.outputs])

    def encoder_input(self, x, y):
        return x.flatten(1)
