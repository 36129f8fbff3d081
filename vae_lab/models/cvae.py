"""Conditional VAE of the reference course project (330,824 parameters at z=20 on MNIST): the dense
VAE with one hidden layer of 200, and the one-hot label (``num_classes`` wide, from the data)
concatenated to the flattened image (794 inputs on MNIST) and to z, so q(z|x, y) and p(x|z, y) both
see it and ``sample(n, y)`` draws images of a chosen class."""
import torch
import torch.nn.functional as F

from vae_lab.arguments import PositiveInt
from vae_lab.likelihoods.base import Likelihood
from vae_lab.models.dense import DenseVAE
from vae_lab.registry import MODELS


@MODELS.register("cvae")
class CVAE(DenseVAE):
    conditional = True

    def __init__(self, z_dim: PositiveInt = 20, hidden: tuple[PositiveInt, ...] = (200,), *,
                 image_shape: tuple[int, int, int], num_classes: int, likelihood: Likelihood | None = None):
        if num_classes < 1:
            raise ValueError("it is conditional and needs labelled data (the data have no classes)")
        self.classes = num_classes
        super().__init__(z_dim, hidden, image_shape=image_shape, likelihood=likelihood)

    @property
    def num_classes(self) -> int:
        return self.classes

    def _with_one_hot(self, features: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if y is None:
            raise ValueError("the cvae model is conditional: pass labels y of shape (B,)")
        return torch.cat([features, F.one_hot(y, self.num_classes).to(features.dtype)], dim=1)

    def encoder_input(self, x, y):
        return self._with_one_hot(x.flatten(1), y)

    def decoder_input(self, z, y):
        return self._with_one_hot(z, y)
