"""How good a trained model is, as numbers: the test ELBO, the importance-weighted NLL bound, the
active units and, judged by the classifier of ``vae_lab.classifier``, the quality of its samples.

Every function takes a ``vae_lab.models`` model, images (N, 1, 28, 28) in [0, 1] and labels (N,)
(used only by conditional models), works in batches so memory stays bounded, and returns CPU
tensors. Likelihood terms are per sample, summed over the 784 pixels: nats for ``bce``; for ``mse``
the log-density of the Gaussian the loss implies (fixed variance σ² = 1/2, docs/theory.md section 4),
which is not comparable with ``bce`` numbers. Random draws come from a generator seeded by ``seed``.
"""
import math

import torch
import torch.nn.functional as F
from torchmetrics.image.fid import FrechetInceptionDistance

from vae_lab.classifier import Features, predict
from vae_lab.inference import decode_images, device_of, kl_per_dimension, posterior
from vae_lab.losses import kl_divergence, reconstruction_error, standard_normal_log_prob
from vae_lab.samplers import Prior


def log_likelihood(logits: torch.Tensor, x: torch.Tensor, likelihood: str) -> torch.Tensor:
    """log p(x|z) per sample (B,), summed over pixels.

    ``bce``: Bernoulli, in nats (a likelihood only for binary x). ``mse``: log N(x; sigmoid(logits), σ² = 1/2),
    i.e. −Σ(x − p)² − (D/2)·log π, a log-density of x.
    """
    log_p = -reconstruction_error(logits, x, likelihood)
    if likelihood == "mse":
        log_p = log_p - 0.5 * x[0].numel() * math.log(math.pi)
    return log_p


def _batches(model, images, labels, batch_size):
    device = device_of(model)
    for x, y in zip(images.split(batch_size), labels.split(batch_size)):
        yield x.to(device), y.to(device)


def flat_log_likelihood(logits: torch.Tensor, x: torch.Tensor, likelihood: str) -> torch.Tensor:
    """log p(x|z) (B, n) of logits (B, n, D) of n latents per image against the images x (B, D),
    both flat over the D pixels, without copying x n times (what ``log_likelihood`` gives for each)."""
    if likelihood == "bce":  # −BCE = x·l − softplus(l); the x·l sum as one batched product
        return torch.bmm(logits, x.unsqueeze(-1)).squeeze(-1) - F.softplus(logits).sum(-1)
    return -(torch.sigmoid(logits) - x.unsqueeze(1)).pow(2).sum(-1) - 0.5 * x.shape[-1] * math.log(math.pi)


@torch.inference_mode()
def log_weights(model, x: torch.Tensor, y: torch.Tensor, likelihood: str, k: int,
                generator: torch.Generator, max_rows: int = 4096) -> torch.Tensor:
    """log w = log p(x|z) + log p(z) − log q(z|x) for k draws z ~ q(z|x) per image: (B, k) nats.

    At most ``max_rows`` latents are decoded at once (k is split into chunks): memory stays bounded,
    and the decoded logits of a chunk stay in the processor's cache for the sums that read them.
    """
    mu, logvar = model.encode(x, y)
    chunk = max(1, max_rows // len(x))
    weights = []
    for start in range(0, k, chunk):
        n = min(chunk, k - start)
        eps = torch.randn(len(x), n, mu.shape[1], generator=generator, dtype=mu.dtype).to(mu.device)
        z = model.reparameterize(mu.unsqueeze(1), logvar.unsqueeze(1), eps)  # (B, n, z_dim)
        # log q(z|x) = Σ log N(eps; 0, 1) − Σ log σ, the change of variables z = mu + σ·eps
        log_q = standard_normal_log_prob(eps) - 0.5 * logvar.sum(-1, keepdim=True)
        logits = model.decode(z.flatten(0, 1), y.repeat_interleave(n)).view(len(x), n, -1)
        weights.append(flat_log_likelihood(logits, x.flatten(1), likelihood) + standard_normal_log_prob(z) - log_q)
    return torch.cat(weights, dim=1)


@torch.no_grad()
def iwae_bound(model, images: torch.Tensor, labels: torch.Tensor, likelihood: str, k: int = 1000,
               batch_size: int = 100, seed: int = 0) -> torch.Tensor:
    """The importance-weighted bound L_k(x) ≤ log p(x) per image (N,), nats for ``bce``.

    L_k = log (1/k) Σ_i w_i with k draws from q(z|x) (Burda, Grosse & Salakhutdinov 2015; docs/theory.md
    section 7); L_1 is a one-sample ELBO, and −L_k an upper bound on the NLL that tightens as k grows.
    """
    generator = torch.Generator().manual_seed(seed)
    bounds = []
    for x, y in _batches(model, images, labels, batch_size):
        log_w = log_weights(model, x, y, likelihood, k, generator)
        bounds.append((torch.logsumexp(log_w, 1) - math.log(k)).cpu())
    return torch.cat(bounds)


@torch.no_grad()
def elbo_terms(model, images: torch.Tensor, labels: torch.Tensor, likelihood: str,
               batch_size: int = 1000, seed: int = 0) -> dict[str, float]:
    """Means over the images of the loss terms, in the units of ``val/…``: 'recon' (−log p(x|z) for
    one z ~ q(z|x); nats for ``bce``, squared error for ``mse``), 'kl' (closed form, nats) and
    'elbo' = −(recon + kl) (for ``mse`` without the Gaussian constant)."""
    generator = torch.Generator().manual_seed(seed)
    recon = kl = 0.0
    for x, y in _batches(model, images, labels, batch_size):
        mu, logvar = model.encode(x, y)
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype).to(mu.device)
        logits = model.decode(model.reparameterize(mu, logvar, eps), y)
        recon += reconstruction_error(logits, x, likelihood).sum().item()
        kl += kl_divergence(mu, logvar).sum().item()
    recon, kl = recon / len(images), kl / len(images)
    return {"recon": recon, "kl": kl, "elbo": -(recon + kl)}


def active_units(mu: torch.Tensor, threshold: float = 0.01) -> int:
    """Latent dimensions whose posterior mean varies across the data: Cov_x(E_q[z_d]) > threshold.

    ``mu`` (N, z_dim) holds E_q[z] of N images (``vae_lab.inference.posterior``); Burda et al.
    (2015) count a unit as active when this variance exceeds 0.01.
    """
    return int((mu.var(0) > threshold).sum())


def latent_metrics(model, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """'active_units' (int) and 'kl_per_dim' (list of z_dim floats, nats) on the given images."""
    mu, logvar = posterior(model, images, labels)
    return {"active_units": active_units(mu), "kl_per_dim": kl_per_dimension(mu, logvar).tolist()}


@torch.no_grad()
def frechet_distance(classifier, real: torch.Tensor, fake: torch.Tensor, batch_size: int = 1000) -> float:
    """Fréchet distance between Gaussians fitted to the classifier's features (128-d) of two image sets
    (N, 1, 28, 28) in [0, 1]: ‖μ_r − μ_f‖² + Tr(Σ_r + Σ_f − 2(Σ_r Σ_f)^½), in squared feature units.

    torchmetrics' FID with the MNIST classifier in place of Inception; 0 for identical sets.
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
    ``vae_lab.samplers`` sampler; default z ~ N(0, I)), as pixel probabilities, no draw:

    'fid' (``frechet_distance`` to the test images), 'class_entropy' (entropy of the histogram of
    predicted classes, nats; log 10 ≈ 2.303 when all ten digits are equally common: mode coverage),
    'mean_max_prob' (mean top-class probability: how recognisable single samples are) and, for a
    conditional model (samples asked for digits 0-9 in turn), 'conditional_accuracy' (share classified
    as the digit asked for).
    """
    wanted = torch.arange(n_samples) % 10 if model.num_classes else None
    z = (sampler or Prior()).sample(n_samples, model.z_dim, wanted, seed)
    samples = decode_images(model, z, wanted, batch_size)
    probs = predict(classifier, samples)
    histogram = probs.argmax(1).bincount(minlength=10).float() / n_samples
    result = {
        "fid": frechet_distance(classifier, test_images, samples),
        "class_entropy": -(histogram * histogram.clamp_min(1e-12).log()).sum().item(),
        "mean_max_prob": probs.max(1).values.mean().item(),
    }
    if wanted is not None:
        result["conditional_accuracy"] = (probs.argmax(1) == wanted).float().mean().item()
    return result
