"""``prior=mog``: a learned mixture of K diagonal Gaussians, p(z) = Σ_k π_k N(z; m_k, diag(s_k²)),
its means, log-variances and weight logits trained with the model. The KL to it has no closed form:
the loss and the metrics estimate it from their draws of z (``Prior.kl``)."""
import torch
import torch.nn.functional as F
from torch import nn

from vae_lab.arguments import PositiveInt
from vae_lab.models.base import LOG_2PI
from vae_lab.priors.base import Prior
from vae_lab.registry import PRIORS


@PRIORS.register("mog")
class MixtureOfGaussians(Prior):
    def __init__(self, z_dim: int, components: PositiveInt = 10):
        super().__init__(z_dim)
        self.means = nn.Parameter(torch.randn(components, z_dim))  # spread out, from the run's seed
        self.log_vars = nn.Parameter(torch.zeros(components, z_dim))
        self.logits = nn.Parameter(torch.zeros(components))  # equal weights to begin with

    def log_prob(self, z):
        diff = z.unsqueeze(-2) - self.means  # (..., K, z_dim)
        per_component = -0.5 * (diff.pow(2) / self.log_vars.exp() + self.log_vars + LOG_2PI).sum(-1)
        return torch.logsumexp(per_component + F.log_softmax(self.logits, -1), dim=-1)

    def sample(self, n, generator=None, temperature=1.0):
        weights = F.softmax(self.logits.detach(), -1).cpu()
        component = torch.multinomial(weights, n, replacement=True, generator=generator).to(self.means.device)
        eps = torch.randn(n, self.z_dim, generator=generator).to(self.means.device)
        return self.means[component] + temperature * (0.5 * self.log_vars[component]).exp() * eps
