"""How good a trained model is, as numbers: the test ELBO, the importance-weighted NLL bound, the
active units and, judged by the classifier of ``vae_lab.classifier``, the quality of its samples.

Every function takes a ``vae_lab.models`` model, images (N, C, H, W) in [0, 1] and labels (N,)
(used only by conditional models), works in batches so memory stays bounded, and returns CPU
tensors. Likelihood terms are the model's likelihood's, per sample and summed over the pixels:
nats for ``bce``; for ``mse`` the log-density of the Gaussian the loss implies (fixed variance
σ² = 1/2, docs/theory.md section 4), which is not comparable with ``bce`` numbers. The prior is the
model's. Random draws come from a generator seeded by ``seed``.
"""
import math
from contextlib import contextmanager

import torch
from torchmetrics.image.fid import FrechetInceptionDistance

from vae_lab.evaluation.classifier import Features, predict
from vae_lab.evaluation.inference import (ACTIVE_UNIT_VARIANCE, decode_images, decoded_batch, device_of,
                                          kl_per_dimension)
from vae_lab.gaussian import log_q
from vae_lab.evaluation.samplers import FromPrior


@contextmanager
def seeded_globally(model, seed: int):
    """Seeds torch's global generators for the block and restores them after it: a prior with layers
    of its own (``model=hvae``) draws its upper layers from them, so its bounds are reproducible."""
    device = device_of(model)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def _batches(model, images, labels, batch_size):
    device = device_of(model)
    for x, y in zip(images.split(batch_size), labels.split(batch_size)):
        yield x.to(device), y.to(device)


@torch.inference_mode()
def log_weights(model, x: torch.Tensor, y: torch.Tensor, k: int, generator: torch.Generator,
                max_rows: int = 4096) -> torch.Tensor:
    """log w = log p(x|z) + log p(z) − log q(z|x) for k draws z ~ q(z|x) per image: (B, k) nats.

    At most ``max_rows`` latents are decoded at once (k is split into chunks), fewer for a likelihood
    of several outputs per pixel value: memory stays bounded, and the decoded logits of a chunk stay
    in the processor's cache for the sums that read them.
    """
    mu, logvar = model.encode(x, y)
    chunk = max(1, decoded_batch(model, max_rows) // len(x))
    weights = []
    for start in range(0, k, chunk):
        n = min(chunk, k - start)
        eps = torch.randn(len(x), n, mu.shape[1], generator=generator, dtype=mu.dtype).to(mu.device)
        z = model.reparameterize(mu.unsqueeze(1), logvar.unsqueeze(1), eps)  # (B, n, z_dim)
        logits = model.decode(z.flatten(0, 1), y.repeat_interleave(n)).view(len(x), n, *model.output_shape)
        log_px = model.likelihood.flat_log_prob(logits, x)
        weights.append(log_px + model.prior.log_prob(z) - log_q(eps, logvar.unsqueeze(1)))
    return torch.cat(weights, dim=1)


@torch.no_grad()
def iwae_bound(model, images: torch.Tensor, labels: torch.Tensor, k: int = 1000,
               batch_size: int = 100, seed: int = 0) -> torch.Tensor:
    """The importance-weighted bound L_k(x) ≤ log p(x) per image (N,), nats for ``bce``.

    L_k = log (1/k) Σ_i w_i with k draws from q(z|x) (Burda, Grosse & Salakhutdinov 2015; docs/theory.md
    section 7); L_1 is a one-sample ELBO, and −L_k an upper bound on the NLL that tightens as k grows.
    """
    generator = torch.Generator().manual_seed(seed)
    bounds = []
    with seeded_globally(model, seed):
        for x, y in _batches(model, images, labels, batch_size):
            log_w = log_weights(model, x, y, k, generator)
            bounds.append((torch.logsumexp(log_w, 1) - math.log(k)).cpu())
    return torch.cat(bounds)


@torch.no_grad()
def elbo_terms(model, images: torch.Tensor, labels: torch.Tensor,
               batch_size: int = 1000, seed: int = 0) -> dict[str, float]:
    """Means over the images of the loss terms, in the units of ``val/…``: 'recon' (the likelihood's
    reconstruction term for one z ~ q(z|x); nats for ``bce``, squared error for ``mse``), 'kl' (the
    prior's: closed form, or the estimate from that z; nats) and 'elbo' = −(recon + kl) (for ``mse``
    without the Gaussian constant); for a prior with layers of its own, each layer's KL ('kl_z1',
    'kl_z2', nats; ``Prior.layer_kls``)."""
    generator = torch.Generator().manual_seed(seed)
    sums = {}
    with seeded_globally(model, seed):
        for x, y in _batches(model, images, labels, decoded_batch(model, batch_size)):
            mu, logvar = model.encode(x, y)
            eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype).to(mu.device)
            z = model.reparameterize(mu, logvar, eps)
            layer_kls = model.prior.layer_kls(mu, logvar, z)  # their sum is the KL, from the same draws
            terms = {"recon": model.likelihood.reconstruction(model.decode(z, y), x),
                     "kl": sum(layer_kls.values()) if layer_kls else model.prior.kl(mu, logvar, z), **layer_kls}
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + value.sum().item()
    means = {name: total / len(images) for name, total in sums.items()}
    return {**means, "elbo": -(means["recon"] + means["kl"])}


def active_units(mu: torch.Tensor) -> int:
    """Latent dimensions whose posterior mean varies across the data: Cov_x(E_q[z_d]) above
    ``vae_lab.evaluation.inference.ACTIVE_UNIT_VARIANCE`` (0.01, Burda et al. 2015). ``mu`` (N, z_dim) holds
    E_q[z] of N images (``vae_lab.evaluation.inference.posterior``)."""
    return int((mu.var(0) > ACTIVE_UNIT_VARIANCE).sum())


def latent_metrics(model, mu: torch.Tensor, logvar: torch.Tensor) -> dict:
    """'active_units' (int) and 'kl_per_dim' (list of z_dim floats, nats; None for a prior without a
    closed form per dimension) of a set of images' posteriors, means and log-variances (N, z_dim)
    (``vae_lab.evaluation.inference.posterior``), and for a prior with layers of its own each upper layer's
    active units ('active_units_z2')."""
    kl = kl_per_dimension(model, mu, logvar)
    with torch.no_grad():
        upper = {f"active_units_{name}": active_units(means.cpu())
                 for name, means in model.prior.layer_means(mu.to(device_of(model))).items()}
    return {"active_units": active_units(mu), "kl_per_dim": None if kl is None else kl.tolist(), **upper}


@torch.no_grad()
def frechet_distance(classifier, real: torch.Tensor, fake: torch.Tensor, batch_size: int = 1000) -> float:
    """Fréchet distance between Gaussians fitted to the classifier's features (128-d) of two image sets
    (N, C, H, W) in [0, 1]: ‖μ_r − μ_f‖² + Tr(Σ_r + Σ_f − 2(Σ_r Σ_f)^½), in squared feature units.

    torchmetrics' FID with the data set's classifier in place of Inception; 0 for identical sets.
    """
    fid = FrechetInceptionDistance(feature=Features(classifier), normalize=True)
    for images, real_set in ((real, True), (fake, False)):
        for x in images.split(batch_size):
            fid.update(x, real=real_set)
    return fid.compute().item()


@torch.no_grad()
def sample_quality(model, classifier, test_images: torch.Tensor, n_samples: int = 10_000, seed: int = 0,
                   batch_size: int = 1000, sampler=None) -> dict[str, float]:
    """What the classifier makes of ``n_samples`` decoded latents drawn by ``sampler`` (a fitted
    ``vae_lab.evaluation.samplers`` sampler; default the model's prior), as the likelihood's means, no draw:

    'fid' (``frechet_distance`` to the test images), 'class_entropy' (entropy of the histogram of
    predicted classes, nats; log 10 ≈ 2.303 when ten classes are equally common: mode coverage),
    'mean_max_prob' (mean top-class probability: how recognisable single samples are) and, for a
    conditional model (samples asked for each class in turn), 'conditional_accuracy' (share
    classified as the class asked for).
    """
    wanted = torch.arange(n_samples) % model.num_classes if model.num_classes else None
    z = (sampler or FromPrior()).sample(n_samples, model, wanted, seed)
    samples = decode_images(model, z, wanted, batch_size)
    probs = predict(classifier, samples)
    histogram = probs.argmax(1).bincount(minlength=probs.shape[1]).float() / n_samples
    result = {
        "fid": frechet_distance(classifier, test_images, samples),
        "class_entropy": -(histogram * histogram.clamp_min(1e-12).log()).sum().item(),
        "mean_max_prob": probs.max(1).values.mean().item(),
    }
    if wanted is not None:
        result["conditional_accuracy"] = (probs.argmax(1) == wanted).float().mean().item()
    return result
