"""``model=hvae``: two stochastic layers, as in Burda, Grosse & Salakhutdinov (2015), section 5,

    inference   q(z1|x) q(z2|z1)           x -> hidden -> z1 -> top_hidden -> z2
    generative  p(z2) p(z1|z2) p(x|z1)     z2 -> top_hidden -> z1 -> hidden -> x

every conditional a diagonal Gaussian (p(x|z1) the likelihood's), all dense; Burda et al. used
hidden=(100, 100), z_dim=100, top_hidden=(50, 50), top_dim=50. The codes are z1 (``z_dim``): what
``encode`` gives and ``decode`` reads, so what handles one layer's codes (the samplers, the pictures,
the disentanglement metrics) handles these. The layer above is the model's prior over its codes,
``CodePrior``, and the run's ``prior=`` is p(z2), the top (docs/theory.md, section 7, "Two stochastic layers").
"""
import torch
from torch import nn

from vae_lab.arguments import PositiveInt
from vae_lab.gaussian import gaussian_log_prob, log_q
from vae_lab.likelihoods.base import Likelihood
from vae_lab.models.base import mlp
from vae_lab.models.dense import DenseVAE
from vae_lab.priors.base import Prior
from vae_lab.registry import MODELS


class GaussianLayer(nn.Module):
    """A diagonal Gaussian over (…, n_out) given (…, n_in): its mean and log-variance from an MLP."""

    def __init__(self, n_in: int, hidden: tuple[int, ...], n_out: int):
        super().__init__()
        self.net = mlp([n_in, *hidden], relu_last=True)
        self.mu, self.logvar = nn.Linear(hidden[-1], n_out), nn.Linear(hidden[-1], n_out)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.net(h)
        return self.mu(h), self.logvar(h)


class CodePrior(Prior):
    """p(z1) = ∫ p(z1|z2) p(z2) dz2 over the codes z1 of a two-layer model, through the layer above:
    the inference network q(z2|z1) (``up``), the generative p(z1|z2) (``down``) and the top prior
    p(z2) (``top``, the run's ``prior=``). Its log-density is estimated from one draw z2 ~ q(z2|z1)
    per code,

        log p(z1) ≈ log p(z1|z2) + log p(z2) − log q(z2|z1),

    whose exponential is unbiased. So the importance-weighted bound that uses it is Burda et al.'s
    two-layer bound (each of the k draws takes its own z1 and z2), the ELBO the two-layer ELBO, and
    the Monte Carlo KL of ``Prior.kl`` the sum of both layers' KL. Not closed-form, not factorised:
    free bits and ``loss=btcvae`` refuse it."""

    def __init__(self, z_dim: int, top_dim: int, hidden: tuple[int, ...]):
        super().__init__(z_dim)
        self.up = GaussianLayer(z_dim, hidden, top_dim)  # q(z2|z1)
        self.down = GaussianLayer(top_dim, tuple(reversed(hidden)), z_dim)  # p(z1|z2)
        self.top = None  # p(z2), set by HierarchicalVAE.set_prior

    def layer_log_probs(self, z1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For codes z1 (…, z_dim) and one draw z2 ~ q(z2|z1) each: log p(z1|z2), log p(z2) and
        log q(z2|z1), each (…) nats. z2 is reparameterised: gradients reach q(z2|z1) through it."""
        mu2, logvar2 = self.up(z1)
        eps = torch.randn_like(mu2)
        z2 = mu2 + torch.exp(0.5 * logvar2) * eps
        return gaussian_log_prob(z1, *self.down(z2)), self.top.log_prob(z2), log_q(eps, logvar2)

    def log_prob(self, z):
        log_p_z1, log_p_z2, log_q_z2 = self.layer_log_probs(z)
        return log_p_z1 + log_p_z2 - log_q_z2

    def layer_kls(self, mu, logvar, z):
        log_p_z1, log_p_z2, log_q_z2 = self.layer_log_probs(z)
        log_q_z1 = gaussian_log_prob(z, mu, logvar)
        per_image = {"kl_z1": log_q_z1 - log_p_z1, "kl_z2": log_q_z2 - log_p_z2}
        return {name: value.reshape(-1, len(mu)).mean(0) for name, value in per_image.items()}

    def layer_means(self, mu):
        # E_q[z2|x] taken at z1 = E_q[z1|x]: one pass, not an average over draws of z1
        return {"z2": self.up(mu)[0]}

    def sample(self, n, generator=None, temperature=1.0):
        z2 = self.top.sample(n, generator, temperature).to(self.up.mu.weight.device)
        mu1, logvar1 = self.down(z2)
        eps = torch.randn(mu1.shape, generator=generator).to(mu1.device)
        return mu1 + temperature * torch.exp(0.5 * logvar1) * eps


@MODELS.register("hvae")
class HierarchicalVAE(DenseVAE):
    def __init__(self, z_dim: PositiveInt = 100, hidden: tuple[PositiveInt, ...] = (200, 200),
                 top_dim: PositiveInt = 50, top_hidden: tuple[PositiveInt, ...] = (100, 100), *,
                 image_shape: tuple[int, int, int], likelihood: Likelihood | None = None):
        super().__init__(z_dim, hidden, image_shape=image_shape, likelihood=likelihood)
        if not top_hidden:
            raise ValueError("top_hidden=[] needs at least one width")
        self.prior = CodePrior(z_dim, top_dim, tuple(top_hidden))
        self.prior_dim = top_dim

    def set_prior(self, prior: Prior) -> None:
        self.prior.top = prior

    def encode_top(self, x, y=None):
        # q(z2|z1) at z1 = E_q[z1|x]: the top posterior q(z2|x) = ∫ q(z2|z1) q(z1|x) dz1 is no Gaussian
        return self.prior.up(self.encode(x, y)[0])
