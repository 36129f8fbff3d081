"""One model per file, all behind the interface of ``vae_lab.models.base.VAE``, registered by name
in ``vae_lab.registry.MODELS`` (a model of one's own registers there too: docs/extending.md).

``build_model`` is the one way a model is made from a run's config, when a run starts and when a
checkpoint is read: the config names a registered model, prior and likelihood and gives their
settings as plain values, checked against their signatures; the image shape and the number of
classes come from the data. A config, and so a file, can choose among what is registered but
never name other code.
"""
from collections.abc import Mapping

from vae_lab.models.base import VAE
from vae_lab.models.dense import DenseVAE  # registered first: the registry lists names in this order
from vae_lab.models.conv import ConvVAE  # noqa: I001
from vae_lab.models.cvae import CVAE
from vae_lab.models.hvae import HierarchicalVAE
from vae_lab.errors import VaeLabError
from vae_lab.registry import LIKELIHOODS, MODELS, PRIORS, name_of

__all__ = ["VAE", "DenseVAE", "ConvVAE", "CVAE", "HierarchicalVAE", "MODELS", "build_model", "data_shape"]


def data_shape(config: Mapping) -> tuple[tuple[int, ...], int]:
    """(image shape (C, H, W), number of classes) of a run's data, as its config records them
    (``vae_lab.data.ImageDataModule.source``); MNIST's for runs from before they were recorded."""
    from vae_lab.data.datasets import MNIST_CLASSES, MNIST_SHAPE

    data = config.get("data") if isinstance(config.get("data"), Mapping) else {}
    return tuple(data.get("image_shape", MNIST_SHAPE)), data.get("num_classes", MNIST_CLASSES)


def build_model(config: Mapping) -> VAE:
    """A run's config (plain values: ``model``, ``prior``, ``loss.likelihood``, ``data``) -> the model
    with its likelihood and prior, or a VaeLabError naming the first key that is not right. The
    likelihood is built first, once: the model builds its last layer from it (``outputs``) and
    owns it; everything else asks ``model.likelihood``. Names unknown here are looked up among what
    ``config["plugins"]`` registered only to say so: the plugins themselves must have been loaded
    by the caller (``vae_lab.registry.load_plugins``)."""
    plugins = config.get("plugins") or ()
    image_shape, num_classes = data_shape(config)
    if "name" in config["model"]:  # an unknown model is the first thing to say (a model that names code: MODELS.build)
        MODELS.get(config["model"]["name"], plugins)
    loss = config.get("loss") if isinstance(config.get("loss"), Mapping) else {}
    chosen = loss.get("likelihood", "bce")
    likelihood = LIKELIHOODS.build(chosen, plugins, key="loss.likelihood")
    model = MODELS.build(config["model"], plugins, image_shape=image_shape, num_classes=num_classes,
                         likelihood=likelihood)
    if model.likelihood is None:  # a model of one's own that does not take it: one output per pixel value
        if likelihood.outputs(image_shape[0]) != image_shape[0]:
            raise VaeLabError(f"loss.likelihood={name_of(chosen)} needs {likelihood.outputs(image_shape[0])} decoder "
                              f"outputs per pixel, but model={name_of(config['model'])} takes no likelihood and makes "
                              "one per pixel value; give its __init__ a likelihood argument (docs/extending.md)")
        model.likelihood = likelihood
    # the model is context, as the data are to the model: a prior may build on it (the VampPrior encodes
    # its pseudo-inputs with the model's encoder)
    model.set_prior(PRIORS.build(config.get("prior", "standard"), plugins, z_dim=model.prior_dim, model=model))
    return model
