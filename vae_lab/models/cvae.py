"""Conditional VAE of the reference course project (330,824 parameters at z=20): the dense VAE
with one hidden layer of 200, and the one-hot digit label concatenated to the flattened image
(794 inputs) and to z, so q(z|x, y) and p(x|z, y) both see it and ``sample(n, y)`` draws digits
of a chosen class."""
import torch
import torch.nn.functional as F

from vae_lab.models.dense import DenseVAE


class CVAE(DenseVAE):
    num_classes = 10

    def __init__(self, z_dim: int = 20, hidden: tuple[int, ...] = (200,)):
        super().__init__(z_dim, hidden)

    def _with_one_hot(self, features: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if y is None:
            raise ValueError("the cvae model is conditional: pass labels y of shape (B,)")
        return torch.cat([features, F.one_hot(y, self.num_classes).to(features.dtype)], dim=1)

    def encoder_input(self, x, y):
        return self._with_one_hot(x.flatten(1), y)

    def decoder_input(self, z, y):
        return self._with_one_hot(z, y)
