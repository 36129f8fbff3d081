"""The interface every vae_lab model shares.

Images are tensors of shape (B, 1, 28, 28) with pixels in [0, 1]; labels are int64 of shape (B,).
A subclass builds four modules and the base class does the rest:

    encoder:       encoder input -> (B, hidden) features
    mu, logvar:    (B, hidden) -> (B, z_dim), the mean and log-variance of q(z|x)
    decoder:       decoder input -> (B, 784) logits

A conditional model (``num_classes > 0``) overrides ``encoder_input`` and ``decoder_input``.
"""
import torch
from torch import nn

IMAGE_SHAPE = (1, 28, 28)


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
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """z = mu + sigma * eps with eps ~ N(0, I), so gradients flow through mu and logvar."""
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        """Returns (logits (B, 1, 28, 28), mu (B, z_dim), logvar (B, z_dim))."""
        mu, logvar = self.encode(x, y)
        return self.decode(self.reparameterize(mu, logvar), y), mu, logvar

    @torch.no_grad()
    def sample(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """n images (n, 1, 28, 28) in [0, 1] decoded from z ~ N(0, I); a conditional model needs y (n,)."""
        z = torch.randn(n, self.z_dim, device=self.mu.weight.device)
        return torch.sigmoid(self.decode(z, y))
