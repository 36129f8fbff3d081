"""The training objective: the (β-weighted, importance-weighted) negative ELBO per sample.

    loss(x) = recon(x) + KL term          recon summed over the pixels, KL over latent dimensions

Every term is a mean over the batch, i.e. in per-sample units (nats for ``bce``). The model's
likelihood (``model.likelihood``, ``vae_lab.likelihoods``) gives the reconstruction term, its prior
(``vae_lab.priors``) the KL; how the KL term is weighted as training goes is the KL schedule's
(``vae_lab.training.schedules``). The losses are registered in ``vae_lab.registry.LOSSES``
(``loss.name``: ``elbo``, the loss of ``loss=bce`` and ``loss=mse``, and ``btcvae``):
β · KL by default. References: Kingma & Welling (2013), "Auto-Encoding Variational Bayes";
Burda, Grosse & Salakhutdinov (2015) for the importance-weighted bound; Kingma et al. (2016) for
free bits; Tucker, Lawson, Gu & Maddison (2018) for the doubly reparameterized gradient (DReG);
Chen, Li, Grosse & Duvenaud (2018), "Isolating Sources of Disentanglement in VAEs", for
β-TCVAE (``BTCVAELoss``).
"""
import math
from typing import Literal

import torch

from vae_lab.arguments import NonNegative, PositiveInt
from vae_lab.errors import VaeLabError
from vae_lab.gaussian import LOG_2PI, log_q
from vae_lab.registry import LOSSES, MODELS, PRIORS
from vae_lab.training.schedules import Capacity, Constant


def build_loss(config: dict, model, kl_schedule, train_size: int | None = None, plugins=()) -> "VAELoss":
    """The run's loss from its ``loss`` config (plain values), checked against the model and the KL
    schedule it trains with; ``loss.likelihood`` is the model's (``build_model`` reads it), the
    rest the loss's own settings. ``train_size``: the number of training images."""
    settings = {key: value for key, value in config.items() if key != "likelihood"}
    return LOSSES.build(settings, plugins, model=model, kl_schedule=kl_schedule, train_size=train_size)


def prior_choice(model) -> str:
    """The model's prior as the run chose it, for messages: 'prior=<name>', or for the prior a
    model builds over its codes from the layers above them (``model=hvae``), that."""
    chosen = [f"prior={name}" for name, cls in PRIORS.entries.items() if type(model.prior) is cls]
    builder = [f"model={name}" for name, cls in MODELS.entries.items() if type(model) is cls] or [type(model).__name__]
    return chosen[0] if chosen else f"{builder[0]}'s prior over its codes"


@LOSSES.register("elbo")
class VAELoss:
    """Callable: (model, x, y, mu, logvar, kl_schedule, epoch) -> {'loss', 'recon', 'kl'}, each a
    scalar batch mean, and for a prior with layers of its own (``model=hvae``) each layer's KL
    ('kl_z1', 'kl_z2'); mu, logvar (B, z_dim) are the model's encoding of x; the reconstruction
    term is the model's likelihood's.

    ``iwae_k``: samples of z per image. With k = 1 this is the
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

    def __init__(self, iwae_k: PositiveInt = 1, free_bits: NonNegative = 0.0,
                 estimator: Literal["standard", "dreg"] = "standard", *, model=None, kl_schedule=None):
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
        self.iwae_k, self.free_bits, self.estimator = iwae_k, free_bits, estimator
        if model is not None:
            self.check(model, kl_schedule or Constant())

    def check(self, model, kl_schedule) -> None:
        """Raise VaeLabError if this loss cannot train ``model`` with ``kl_schedule`` (the run's:
        ``vae_lab.training`` builds the loss with both, before the run folder gets a file)."""
        if self.free_bits and not model.prior.closed_form_kl:
            raise VaeLabError(f"loss.free_bits={self.free_bits} needs a KL per latent dimension, which "
                              f"{prior_choice(model)} has no closed form for; leave free_bits at 0")
        if self.estimator == "dreg" and not (type(kl_schedule) is Constant and kl_schedule.beta == 1):
            # DReG's weights w̃_i² come from the plain bound; a weight β on the prior ratio changes them
            raise VaeLabError(f"loss.estimator=dreg is the gradient of the plain importance-weighted bound: it needs "
                              f"kl_schedule=constant and beta=1 (this run: {type(kl_schedule).__name__}, "
                              f"beta={kl_schedule.beta})")

    def __call__(self, model, x, y, mu, logvar, kl_schedule, epoch: float | None = None) -> dict[str, torch.Tensor]:
        eps = torch.randn(self.iwae_k, *mu.shape, dtype=mu.dtype, device=mu.device)
        terms, (z, recon, log_pz) = self.terms(model, x, y, mu, logvar, kl_schedule.weight(epoch), eps)
        loss = terms.pop("fit") + kl_schedule.term(terms.pop("penalised"), epoch)
        if self.estimator == "dreg" and z.requires_grad:
            surrogate = dreg_bound(z, mu, logvar, recon, log_pz).mean()
            loss = loss.detach() + (surrogate - surrogate.detach())  # the loss's value, the surrogate's gradient
        return {"loss": loss, **terms, **bits_per_dim(model, x, terms["recon"], terms["kl"])}

    def terms(self, model, x, y, mu, logvar, weight, eps: torch.Tensor):
        """The loss's tensor arithmetic, without drawing noise or reading the schedule, so that it
        runs unchanged under ``torch.func.vmap`` (``vae_lab.training.stacked``): ``eps`` (k, B, z_dim)
        the standard normal draws, ``weight`` the KL schedule's weight (a float, or a 0-d tensor).
        Returns ({'fit': the batch-mean reconstruction part, 'penalised': the KL the schedule's term
        takes, 'recon', 'kl', each layer's KL}, (z, recon, log_pz) for ``dreg_bound``); the loss is
        fit + ``kl_schedule.term(penalised)``."""
        k, prior = self.iwae_k, model.prior
        z = model.reparameterize(mu, logvar, eps)  # (k, B, z_dim)
        # expand + flatten: a view for k = 1, the k copies otherwise
        logits = model.decode(z.flatten(0, 1), None if y is None else y.expand(k, -1).flatten())
        recon = model.likelihood.reconstruction(logits, x.expand(k, *x.shape).flatten(0, 1)).view(k, len(x))
        log_pz = None  # log p(z), once: a VampPrior encodes its pseudo-inputs for it
        if k == 1:
            fit = recon[0]  # r − r̄ is exactly 0: the ELBO's reconstruction term
        else:
            log_pz = prior.log_prob(z)
            r = log_pz - log_q(eps, logvar)
            # the prior ratio carries the schedule's weight, as the KL term does: the β-weighted
            # bound, which stays bounded while a warm-up holds β near 0
            fit = math.log(k) - torch.logsumexp(-recon + weight * (r - r.mean(0)), dim=0)
        if self.free_bits:
            kl_per_dim = prior.kl_per_dim(mu, logvar)
            kl = kl_per_dim.sum(1).mean()
            penalised = kl_per_dim.mean(0).clamp(min=self.free_bits).sum()
        else:
            kl = penalised = prior.kl(mu, logvar, z, log_pz).mean()
        with torch.no_grad():  # a layered prior's KL per layer, reported only: its own draw of the upper layers
            layer_kls = {name: value.mean() for name, value in prior.layer_kls(mu, logvar, z).items()}
        terms = {"fit": fit.mean(), "penalised": penalised, "recon": recon.mean(), "kl": kl, **layer_kls}
        return terms, (z, recon, log_pz)


def bits_per_dim(model, x: torch.Tensor, recon: torch.Tensor, kl: torch.Tensor) -> dict[str, torch.Tensor]:
    """{'bits_per_dim': the negative ELBO, recon + KL (β = 1), in bits per pixel value} for a
    likelihood over 8-bit levels (``Likelihood.discrete_8bit``), whose recon is −log p(x|z) in nats:
    the ELBO's bound on the NLL in the unit of the papers' tables; {} for the others."""
    if not model.likelihood.discrete_8bit:
        return {}
    return {"bits_per_dim": ((recon + kl) / (x[0].numel() * math.log(2))).detach()}


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


def log_q_pairs(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log q(z_i,d | x_j) of every latent z_i of a batch under every image x_j's posterior, per
    dimension: (M, M, z_dim) nats, row i for z_i, column j for x_j, from z, mu, logvar (M, z_dim)."""
    eps = (z.unsqueeze(1) - mu) * torch.exp(-0.5 * logvar)
    return -0.5 * (eps.pow(2) + LOG_2PI + logvar)


def mws_log_q(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, dataset_size: int):
    """Minibatch-weighted sampling (Chen et al. 2018, section 4.1): estimates of the aggregate
    posterior q(z) = 1/N Σ_n q(z|x_n) of a data set of N images at the batch's latents, from the
    batch's M posteriors alone,

        log q(z_i)   ≈ log Σ_j q(z_i | x_j)   − log(N·M)      (M,)
        log q(z_i,d) ≈ log Σ_j q(z_i,d | x_j) − log(N·M)      (M, z_dim), each dimension's marginal

    Biased low: for a batch of distinct images at most log q(z) − log M (equal when the batch is
    the whole data set), and log q(z) − log N when every posterior is the same (docs/theory.md).
    ``dataset_size`` only shifts both by a constant: no gradient depends on it."""
    pairs = log_q_pairs(z, mu, logvar)
    log_nm = math.log(dataset_size * len(z))
    return torch.logsumexp(pairs.sum(2), dim=1) - log_nm, torch.logsumexp(pairs, dim=1) - log_nm


def tc_decomposition(z, mu, logvar, prior, dataset_size: int) -> dict[str, torch.Tensor]:
    """The KL term of a batch split into three (Chen et al. 2018, eq. 2), batch means in nats per
    sample, with q(z) and q(z_d) the estimates of ``mws_log_q`` (``prior`` must factorise):

        mi      E[log q(z|x) − log q(z)]           index-code mutual information
        tc      E[log q(z) − Σ_d log q(z_d)]       total correlation
        dim_kl  E[Σ_d log q(z_d) − log p(z)]       dimension-wise KL, Σ_d KL(q(z_d) ‖ p(z_d))

    The estimates of q cancel in the sum, which is exactly the batch mean of log q(z|x) − log p(z):
    the one-draw Monte Carlo estimate of the KL."""
    log_q_z, log_q_marginals = mws_log_q(z, mu, logvar, dataset_size)
    log_q_z_given_x = log_q((z - mu) * torch.exp(-0.5 * logvar), logvar)
    log_product = log_q_marginals.sum(1)
    return {"mi": (log_q_z_given_x - log_q_z).mean(), "tc": (log_q_z - log_product).mean(),
            "dim_kl": (log_product - prior.log_prob(z)).mean()}


@LOSSES.register("btcvae")
class BTCVAELoss(VAELoss):
    """β-TCVAE (Chen et al. 2018): the KL term split by ``tc_decomposition``, each part weighted,

        loss(x) = recon(x) + α·MI + β·TC + γ·dimKL          per sample, as in ``VAELoss``

    α = ``alpha``, γ = ``gamma``; β is the KL schedule's weight (the run's ``beta``; a warm-up or
    cycles move it, as Chen et al.'s β annealing ramps the TC's weight). With α = β = γ = 1 this is
    the ELBO, its KL estimated from the draw of z. Returns 'loss', 'recon', 'kl' (the prior's KL,
    as ``VAELoss`` reports it: closed form where there is one) and 'mi', 'tc', 'dim_kl'. N, the
    data set size of ``mws_log_q``, is the number of training images the run serves (``train_size``);
    validation uses the same N, so its terms estimate the same objective on held-out images.
    One z per image: ``iwae_k`` and ``free_bits`` stay 1 and 0 (they are the keys of every loss).
    """

    def __init__(self, alpha: NonNegative = 1.0, gamma: NonNegative = 1.0, iwae_k: PositiveInt = 1,
                 free_bits: NonNegative = 0.0, *, model=None, kl_schedule=None, train_size: int | None = None):
        if iwae_k != 1:
            raise VaeLabError(f"loss.iwae_k={iwae_k}: loss=btcvae estimates the KL's parts from one z per "
                              "image and has no importance-weighted form; leave iwae_k at 1")
        if free_bits:
            raise VaeLabError(f"loss.free_bits={free_bits}: loss=btcvae weights the KL's parts (MI, TC, "
                              "dimension-wise KL) instead of flooring it per dimension; leave free_bits at 0")
        if not (alpha >= 0 and gamma >= 0):
            raise ValueError(f"alpha={alpha} and gamma={gamma} must be >= 0")
        self.alpha, self.gamma, self.dataset_size = alpha, gamma, train_size
        super().__init__(model=model, kl_schedule=kl_schedule)

    def check(self, model, kl_schedule) -> None:
        if not model.prior.factorises:
            raise VaeLabError(f"loss=btcvae splits the KL over latent dimensions, so the prior must factorise "
                              f"over them; {prior_choice(model)} does not: use prior=standard on a one-layer model")
        if isinstance(kl_schedule, Capacity):
            raise VaeLabError("kl_schedule=capacity aims the whole KL at a capacity, but loss=btcvae weights "
                              "its parts (β: the total correlation's); use kl_schedule=constant, linear_warmup or cyclical")

    def __call__(self, model, x, y, mu, logvar, kl_schedule, epoch: float | None = None) -> dict[str, torch.Tensor]:
        z = model.reparameterize(mu, logvar)
        recon = model.likelihood.reconstruction(model.decode(z, y), x).mean()
        terms = tc_decomposition(z, mu, logvar, model.prior, self.dataset_size)
        loss = recon + self.alpha * terms["mi"] + kl_schedule.weight(epoch) * terms["tc"] + self.gamma * terms["dim_kl"]
        kl = model.prior.kl(mu, logvar, z).mean()
        return {"loss": loss, "recon": recon, "kl": kl, **terms, **bits_per_dim(model, x, recon, kl)}
