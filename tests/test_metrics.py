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


def evaluate(*args: str) -> subprocess.CompletedProcess:
    env = {"VAE_LAB_DATA": str(DATA_ROOT), "OMP_NUM_THREADS": "1", "PATH": ""}
    return subprocess.run([sys.executable, "-m", "vae_lab.evaluate", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name", ["dense-bce", "conv-mse-z2"])
def test_evaluate_writes_metrics_json_into_the_run_folder(name, short_runs):
    run_dir = short_runs(name)
    result = evaluate(f"run={run_dir}", "k=20", "n_images=100")
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads((run_dir / "metrics.json").read_text())
    likelihood = "bce" if name == "dense-bce" else "mse"
    assert found["likelihood"] == likelihood and found["binarize"] == "none"
    assert f"test_nll_{'mse' if likelihood == 'bce' else 'bce'}" not in found  # never one key for both
    assert found["iwae_k"] == 20 and found["n_images"] == 100
    assert found["test_elbo"] == pytest.approx(-(found["test_recon"] + found["test_kl"]))
    z_dim = 20 if name == "dense-bce" else 2
    assert len(found["kl_per_dim"]) == z_dim and 0 <= found["active_units"] <= z_dim
    assert sum(found["kl_per_dim"]) == pytest.approx(found["test_kl"], rel=1e-4)
    nll = found[f"test_nll_{likelihood}"]
    if likelihood == "bce":
        assert nll < -found["test_elbo"]  # k = 20 tightens the one-sample bound
    else:  # the Gaussian constant (784/2)·log π is in the NLL, not in the loss terms
        assert nll < -found["test_elbo"] + 392 * math.log(math.pi)


@pytest.mark.parametrize("args, message", [
    ((), "error: give the run"),
    (("run=/no/such/run",), "error: no checkpoint at /no/such/run"),
    (("run=x", "k=0"), "error: k=0 must be an integer >= 1"),
    (("run=x", "kk=3"), "error: Key 'kk' is not in struct; options are run, k, n_images"),
])
def test_evaluate_errors_are_one_line(args, message):
    result = evaluate(*args)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(message), result.stderr
