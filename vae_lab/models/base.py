"""The interface every vae_lab model shares.

Images are tensors of shape (B, 1, 28, 28) with pixels in [0, 1]; labels are int64 of shape (B,).
Every method takes the labels ``y``: conditional models (``num_classes > 0``) need them,
unconditional ones ignore them, so callers pass what they have and never ask which kind it is.
A subclass builds four modules and the base class does the rest:

    encoder:       encoder input -> (B, hidden) features
    mu, logvar:    (B, hidden) -> (B, z_dim), the mean and log-variance of q(z|x)
    decoder:       decoder input -> (B, 784) logits

A conditional model overrides ``encoder_input`` and ``decoder_input``.
"""
from collections.abc import Sequence

import torch
from torch import nn

IMAGE_SHAPE = (1, 28, 28)
PIXELS = 28 * 28

# Training drives many numbers towards zero (the gradients of saturated pixels, Adam's moments of
# weights that barely move), and x86 processors compute on subnormal floats (below 1.2e-38) tens
# of times slower: a 400-epoch run slowed from 7 to 15 s an epoch (docs/performance.md). Flushing
# them to zero changes no number by more than 1.2e-38. Set when vae_lab's models are first
# imported, before torch starts its CPU threads, which inherit the setting; for the whole process.
torch.set_flush_denormal(True)


def mlp(sizes: Sequence[int], relu_last: bool = False) -> nn.Sequential:
    """Linear layers from sizes[0] to sizes[-1] with a ReLU between them (and after the last one
    if ``relu_last``)."""
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    return nn.Sequential(*(layers if relu_last else layers[:-1]))


class VAE(nn.Module):
    num_classes = 0  # > 0 for models that condition on a label

    def __init__(self, z_dim: int):
        super().__init__()
        self.z_dim = z_dim

    def encoder_input(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return x

    def decoder_input(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return z

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1, 28, 28) images -> mean and log-variance of q(z|x), each (B, z_dim)."""
        h = self.encoder(self.encoder_input(x, y))
        return self.mu(h), self.logvar(h)

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """(B, z_dim) latents -> (B, 1, 28, 28) Bernoulli logits; pixels are sigmoid(logits)."""
        return self.decoder(self.decoder_input(z, y)).view(-1, *IMAGE_SHAPE)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        """z = mu + sigma * eps with eps ~ N(0, I) (drawn here unless given; it may carry leading
        sample dimensions, e.g. (k, B, z_dim)), so gradients flow through mu and logvar."""
        if eps is None:
            eps = torch.randn_like(mu)
        return mu + torch.exp(0.5 * logvar) * eps

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        """Returns (logits (B, 1, 28, 28), mu (B, z_dim), logvar (B, z_dim))."""
        mu, logvar = self.encode(x, y)
        return self.decode(self.reparameterize(mu, logvar), y), mu, logvar

    @torch.no_grad()
    def sample(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """n images (n, 1, 28, 28) in [0, 1] decoded from z ~ N(0, I); a conditional model needs y (n,)."""
        z = torch.randn(n, self.z_dim, device=self.mu.weight.device)
        return torch.sigmoid(self.decode(z, y))
