"""One model per file, all behind the interface of ``vae_lab.models.base.VAE``, chosen by name.

``build_model`` is the one way a model is made from a config, when a run starts and when a
checkpoint is read: the config names one of ``MODELS`` and gives its arguments as plain values,
checked against the class's signature. A config, and so a file, can choose among these classes
but never name other code.
"""
import inspect
from collections.abc import Mapping

from vae_lab.arguments import describe, fits
from vae_lab.errors import VaeLabError
from vae_lab.models.base import VAE
from vae_lab.models.conv import ConvVAE
from vae_lab.models.cvae import CVAE
from vae_lab.models.dense import DenseVAE

MODELS = {"dense": DenseVAE, "conv": ConvVAE, "cvae": CVAE}

__all__ = ["VAE", "DenseVAE", "ConvVAE", "CVAE", "MODELS", "build_model"]


def _problem(value, annotation) -> str | None:
    """What is wrong with value for an argument annotated ``int`` or a tuple of ints, or None."""
    values = value if isinstance(value, (list, tuple)) else [value]
    if fits(value, annotation) and values and all(v >= 1 for v in values):
        return None
    return f"must be {describe(annotation)} >= 1"


def build_model(config: Mapping) -> VAE:
    """``{"name": one of MODELS, argument: value, ...}`` (plain values) -> the model, or a
    VaeLabError naming the first key that is not a setting of that model or has a bad value."""
    arguments = dict(config)
    name = arguments.pop("name", None)
    names = ", ".join(MODELS)
    for key, value in arguments.items():
        if str(key).startswith("_"):  # _target_, _args_, _partial_: how Hydra would name code
            raise VaeLabError(f"model.{key}={value} names code; a model is chosen by model.name, one of {names}")
    if not isinstance(name, str) or name not in MODELS:
        raise VaeLabError(f"model.name={name} is not a vae_lab model; use one of {names}")
    parameters = inspect.signature(MODELS[name]).parameters
    for key, value in arguments.items():
        if key not in parameters:
            raise VaeLabError(f"model.{key}: model {name} has no such setting (its settings: {', '.join(parameters)})")
        if problem := _problem(value, parameters[key].annotation):
            raise VaeLabError(f"model.{key}={value} {problem}")
    return MODELS[name](**{key: tuple(v) if isinstance(v, list) else v for key, v in arguments.items()})
