"""A data set's splits as a model sees them (grey, or binarized), and as the tools read a run's data
again: ``training_images`` and ``test_images`` from the run's recorded config."""
import os
import typing

import torch
from torch.utils.data import TensorDataset

from vae_lab.data.datasets import load_split

Binarize = typing.Literal["none", "dynamic", "static"]  # data.binarize (vae_lab.data.module.ImageDataModule)
BINARIZE = typing.get_args(Binarize)


def data_root(given: str | None = None, run_root: str | None = None) -> str:
    """Where a tool reads a torchvision data set: ``given`` (its data_root option), else
    $VAE_LAB_DATA, else the run's own data.root, else ``data``. (Training reads ``data.root``,
    whose default is the same variable: vae_lab/conf/data/mnist.yaml.)"""
    return given or os.environ.get("VAE_LAB_DATA") or run_root or "data"


def bernoulli_draw(images: torch.Tensor, seed: int) -> torch.Tensor:
    """Binary images of the same shape: each pixel is 1 with its grey level as probability.

    The draw depends only on ``seed`` and the images' device: the uniforms come from a generator
    on that device, so that a GPU never waits for the host (the same seed draws differently on a
    GPU than on the CPU).
    """
    generator = torch.Generator(device=images.device).manual_seed(seed)
    uniform = torch.rand(images.shape, generator=generator, device=images.device)
    return (uniform < images).to(images.dtype)


def binarized_split(dataset: TensorDataset, binarize: str, seed: int, train: bool) -> TensorDataset:
    """The split as the model sees it outside training batches: grey levels for ``none``, else one
    fixed Bernoulli draw (the training split of ``dynamic`` stays grey; its batches are drawn anew)."""
    if binarize == "none" or (train and binarize == "dynamic"):
        return dataset
    images, labels = dataset.tensors
    return TensorDataset(bernoulli_draw(images, seed * 2 + train), labels)


def seen_training_split(dataset: TensorDataset, binarize: str, seed: int) -> TensorDataset:
    """The training split as the model sees it outside training batches: grey, or binarized as
    ``static`` does (for ``dynamic`` too, one fixed draw; a draw of binary images is themselves).
    What a sampler is fitted on."""
    return binarized_split(dataset, "static" if binarize == "dynamic" else binarize, seed, train=True)


def root_of(data: dict, given: str | None) -> str | None:
    """Where the tools read a data set with a ``root`` (torchvision's): ``data_root``."""
    return data_root(given, data["root"]) if "root" in data else None


def training_images(config: dict, root: str | None = None) -> TensorDataset:
    """A run's training images as its model sees them outside training batches
    (``seen_training_split``): what a sampler is fitted on. ``config``: the run's (plain values)."""
    data = config["data"]
    train = load_split(data, train=True, root=root_of(data, root))
    return seen_training_split(train, data.get("binarize", "none"), data["seed"])


def test_images(config: dict, root: str | None = None) -> tuple[TensorDataset, TensorDataset]:
    """(a run's grey test images, the same binarized as its data.binarize says). ``root``
    overrides where a torchvision data set is read (else VAE_LAB_DATA, else the run's)."""
    data = config["data"]
    grey = load_split(data, train=False, root=root_of(data, root))
    return grey, binarized_split(grey, data.get("binarize", "none"), data["seed"], train=False)
