"""Small convolutional VAE of the reference course project (826,424 parameters at z=20 on 1×28×28
images): three 3x3 convolutions (strides 1, 2, 1; ``channels`` wide) and a dense layer of ``hidden``
units to mu and logvar; the decoder is dense, z -> hidden -> P -> P for the P = C·H·W pixels (-> D·H·W for a likelihood of D
outputs per pixel position).

The reference code prints stride 2 for the third convolution, but its model summary (4x14x14 output)
and parameter count show that stride 1 is what was trained, so stride 1 is used here.
"""
import math

from torch import nn

from vae_lab.arguments import PositiveInt
from vae_lab.likelihoods.base import Likelihood
from vae_lab.models.base import VAE
from vae_lab.registry import MODELS

MAX_DECODER_WEIGHTS = 200_000_000  # the dense P x D·H·W layer of larger images would not fit in memory


@MODELS.register("conv")
class ConvVAE(VAE):
    def __init__(self, z_dim: PositiveInt = 20, channels: tuple[PositiveInt, PositiveInt, PositiveInt] = (6, 16, 4),
                 hidden: PositiveInt = 128, *, image_shape: tuple[int, int, int], likelihood: Likelihood | None = None):
        super().__init__(z_dim, image_shape, likelihood)
        colours, height, width = self.image_shape
        size = "x".join(map(str, self.image_shape))
        if min(height, width) < 4:
            raise ValueError(f"images of {size} are too small for its stride-2 convolution (at least 4x4 pixels)")
        if self.pixels * self.outputs > MAX_DECODER_WEIGHTS:
            raise ValueError(f"images of {size} would need a dense {self.pixels}x{self.outputs} decoder layer "
                             f"({self.pixels * self.outputs:,} weights, {self.output_shape[0]} outputs per pixel position "
                             "for the likelihood); use smaller images, a likelihood of fewer outputs (e.g. "
                             "loss.likelihood.components) or a model of your own")
        c1, c2, c3 = channels
        features = c3 * math.ceil(height / 2) * math.ceil(width / 2)  # after the stride-2 convolution
        self.encoder = nn.Sequential(
            nn.Conv2d(colours, c1, 3, stride=1, padding=1), nn.ReLU(),  # c1 x H x W
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.ReLU(),       # c2 x H/2 x W/2
            nn.Conv2d(c2, c3, 3, stride=1, padding=1), nn.ReLU(),       # c3 x H/2 x W/2
            nn.Flatten(), nn.Linear(features, hidden), nn.ReLU(),
        )
        self.mu = nn.Linear(hidden, z_dim)
        self.logvar = nn.Linear(hidden, z_dim)
        self.decoder = nn.Sequential(
            nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, self.pixels), nn.ReLU(),
            nn.Linear(self.pixels, self.outputs),
        )
