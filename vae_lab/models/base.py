"""The interface every vae_lab model shares.

Images are tensors of shape (B, C, H, W) with pixels in [0, 1], ``image_shape`` = (C, H, W) being
what the data serve (the registry passes it); labels are int64 of shape (B,). Every method takes the
labels ``y``: conditional models (``num_classes > 0``) need them, unconditional ones ignore them,
so callers pass what they have and never ask which kind it is. A subclass builds four modules and
the base class does the rest:

    encoder:       encoder input -> (B, hidden) features
    mu, logvar:    (B, hidden) -> (B, z_dim), the mean and log-variance of q(z|x)
    decoder:       decoder input -> (B, D·H·W) or (B, D, H, W) decoder outputs ("logits"), D =
                   ``likelihood.outputs(C)`` (``self.outputs`` = D·H·W in all)

``build_model`` gives every model its ``likelihood`` p(x|z), which says how many outputs the
decoder makes and what they mean (passed to ``__init__``, so the last layer is built from it), and
its ``prior`` p(z) (a module: a learned one trains with the model; ``set_prior``). A
conditional model overrides ``encoder_input`` and ``decoder_input``; a model with stochastic layers
above its codes (``model=hvae``) overrides ``set_prior`` and ``encode_top``, and ``prior_dim``.
"""
import math
from collections.abc import Sequence

import torch
from torch import nn

from vae_lab.likelihoods.base import Likelihood


def mlp(sizes: Sequence[int], relu_last: bool = False) -> nn.Sequential:
    """Linear layers from sizes[0] to sizes[-1] with a ReLU between them (and after the last one
    if ``relu_last``)."""
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    return nn.Sequential(*(layers if relu_last else layers[:-1]))


class VAE(nn.Module):
    conditional = False  # True for models that condition on a label ...
    num_classes = 0  # ... of these many classes

    def __init__(self, z_dim: int, image_shape: Sequence[int], likelihood: Likelihood | None = None):
        super().__init__()
        if z_dim < 1:
            raise ValueError(f"z_dim={z_dim} must be >= 1")
        self.z_dim, self.image_shape = z_dim, tuple(image_shape)
        self.pixels = math.prod(self.image_shape)  # values per image, C·H·W
        channels, height, width = self.image_shape
        # what the decoder gives per image: as many numbers per pixel position as the likelihood reads
        self.output_shape = (likelihood.outputs(channels) if likelihood is not None else channels, height, width)
        self.outputs = math.prod(self.output_shape)
        self.likelihood = likelihood  # p(x|z), the run's loss.likelihood: the one every caller asks
        self.prior = None  # p(z), set by vae_lab.models.build_model
        self.prior_dim = z_dim  # the dimension of the latents the run's prior= is over

    def set_prior(self, prior) -> None:
        """The run's ``prior=``, over ``prior_dim`` latents: p(z) of the codes here; a model with a
        layer above its codes puts it on the top layer."""
        self.prior = prior

    def encoder_input(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return x

    def decoder_input(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return z

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) images -> mean and log-variance of q(z|x), each (B, z_dim)."""
        h = self.encoder(self.encoder_input(x, y))
        return self.mu(h), self.logvar(h)

    def encode_top(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Images -> mean and log-variance (B, prior_dim) of the top layer's posterior, the latents
        the run's prior is over (a VampPrior encodes its pseudo-inputs so): ``encode`` here."""
        return self.encode(x, y)

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """(B, z_dim) latents -> (B, D, H, W) decoder outputs, D = ``likelihood.outputs(C)`` (C for the
        likelihoods of one number per pixel); ``likelihood.mean`` makes them images."""
        return self.decoder(self.decoder_input(z, y)).view(-1, *self.output_shape)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        """z = mu + sigma * eps with eps ~ N(0, I) (drawn here unless given; it may carry leading
        sample dimensions, e.g. (k, B, z_dim)), so gradients flow through mu and logvar."""
        if eps is None:
            eps = torch.randn_like(mu)
        return mu + torch.exp(0.5 * logvar) * eps

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        """Returns (decoder outputs (B, D, H, W), mu (B, z_dim), logvar (B, z_dim))."""
        mu, logvar = self.encode(x, y)
        return self.decode(self.reparameterize(mu, logvar), y), mu, logvar

    @torch.no_grad()
    def sample(self, n: int, y: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images (n, C, H, W) in [0, 1], the likelihood's means decoded from z ~ p(z); a
        conditional model needs y (n,)."""
        z = self.prior.sample(n, generator).to(self.mu.weight.device)
        return self.likelihood.mean(self.decode(z, y))
