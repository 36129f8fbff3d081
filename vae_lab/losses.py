"""The training objective: the (β-weighted, importance-weighted) negative ELBO per sample.

    loss(x) = recon(x) + KL term          recon summed over the 784 pixels, KL over latent dimensions

Every term is a mean over the batch, i.e. in per-sample units (nats for ``bce``). How the KL term
is weighted as training goes is the KL schedule's (``vae_lab.schedules``): β · KL by default.
Reference: Kingma & Welling (2013), "Auto-Encoding Variational Bayes", Appendix B for the KL;
Burda, Grosse & Salakhutdinov (2015) for the importance-weighted bound; Kingma et al. (2016)
for free bits.
"""
import math

import torch
import torch.nn.functional as F

from vae_lab.config import LIKELIHOODS, check_choice

LOG_2PI = math.log(2 * math.pi)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) ‖ N(0, I)) per dimension, in nats; same shape as mu.

    Closed form: 0.5 · (mu² + σ² − 1 − log σ²). Sum over the last dimension for the per-sample KL.
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def reconstruction_error(logits: torch.Tensor, x: torch.Tensor, likelihood: str) -> torch.Tensor:
    """Per-sample reconstruction term (B,), summed over the 784 pixels.

    ``bce``: −log p(x|z) of a Bernoulli decoder in nats. Grey levels in [0, 1] are allowed, but then
    it is a cross-entropy rather than a likelihood, not comparable to NLLs on binarized digits.
    ``mse``: squared error of sigmoid(logits) against x — a Gaussian decoder with fixed variance
    σ² = 1/2, up to a constant (so it is *not* in nats, and its β is not the ``bce`` β).
    """
    if likelihood == "bce":
        per_pixel = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    else:
        per_pixel = (torch.sigmoid(logits) - x).pow(2)
    return per_pixel.flatten(1).sum(1)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I), summed over the last dimension (nats)."""
    return -0.5 * (z.pow(2) + LOG_2PI).sum(-1)


class VAELoss:
    """Callable: (model, x, y, mu, logvar, kl_schedule, epoch) -> {'loss', 'recon', 'kl'}, each a
    scalar batch mean; mu, logvar (B, z_dim) are the model's encoding of x.

    ``likelihood``: 'bce' or 'mse'. ``iwae_k``: samples of z per image. With k = 1 this is the
    ELBO with one z; with k > 1 its reconstruction part is the importance-weighted one, written
    with the closed-form KL and a zero-mean correction β·(r_i − r̄), r_i = log p(z_i) − log q(z_i|x),
    inside the log-mean-exp (β: the KL schedule's weight): in expectation exactly the IWAE bound
    of Burda et al. (for β = 1), and for k = 1 exactly the ELBO (docs/theory.md, section 7).
    'recon' reports −log p(x|z) averaged over the k draws, 'kl' the closed-form KL.
    ``free_bits`` λ (nats, ≥ 0): each latent dimension's batch-mean KL enters the KL term as at
    least λ, so the objective stops pushing a dimension's KL below λ (Kingma et al. 2016);
    'kl' still reports the true KL.
    """

    def __init__(self, likelihood: str, iwae_k: int = 1, free_bits: float = 0.0):
        check_choice("loss.likelihood", likelihood, LIKELIHOODS)
        if not (isinstance(iwae_k, int) and iwae_k >= 1):
            raise ValueError(f"iwae_k={iwae_k} must be an integer >= 1")
        if not free_bits >= 0:
            raise ValueError(f"free_bits={free_bits} must be >= 0")
        self.likelihood, self.iwae_k, self.free_bits = likelihood, iwae_k, free_bits

    def __call__(self, model, x, y, mu, logvar, kl_schedule, epoch: float | None = None) -> dict[str, torch.Tensor]:
        k = self.iwae_k
        eps = torch.randn(k, *mu.shape, dtype=mu.dtype, device=mu.device)
        z = model.reparameterize(mu, logvar, eps)  # (k, B, z_dim)
        # expand + flatten: a view for k = 1, the k copies otherwise
        logits = model.decode(z.flatten(0, 1), None if y is None else y.expand(k, -1).flatten())
        log_px = -reconstruction_error(logits, x.expand(k, *x.shape).flatten(0, 1), self.likelihood).view(k, len(x))
        if k == 1:
            fit = -log_px[0]  # r − r̄ is exactly 0: the ELBO's reconstruction term
        else:
            # log q(z|x) = log N(eps; 0, I) − Σ log σ, the change of variables z = mu + σ·eps
            r = standard_normal_log_prob(z) - standard_normal_log_prob(eps) + 0.5 * logvar.sum(-1)
            # the prior ratio carries the schedule's weight, as the KL term does: the β-weighted
            # bound, which stays bounded while a warm-up holds β near 0
            fit = math.log(k) - torch.logsumexp(log_px + kl_schedule.weight(epoch) * (r - r.mean(0)), dim=0)
        kl_per_dim = kl_divergence(mu, logvar)
        kl = kl_per_dim.sum(1).mean()
        penalised = kl_per_dim.mean(0).clamp(min=self.free_bits).sum() if self.free_bits else kl
        return {"loss": fit.mean() + kl_schedule.term(penalised, epoch), "recon": -log_px.mean(), "kl": kl}
