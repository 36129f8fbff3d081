"""``loss=gaussian``: every pixel a Gaussian of its own mean and variance, both from the decoder
(2 outputs per channel: the mean μ = sigmoid(·) and the standard deviation σ = min_std + softplus(·),
so σ ≥ ``min_std``, a floor on the variance), discretized to the 256 levels of 8-bit pixels:

    log p(x|z) = Σ_i log [Φ((x_i + 1/510 − μ_i)/σ_i) − Φ((x_i − 1/510 − μ_i)/σ_i)],

the bins at 0 and 1 reaching to ∓∞ (``vae_lab.likelihoods.discretized``). So −log p(x|z) is in nats
of a probability, comparable in bits per dimension with the papers' discrete likelihoods, and never
unbounded as the density of a Gaussian on discrete data would be: a σ below the spacing of the
levels puts all its mass on one level. The discretized Gaussian decoder of Ho et al. (2020, eq. 13);
its continuous density (Rybkin et al. 2021's "σ-VAE") differs from it by log 255 per pixel where
σ is much wider than a level."""
import math

import torch
import torch.nn.functional as F

from vae_lab.arguments import PositiveFloat
from vae_lab.likelihoods.base import Likelihood
from vae_lab.likelihoods.discretized import clamped_mean, log_bin_mass, nearest_level
from vae_lab.registry import LIKELIHOODS


def normal_cdf_integral(z: torch.Tensor) -> torch.Tensor:
    """∫ Φ(z) dz = z·Φ(z) + φ(z)."""
    return z * torch.special.ndtr(z) + torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


@LIKELIHOODS.register("gaussian")
class LearnedGaussian(Likelihood):
    discrete_8bit = True

    def __init__(self, min_std: PositiveFloat = 0.001):
        self.min_std = min_std

    def outputs(self, channels):
        return 2 * channels

    def distribution(self, logits):
        """The decoder's outputs (B, 2C, H, W) -> means and standard deviations, each (B, C, H, W)."""
        mean, spread = logits.chunk(2, dim=1)
        return torch.sigmoid(mean), self.min_std + F.softplus(spread)

    def log_prob(self, logits, x):
        mean, std = self.distribution(logits)
        return log_bin_mass(mean, std, x, torch.special.log_ndtr).flatten(1).sum(1)

    def mean(self, logits):
        return clamped_mean(*self.distribution(logits), normal_cdf_integral)

    def sample(self, logits, generator=None):
        mean, std = self.distribution(logits)
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype).to(mean.device)
        return nearest_level(mean + std * noise)
