"""The priors p(z). One per file, registered in ``vae_lab.registry.PRIORS`` and chosen by
``prior=`` (vae_lab/conf/prior/*.yaml). A prior is a module of the model, so a learned one trains
with it and travels in its checkpoint."""
from vae_lab.priors.base import Prior
from vae_lab.priors.standard import StandardNormal  # registered first: the registry lists names in this order
from vae_lab.priors.mixture import MixtureOfGaussians  # noqa: I001
from vae_lab.priors.vamp import VampPrior
from vae_lab.registry import PRIORS

__all__ = ["Prior", "StandardNormal", "MixtureOfGaussians", "VampPrior", "PRIORS"]
