"""The training objective: the (β-weighted, importance-weighted) negative ELBO per sample.

    loss(x) = recon(x) + KL term          recon summed over the pixels, KL over latent dimensions

Every term is a mean over the batch, i.e. in per-sample units (nats for ``bce``). The likelihood
(``vae_lab.likelihoods``) gives the reconstruction term, the model's prior (``vae_lab.priors``) the
KL; how the KL term is weighted as training goes is the KL schedule's (``vae_lab.schedules``):
β · KL by default. References: Kingma & Welling (2013), "Auto-Encoding Variational Bayes";
Burda, Grosse & Salakhutdinov (2015) for the importance-weighted bound; Kingma et al. (2016) for
free bits; Tucker, Lawson, Gu & Maddison (2018) for the doubly reparameterized gradient (DReG).
"""
import math
from collections.abc import Mapping
from typing import Literal

import torch

from vae_lab.arguments import NonNegative, PositiveInt
from vae_lab.likelihoods import build_likelihood
from vae_lab.models.base import log_q


class VAELoss:
    """Callable: (model, x, y, mu, logvar, kl_schedule, epoch) -> {'loss', 'recon', 'kl'}, each a
    scalar batch mean; mu, logvar (B, z_dim) are the model's encoding of x.

    ``likelihood``: a registered likelihood (``bce``, ``mse``, or a plugin's; a name or
    ``{name: ..., setting: ...}``). ``iwae_k``: samples of z per image. With k = 1 this is the
    ELBO with one z; with k > 1 its reconstruction part is the importance-weighted one, written
    with the KL and a zero-mean correction β·(r_i − r̄), r_i = log p(z_i) − log q(z_i|x), inside
    the log-mean-exp (β: the KL schedule's weight): in expectation exactly the IWAE bound of
    Burda et al. (for β = 1), and for k = 1 exactly the ELBO (docs/theory.md, section 7).
    'recon' reports the reconstruction term averaged over the k draws, 'kl' the prior's KL (the
    closed form where it has one, else the Monte Carlo estimate from the k draws).
    ``free_bits`` λ (nats, ≥ 0): each latent dimension's batch-mean KL enters the KL term as at
    least λ, so the objective stops pushing a dimension's KL below λ (Kingma et al. 2016);
    'kl' still reports the true KL. It needs a prior whose KL is closed-form per dimension.
    ``estimator``: how the gradient is estimated. ``standard`` differentiates the loss as written;
    ``dreg`` (k > 1, the plain bound: β = 1, constant, no free bits) keeps the loss's value and
    gives the encoder the doubly reparameterized gradient of −L_k, the rest the usual one
    (``dreg_bound``).
    """

    def __init__(self, likelihood: str | Mapping = "bce", iwae_k: PositiveInt = 1, free_bits: NonNegative = 0.0,
                 estimator: Literal["standard", "dreg"] = "standard"):
        if not (isinstance(iwae_k, int) and iwae_k >= 1):
            raise ValueError(f"iwae_k={iwae_k} must be an integer >= 1")
        if not free_bits >= 0:
            raise ValueError(f"free_bits={free_bits} must be >= 0")
        if estimator not in ("standard", "dreg"):
            raise ValueError(f"estimator={estimator} must be standard or dreg")
        if estimator == "dreg" and iwae_k == 1:
            raise ValueError("estimator=dreg reweights the k samples of the importance-weighted bound: it needs iwae_k > 1")
        if estimator == "dreg" and free_bits:
            raise ValueError(f"estimator=dreg is the gradient of the plain importance-weighted bound: it needs free_bits=0, "
                             f"not {free_bits}")
        self.likelihood, self.iwae_k, self.free_bits = build_likelihood(likelihood), iwae_k, free_bits
        self.estimator = estimator

    def __call__(self, model, x, y, mu, logvar, kl_schedule, epoch: float | None = None) -> dict[str, torch.Tensor]:
        k, prior = self.iwae_k, model.prior
        eps = torch.randn(k, *mu.shape, dtype=mu.dtype, device=mu.device)
        z = model.reparameterize(mu, logvar, eps)  # (k, B, z_dim)
        # expand + flatten: a view for k = 1, the k copies otherwise
        logits = model.decode(z.flatten(0, 1), None if y is None else y.expand(k, -1).flatten())
        recon = self.likelihood.reconstruction(logits, x.expand(k, *x.shape).flatten(0, 1)).view(k, len(x))
        log_pz = None  # log p(z), once: a VampPrior encodes its pseudo-inputs for it
        if k == 1:
            fit = recon[0]  # r − r̄ is exactly 0: the ELBO's reconstruction term
        else:
            log_pz = prior.log_prob(z)
            r = log_pz - log_q(eps, logvar)
            # the prior ratio carries the schedule's weight, as the KL term does: the β-weighted
            # bound, which stays bounded while a warm-up holds β near 0
            fit = math.log(k) - torch.logsumexp(-recon + kl_schedule.weight(epoch) * (r - r.mean(0)), dim=0)
        if self.free_bits:
            kl_per_dim = prior.kl_per_dim(mu, logvar)
            kl = kl_per_dim.sum(1).mean()
            penalised = kl_per_dim.mean(0).clamp(min=self.free_bits).sum()
        else:
            kl = penalised = prior.kl(mu, logvar, z, log_pz).mean()
        loss = fit.mean() + kl_schedule.term(penalised, epoch)
        if self.estimator == "dreg" and z.requires_grad:
            surrogate = dreg_bound(z, mu, logvar, recon, log_pz).mean()
            loss = loss.detach() + (surrogate - surrogate.detach())  # the loss's value, the surrogate's gradient
        return {"loss": loss, "recon": recon.mean(), "kl": kl}


def dreg_bound(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, recon: torch.Tensor,
               log_pz: torch.Tensor) -> torch.Tensor:
    """−L_k per image (B,) from k draws z (k, B, z_dim) = mu + σ·eps with their reconstruction terms
    and log p(z) (k, B), differentiated with the doubly reparameterized gradient (Tucker et al. 2018;
    docs/theory.md, section 7): log w_i is taken with q's parameters held fixed, so the
    encoder gets only the path through z_i, weighted by the squared normalised weight w̃_i²; the
    decoder and the prior get the usual IWAE gradient −Σ_i w̃_i ∇ log w_i.

    −Σ_i w̃_i ∂ log w_i/∂z_i is what flows back into z_i; a hook on z scales it by w̃_i once more on
    its way to mu and logvar, so the decoder runs once for both."""
    log_q_fixed = log_q((z - mu.detach()) * torch.exp(-0.5 * logvar.detach()), logvar.detach())
    log_w = -recon + log_pz - log_q_fixed
    weights = torch.softmax(log_w.detach(), dim=0)  # w̃_i, (k, B)
    z.register_hook(lambda grad: grad * weights.unsqueeze(-1))
    return math.log(len(z)) - torch.logsumexp(log_w, dim=0)
