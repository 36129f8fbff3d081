"""The likelihoods p(x|z): how the decoder's output scores an image. One per file, registered in
``vae_lab.registry.LIKELIHOODS`` and chosen by ``loss.likelihood`` (``loss=bce``, ``loss=mse``, and
for 8-bit pixels ``loss=gaussian``, ``loss=logistic``, ``loss=categorical``); the model builds its
likelihood (``vae_lab.models.build_model``) and everything else asks it."""
from vae_lab.likelihoods.base import Likelihood  # noqa: I001 (registered in this order: the registry lists them so)
from vae_lab.likelihoods.bernoulli import Bernoulli
from vae_lab.likelihoods.gaussian import FixedGaussian
from vae_lab.likelihoods.learned_gaussian import LearnedGaussian
from vae_lab.likelihoods.logistic_mixture import LogisticMixture
from vae_lab.likelihoods.categorical import Categorical
from vae_lab.registry import LIKELIHOODS

__all__ = ["Likelihood", "Bernoulli", "FixedGaussian", "LearnedGaussian", "LogisticMixture", "Categorical",
           "LIKELIHOODS"]
