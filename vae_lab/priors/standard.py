"""``prior=standard``: z ~ N(0, I), the prior of Kingma & Welling (2013), with the closed-form KL of
their Appendix B: KL(N(mu, σ²) ‖ N(0, 1)) = 0.5 · (mu² + σ² − 1 − log σ²) per dimension."""
import torch

from vae_lab.gaussian import standard_normal_kl, standard_normal_log_prob
from vae_lab.priors.base import Prior
from vae_lab.registry import PRIORS


@PRIORS.register("standard")
class StandardNormal(Prior):
    closed_form_kl = True
    factorises = True

    def log_prob(self, z):
        return standard_normal_log_prob(z)

    def kl_per_dim(self, mu, logvar):
        return standard_normal_kl(mu, logvar)

    def sample(self, n, generator=None, temperature=1.0):
        return temperature * torch.randn(n, self.z_dim, generator=generator)

    def quantiles(self, probabilities):
        return torch.special.ndtri(probabilities.double()).float().unsqueeze(1).expand(-1, self.z_dim)
