"""What every prior p(z) over (…, z_dim) latents provides:

    log_prob(z)               log p(z), summed over the last dimension (nats)
    kl_per_dim(mu, logvar)    KL(q(z|x) ‖ p(z)) per latent dimension (B, z_dim), for a prior with a
                              closed form (``closed_form_kl``) that factorises over dimensions
    kl(mu, logvar, z)         the per-image KL (B,): the closed form where there is one, else the
                              Monte Carlo estimate log q(z|x) − log p(z) from the draws z (…, B, z_dim)
                              (``log_pz``, log p(z) of those draws, when the caller has it already)
    sample(n, generator)      n latents (n, z_dim) drawn from p(z) on the CPU
    layer_kls(mu, logvar, z)  for a prior with stochastic layers of its own (``model=hvae``'s), the KL
                              of each layer per image (B,) estimated from the draws z; {} otherwise
    layer_means(mu)           for such a prior, the posterior means (N, d) of each layer above the
                              codes, given the codes' means mu (N, z_dim): their active units; {} otherwise
    quantiles(probabilities)  per dimension, the latents at those marginal probabilities (P, z_dim):
                              the axes of the manifold and the traversals

The loss, the IWAE bound, the metrics, the samplers and the pictures use these, never N(0, I)
written out. ``factorises`` says whether p(z) = Π_d p(z_d), so that log_prob(z) is a sum of
per-dimension terms (``loss=btcvae`` needs it). q(z|x) is every model's diagonal Gaussian (``vae_lab.gaussian.log_q``).
"""
import torch
from torch import nn

from vae_lab.gaussian import log_q


class Prior(nn.Module):
    closed_form_kl = False  # True when kl_per_dim has a closed form
    factorises = False  # True when p(z) is a product over latent dimensions

    def __init__(self, z_dim: int):
        super().__init__()
        self.z_dim = z_dim

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def kl_per_dim(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no closed-form KL per dimension")

    def kl(self, mu: torch.Tensor, logvar: torch.Tensor, z: torch.Tensor,
           log_pz: torch.Tensor | None = None) -> torch.Tensor:
        if self.closed_form_kl:
            return self.kl_per_dim(mu, logvar).sum(-1)
        eps = (z - mu) * torch.exp(-0.5 * logvar)
        log_pz = self.log_prob(z) if log_pz is None else log_pz
        return (log_q(eps, logvar) - log_pz).reshape(-1, len(mu)).mean(0)

    def layer_kls(self, mu: torch.Tensor, logvar: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def layer_means(self, mu: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def sample(self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def quantiles(self, probabilities: torch.Tensor) -> torch.Tensor:
        """Empirical marginal quantiles of 10,000 fixed draws; a prior with a closed form overrides it."""
        draws = self.sample(10_000, torch.Generator().manual_seed(0))
        return torch.quantile(draws.double(), probabilities.double(), dim=0).float()
