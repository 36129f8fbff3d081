"""A model applied to whole sets of images or latents: in batches, on the model's device, without
gradients, returning CPU tensors. Pictures, metrics, samplers and generate all use these.

Images are (N, C, H, W) with pixels in [0, 1] (the model's ``image_shape``); labels (N,) are passed
to every model (only conditional ones use them); latents are (N, z_dim).
"""
import torch

# Burda et al. (2015) count a latent unit as active when the variance of its posterior mean across
# the data, Cov_x(E_q[z_d]), exceeds 0.01: the one threshold of val/active_units and the metrics.
ACTIVE_UNIT_VARIANCE = 0.01


def device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def decoded_batch(model, batch_size: int) -> int:
    """How many latents to decode at once where ``batch_size`` would be right for one decoder output
    per pixel value: fewer for a likelihood of several (a logistic mixture's 15 per grey pixel), so
    that their outputs, and the likelihood's work on them, take no more memory."""
    channels = model.image_shape[0]
    return max(1, batch_size * channels // model.likelihood.outputs(channels))


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
                  batch_size: int = 1000, seed: int | None = None) -> torch.Tensor:
    """The images (N, C, H, W) the model's likelihood expects for the latents z (its ``mean``), or
    with a ``seed`` images drawn from it (its ``sample``), the same draws for the same seed."""
    device = device_of(model)
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    images = []
    for index in torch.arange(len(z)).split(decoded_batch(model, batch_size)):
        y = None if labels is None else labels[index].to(device)
        logits = model.decode(z[index].to(device), y)
        decoded = model.likelihood.mean(logits) if seed is None else model.likelihood.sample(logits, generator)
        images.append(decoded.cpu())
    return torch.cat(images) if images else torch.empty(0, *model.image_shape)


def kl_per_dimension(model, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor | None:
    """Mean KL(q(z_d|x) ‖ p(z_d)) over a set of images, per latent dimension: (z_dim,) nats; None
    for a prior without a closed form per dimension."""
    prior = model.prior
    return prior.kl_per_dim(mu, logvar.to(mu.device)).mean(0).cpu() if prior.closed_form_kl else None


def dimension_information(model, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """How much each latent dimension carries, (z_dim,), to order the traversal's rows: its mean KL
    (``kl_per_dimension``), or for a prior without one, the variance of its posterior mean."""
    kl = kl_per_dimension(model, mu, logvar)
    return mu.var(0) if kl is None else kl
