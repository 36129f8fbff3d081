"""The likelihoods p(x|z): how the decoder's output scores an image. One per file, registered in
``vae_lab.registry.LIKELIHOODS`` and chosen by ``loss.likelihood`` (``loss=bce`` or ``loss=mse``);
the model builds its likelihood (``vae_lab.models.build_model``) and everything else asks it."""
from vae_lab.likelihoods.base import Likelihood
from vae_lab.likelihoods.bernoulli import Bernoulli
from vae_lab.likelihoods.gaussian import FixedGaussian
from vae_lab.registry import LIKELIHOODS

__all__ = ["Likelihood", "Bernoulli", "FixedGaussian", "LIKELIHOODS"]
