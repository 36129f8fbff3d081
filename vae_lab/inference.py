"""A model applied to whole sets of images or latents: in batches, on the model's device, without
gradients, returning CPU tensors. Pictures, metrics, samplers and generate all use these.

Images are (N, 1, 28, 28) with pixels in [0, 1]; labels (N,) are passed to every model (only
conditional ones use them); latents are (N, z_dim).
"""
import torch

from vae_lab.losses import kl_divergence


def device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def posterior(model, images: torch.Tensor, labels: torch.Tensor | None = None,
              batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """Means and log-variances of q(z|x) for every image: two (N, z_dim) tensors."""
    device = device_of(model)
    mus, logvars = [], []
    for index in torch.arange(len(images)).split(batch_size):
        y = None if labels is None else labels[index].to(device)
        mu, logvar = model.encode(images[index].to(device), y)
        mus.append(mu.cpu())
        logvars.append(logvar.cpu())
    return torch.cat(mus), torch.cat(logvars)


@torch.no_grad()
def decode_images(model, z: torch.Tensor, labels: torch.Tensor | None = None,
                  batch_size: int = 1000) -> torch.Tensor:
    """Pixel probabilities (N, 1, 28, 28) of the latents z, the sigmoid applied once."""
    device = device_of(model)
    images = []
    for index in torch.arange(len(z)).split(batch_size):
        y = None if labels is None else labels[index].to(device)
        images.append(torch.sigmoid(model.decode(z[index].to(device), y)).cpu())
    return torch.cat(images) if images else torch.empty(0, 1, 28, 28)


def kl_per_dimension(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Mean KL(q(z_d|x) ‖ N(0, 1)) over a set of images, per latent dimension: (z_dim,) nats."""
    return kl_divergence(mu, logvar).mean(0)
