"""The interface every vae_lab model shares.

Images are tensors of shape (B, C, H, W) with pixels in [0, 1], ``image_shape`` = (C, H, W) being
what the data serve (the registry passes it); labels are int64 of shape (B,). Every method takes the
labels ``y``: conditional models (``num_classes > 0``) need them, unconditional ones ignore them,
so callers pass what they have and never ask which kind it is. A subclass builds four modules and
the base class does the rest:

    encoder:       encoder input -> (B, hidden) features
    mu, logvar:    (B, hidden) -> (B, z_dim), the mean and log-variance of q(z|x)
    decoder:       decoder input -> (B, C·H·W) or (B, C, H, W) decoder outputs ("logits")

``build_model`` gives every model its ``prior`` p(z) (a module: a learned one trains with the
model; ``set_prior``) and its ``likelihood`` p(x|z), which says what the decoder's outputs mean. A
conditional model overrides ``encoder_input`` and ``decoder_input``; a model with stochastic layers
above its codes (``model=hvae``) overrides ``set_prior`` and ``encode_top``, and ``prior_dim``.
"""
import math
from collections.abc import Sequence

import torch
from torch import nn

LOG_2PI = math.log(2 * math.pi)

# Training drives many numbers towards zero (the gradients of saturated pixels, Adam's moments of
# weights that barely move), and x86 processors compute on subnormal floats (below 1.2e-38) tens
# of times slower: a 400-epoch run slowed from 7 to 15 s an epoch (docs/performance.md). Flushing
# them to zero changes no number by more than 1.2e-38. The setting belongs to a thread: torch's
# intra-op threads inherit it only when they start after it (a thread pool started by an earlier
# large operation keeps computing with subnormals, and its share of a result then differs in the
# last bits from the main thread's). So it is set when vae_lab's models are first imported, which
# the command lines do before any tensor operation (tests/test_reliability.py checks every thread).
torch.set_flush_denormal(True)


def mlp(sizes: Sequence[int], relu_last: bool = False) -> nn.Sequential:
    """Linear layers from sizes[0] to sizes[-1] with a ReLU between them (and after the last one
    if ``relu_last``)."""
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    return nn.Sequential(*(layers if relu_last else layers[:-1]))


def log_q(eps: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log q(z|x) of z = mu + σ·eps under the encoder's diagonal Gaussian, summed over the last
    dimension (nats): log N(eps; 0, I) − Σ log σ, the change of variables."""
    return -0.5 * (eps.pow(2) + LOG_2PI).sum(-1) - 0.5 * logvar.sum(-1)


class VAE(nn.Module):
    conditional = False  # True for models that condition on a label ...
    num_classes = 0  # ... of these many classes

    def __init__(self, z_dim: int, image_shape: Sequence[int]):
        super().__init__()
        if z_dim < 1:
            raise ValueError(f"z_dim={z_dim} must be >= 1")
        self.z_dim, self.image_shape = z_dim, tuple(image_shape)
        self.pixels = math.prod(self.image_shape)  # values per image, C·H·W
        self.prior = self.likelihood = None  # set by vae_lab.models.build_model
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
        """(B, z_dim) latents -> (B, C, H, W) decoder outputs; ``likelihood.mean`` makes them images."""
        return self.decoder(self.decoder_input(z, y)).view(-1, *self.image_shape)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        """z = mu + sigma * eps with eps ~ N(0, I) (drawn here unless given; it may carry leading
        sample dimensions, e.g. (k, B, z_dim)), so gradients flow through mu and logvar."""
        if eps is None:
            eps = torch.randn_like(mu)
        return mu + torch.exp(0.5 * logvar) * eps

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        """Returns (decoder outputs (B, C, H, W), mu (B, z_dim), logvar (B, z_dim))."""
        mu, logvar = self.encode(x, y)
        return self.decode(self.reparameterize(mu, logvar), y), mu, logvar

    @torch.no_grad()
    def sample(self, n: int, y: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images (n, C, H, W) in [0, 1], the likelihood's means decoded from z ~ p(z); a
        conditional model needs y (n,)."""
        z = self.prior.sample(n, generator).to(self.mu.weight.device)
        return self.likelihood.mean(self.decode(z, y))
