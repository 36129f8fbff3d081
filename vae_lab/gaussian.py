"""Diagonal Gaussian densities, in nats, summed over the last dimension: the encoder's q(z|x), the
standard normal prior and the Gaussian layers of a hierarchical model all use these."""
import math

import torch

LOG_2PI = math.log(2 * math.pi)


def log_q(eps: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log q(z|x) of z = mu + σ·eps under the encoder's diagonal Gaussian, summed over the last
    dimension (nats): log N(eps; 0, I) − Σ log σ, the change of variables."""
    return -0.5 * (eps.pow(2) + LOG_2PI).sum(-1) - 0.5 * logvar.sum(-1)


def gaussian_log_prob(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))) summed over the last dimension (nats)."""
    return log_q((z - mu) * torch.exp(-0.5 * logvar), logvar)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I), summed over the last dimension (nats)."""
    return -0.5 * (z.pow(2) + LOG_2PI).sum(-1)


def standard_normal_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) ‖ N(0, I)) per dimension, in nats; the shape of mu (Kingma &
    Welling 2013, Appendix B: 0.5 · (mu² + σ² − 1 − log σ²))."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)
