"""``loss=mse``: every pixel Gaussian around sigmoid(logit) with the fixed variance σ² = 1/2, so that
−log p(x|z) = Σ (x − p)² + (D/2)·log π. The loss minimises the squared error alone (the constant
dropped: it is *not* in nats, and its β is not the ``bce`` β); the metrics report the density."""
import math

import torch

from vae_lab.likelihoods.base import Likelihood
from vae_lab.registry import LIKELIHOODS


@LIKELIHOODS.register("mse")
class FixedGaussian(Likelihood):
    def reconstruction(self, logits, x):
        return (torch.sigmoid(logits) - x).pow(2).flatten(1).sum(1)

    def log_prob(self, logits, x):
        return -self.reconstruction(logits, x) - 0.5 * x[0].numel() * math.log(math.pi)

    def mean(self, logits):
        return torch.sigmoid(logits)

    def flat_log_prob(self, logits, x):
        x = x.flatten(1)
        squared_error = (torch.sigmoid(logits.flatten(2)) - x.unsqueeze(1)).pow(2).sum(-1)
        return -squared_error - 0.5 * x.shape[-1] * math.log(math.pi)
