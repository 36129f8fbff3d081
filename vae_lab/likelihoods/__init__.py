"""The likelihoods p(x|z): how the decoder's output scores an image. One per file, registered in
``vae_lab.registry.LIKELIHOODS`` and chosen by ``loss.likelihood`` (``loss=bce`` or ``loss=mse``)."""
from vae_lab.likelihoods.base import Likelihood
from vae_lab.likelihoods.bernoulli import Bernoulli
from vae_lab.likelihoods.gaussian import FixedGaussian
from vae_lab.registry import LIKELIHOODS

__all__ = ["Likelihood", "Bernoulli", "FixedGaussian", "LIKELIHOODS", "build_likelihood"]


def build_likelihood(config) -> Likelihood:
    """``"bce"`` or ``{"name": ..., setting: value}`` -> the likelihood (``LIKELIHOODS.build``)."""
    return LIKELIHOODS.build(config)
