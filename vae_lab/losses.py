"""The (β-)VAE loss: negative ELBO per sample, summed over pixels and latent dimensions.

    loss(x) = recon(x) + β · KL(q(z|x) ‖ N(0, I))

Every term is reported as a mean over the batch, i.e. in per-sample units (nats for ``bce``).
Reference: Kingma & Welling (2013), "Auto-Encoding Variational Bayes", Appendix B for the KL.
"""
import torch
import torch.nn.functional as F


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
    elif likelihood == "mse":
        per_pixel = (torch.sigmoid(logits) - x).pow(2)
    else:
        raise ValueError(f"unknown likelihood {likelihood!r}: use 'bce' or 'mse'")
    return per_pixel.flatten(1).sum(1)


class VAELoss:
    """Callable: (logits, x, mu, logvar) -> {'loss', 'recon', 'kl'}, each a scalar batch mean.

    ``likelihood`` is 'bce' or 'mse'; ``beta`` (≥ 0) weights the KL term (β = 1 is the ELBO).
    """

    def __init__(self, likelihood: str, beta: float = 1.0):
        if likelihood not in ("bce", "mse"):
            raise ValueError(f"unknown likelihood {likelihood!r}: use 'bce' or 'mse'")
        self.likelihood = likelihood
        self.beta = beta

    def __call__(self, logits, x, mu, logvar) -> dict[str, torch.Tensor]:
        recon = reconstruction_error(logits, x, self.likelihood).mean()
        kl = kl_divergence(mu, logvar).sum(1).mean()
        return {"loss": recon + self.beta * kl, "recon": recon, "kl": kl}
