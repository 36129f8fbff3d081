"""The numbers of vae_lab.metrics are trustworthy: the importance-sampled likelihood converges to
log p(x) computed exactly, tightens the ELBO on a trained model, and the evaluation command writes
them into the run folder."""
import json
import math
import subprocess
import sys

import pytest
import torch

from conftest import DATA_ROOT, REPO
from vae_lab.checkpoint import load_model
from vae_lab.data import load_mnist
from vae_lab.metrics import active_units, elbo_terms, iwae_bound
from vae_lab.models.dense import DenseVAE


def exact_log_px(model, x, likelihood):
    """log p(x) of a z_dim = 1 model by quadrature over z, with the decoder's likelihood written out
    independently of vae_lab (torch.distributions); also the posterior's mean and standard deviation."""
    z = torch.linspace(-10, 10, 20001, dtype=torch.double)
    logits = model.decode(z[:, None])
    if likelihood == "bce":
        log_px_z = torch.distributions.Bernoulli(logits=logits).log_prob(x)
    else:
        log_px_z = torch.distributions.Normal(torch.sigmoid(logits), math.sqrt(0.5)).log_prob(x)
    joint = log_px_z.flatten(1).sum(1) + torch.distributions.Normal(0.0, 1.0).log_prob(z)
    posterior = torch.softmax(joint, 0)
    mean = (posterior * z).sum()
    return (torch.logsumexp(joint, 0) + math.log(z[1] - z[0])).item(), mean, (posterior * (z - mean) ** 2).sum().sqrt()


@pytest.mark.parametrize("likelihood", ["bce", "mse"])
@torch.no_grad()
def test_iwae_converges_to_the_exact_log_likelihood(likelihood):
    torch.manual_seed(0)
    model = DenseVAE(z_dim=1).double().eval()
    p = torch.sigmoid(model.decode(torch.ones(1, 1, dtype=torch.double)))
    noise = torch.Generator().manual_seed(1)
    if likelihood == "bce":
        x = torch.bernoulli(p, generator=noise)
    else:
        x = p + 0.7 * torch.randn(p.shape, generator=noise, dtype=torch.double)
    exact, mean, std = exact_log_px(model, x, likelihood)
    # q(z|x): the true posterior's moments, shifted by half a standard deviation and twice as wide
    model.mu.weight.zero_(), model.logvar.weight.zero_()
    model.mu.bias.fill_(mean + 0.5 * std)
    model.logvar.bias.fill_(math.log((2 * std) ** 2))
    images, labels = x.repeat(8, 1, 1, 1), torch.zeros(8, dtype=torch.long)

    gap = {k: exact - iwae_bound(model, images, labels, likelihood, k=k).mean().item() for k in (1, 1000)}
    assert gap[1] > 0.5  # the ELBO of a poor q is visibly loose ...
    assert abs(gap[1000]) < 0.03, gap  # ... and 1000 importance samples close the gap


def test_iwae_bound_tightens_the_elbo_on_a_trained_model(short_runs, data_root):
    model, config, _ = load_model(short_runs("dense-bce"))
    images, labels = load_mnist(data_root, train=False, download=False).tensors
    images, labels = images[:200], labels[:200]
    bounds = {k: iwae_bound(model, images, labels, "bce", k=k).mean().item() for k in (1, 10, 100)}
    elbo = elbo_terms(model, images, labels, "bce")["elbo"]
    assert abs(bounds[1] - elbo) < 2.0  # L_1 is a one-sample ELBO (200 images: Monte Carlo noise)
    assert elbo < bounds[10] < bounds[100], (elbo, bounds)
    assert bounds[100] - elbo > 1.0


def test_active_units_counts_dimensions_whose_mean_varies():
    mu = torch.randn(1000, 5, generator=torch.Generator().manual_seed(0))
    mu[:, 1] *= 0.05  # variance 0.0025: inactive
    mu[:, 3] = 2.0  # constant: inactive
    assert active_units(mu) == 3
