"""One model per file, all behind the interface of ``vae_lab.models.base.VAE``, chosen by name.

``build_model`` is the one way a model is made from a config, when a run starts and when a
checkpoint is read: the config names one of ``MODELS`` and gives its arguments as plain values,
checked against the class's signature. A config, and so a file, can choose among these classes
but never name other code.
"""
from collections.abc import Mapping

from vae_lab.arguments import build_registered
from vae_lab.models.base import VAE
from vae_lab.models.conv import ConvVAE
from vae_lab.models.cvae import CVAE
from vae_lab.models.dense import DenseVAE

MODELS = {"dense": DenseVAE, "conv": ConvVAE, "cvae": CVAE}

__all__ = ["VAE", "DenseVAE", "ConvVAE", "CVAE", "MODELS", "build_model"]


def build_model(config: Mapping) -> VAE:
    """``{"name": one of MODELS, argument: value, ...}`` (plain values) -> the model, or a
    VaeLabError naming the first key that is not a setting of that model or not an integer >= 1."""
    return build_registered("model", MODELS, config, at_least=1)
