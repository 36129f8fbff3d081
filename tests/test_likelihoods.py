"""The likelihoods of 8-bit pixels (``loss=gaussian``, ``logistic``, ``categorical``): their
log-probabilities on real Fashion-MNIST images against independent float64 computations, their
masses over the 256 levels, their draws and means, and short real colour runs with each."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import DATA_ROOT, TINY_RUN, make_config, scalars
from test_extending import fashion_images
from vae_lab.data import load_torchvision
from vae_lab.evaluate import main as evaluate_main
from vae_lab.generate import main as generate_main
from vae_lab.registry import LIKELIHOODS
from vae_lab.training import train

EIGHT_BIT = ["gaussian", "logistic_mixture", "categorical"]


@pytest.fixture(scope="module")
def fashion():
    """Eight Fashion-MNIST test images (8, 1, 28, 28), k/255, holding both edge levels 0 and 255."""
    images = load_torchvision("fashion_mnist", DATA_ROOT, train=False, download=False).tensors[0][:8]
    assert (images == 0).any() and (images == 1).any()
    return images


def tinted(images: torch.Tensor) -> torch.Tensor:
    """Grey images (B, 1, H, W) as colour ones (B, 3, H, W), each channel its own levels."""
    return torch.cat([images, (images * 0.6).mul(255).round().div(255), images.flip(-1)], dim=1)


def decoder_outputs(likelihood, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    torch.manual_seed(0)
    return scale * torch.randn(len(x), likelihood.outputs(x.shape[1]), *x.shape[2:])


def bins(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The edges of the bins of the levels of x, float64, the outer ones at ∓∞."""
    k = (x.double() * 255).round()
    lower = torch.where(k == 0, -math.inf, (k - 0.5) / 255)
    upper = torch.where(k == 255, math.inf, (k + 0.5) / 255)
    return lower, upper


def test_the_learned_gaussian_is_the_normal_mass_of_each_level(fashion):
    likelihood = LIKELIHOODS.build({"name": "gaussian", "min_std": 0.01})
    logits = decoder_outputs(likelihood, fashion, 0.5)  # σ > 0.1: float64's masses do not underflow
    mean, raw = logits.double().chunk(2, dim=1)
    normal = torch.distributions.Normal(torch.sigmoid(mean), 0.01 + F.softplus(raw))
    mirrored = torch.distributions.Normal(-normal.loc, normal.scale)  # its right tail as a left one: no 1 − 1
    lower, upper = bins(fashion)
    mass = torch.where(lower + upper > 2 * normal.loc, mirrored.cdf(-lower) - mirrored.cdf(-upper),
                       normal.cdf(upper) - normal.cdf(lower))
    expected = mass.log().sum((1, 2, 3))
    torch.testing.assert_close(likelihood.log_prob(logits, fashion).double(), expected, rtol=1e-5, atol=1e-2)
    _, std = likelihood.distribution(torch.full((1, 2, 1, 1), -60.0))
    assert std.item() == pytest.approx(0.01)  # σ's floor, min_std


def logistic_mixture_reference(logits: torch.Tensor, x: torch.Tensor, k: int) -> torch.Tensor:
    """PixelCNN++'s discretized logistic mixture written out in float64, for 1 or 3 channels."""
    logits, x = logits.double(), (x.double() * 255).round() / 255
    channels = x.shape[1]
    parts = logits.split([k, k * channels, k * channels, k * channels * (channels - 1) // 2], dim=1)
    log_pi = torch.log_softmax(parts[0], dim=1)
    mu, log_s = (p.unflatten(1, (k, channels)) for p in parts[1:3])
    s = log_s.clamp(min=-7 - math.log(2)).exp()
    if channels == 3:  # G's mean moves with R, B's with R and G
        a = torch.tanh(parts[3]).unflatten(1, (k, 3))
        r, g = x[:, None, 0], x[:, None, 1]
        mu = torch.stack([mu[:, :, 0], mu[:, :, 1] + a[:, :, 0] * r, mu[:, :, 2] + a[:, :, 1] * r + a[:, :, 2] * g], 2)
    lower, upper = bins(x.unsqueeze(1))
    mass = torch.sigmoid((upper - mu) / s) - torch.sigmoid((lower - mu) / s)
    return torch.log((log_pi.exp() * mass.prod(2)).sum(1)).sum((1, 2))


@pytest.mark.parametrize("colour", [False, True])
def test_the_logistic_mixture_is_pixelcnn_plus_plus_in_float64(fashion, colour):
    x = tinted(fashion) if colour else fashion
    likelihood = LIKELIHOODS.build({"name": "logistic_mixture", "components": 5})
    logits = decoder_outputs(likelihood, x)
    expected = logistic_mixture_reference(logits, x, 5)
    torch.testing.assert_close(likelihood.log_prob(logits, x).double(), expected, rtol=1e-5, atol=1e-2)


def test_the_categorical_is_a_softmax_over_the_levels(fashion):
    likelihood = LIKELIHOODS.build({"name": "categorical", "features": 4})
    logits = decoder_outputs(likelihood, fashion)
    per_value = likelihood.readout(logits.unflatten(1, (1, 4)).movedim(2, -1))  # (B, C, H, W, 256)
    levels = (fashion * 255).round().long()
    expected = torch.distributions.Categorical(logits=per_value).log_prob(levels).sum((1, 2, 3))
    torch.testing.assert_close(likelihood.log_prob(logits, fashion), expected, rtol=1e-5, atol=1e-3)


def every_level() -> torch.Tensor:
    """The 256 values of a grey pixel, as (256, 1, 1, 1) images."""
    return (torch.arange(256.0) / 255).view(-1, 1, 1, 1)


@pytest.mark.parametrize("name", EIGHT_BIT)
def test_the_masses_of_every_level_sum_to_one(name):
    """Of a grey pixel: a colour one's 256³ values take half a minute on 2 cores (its sum, 1.0000,
    was checked once); each of its channels is a grey pixel's distribution given the channels
    before it (test_the_logistic_mixture_is_pixelcnn_plus_plus_in_float64)."""
    likelihood = LIKELIHOODS.build(name)
    for scale in (0.1, 3.0):  # a wide and a sharp pixel, pushed to the edges
        logits = decoder_outputs(likelihood, torch.zeros(1, 1, 1, 1), scale)
        total = likelihood.log_prob(logits.expand(256, -1, -1, -1), every_level()).double().exp().sum()
        assert total.item() == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("name", EIGHT_BIT)
def test_draws_follow_the_masses_and_average_to_the_mean(name):
    likelihood = LIKELIHOODS.build(name)
    logits = decoder_outputs(likelihood, torch.zeros(1, 1, 1, 1), 0.5)
    draws = likelihood.sample(logits.expand(20_000, -1, -1, -1), torch.Generator().manual_seed(0)).flatten()
    assert torch.equal(draws, (draws * 255).round() / 255)  # levels
    masses = likelihood.log_prob(logits.expand(256, -1, -1, -1), every_level()).exp()
    seen = torch.bincount((draws * 255).round().long(), minlength=256).float() / len(draws)
    assert (seen.cumsum(0) - masses.cumsum(0)).abs().max() < 0.02  # Kolmogorov's distance; 0.0096 at p = 0.05
    assert likelihood.mean(logits).item() == pytest.approx(draws.mean().item(), abs=0.01)


def test_a_pixel_far_from_its_mean_keeps_a_finite_log_probability_and_gradient(fashion):
    for name in ("gaussian", "logistic_mixture"):
        likelihood = LIKELIHOODS.build(name)
        # scales at their floors, means up to thousands of scales away
        logits = decoder_outputs(likelihood, fashion, 10.0).clamp(max=5).requires_grad_()
        log_p = likelihood.log_prob(logits, fashion)
        (gradient,) = torch.autograd.grad(log_p.sum(), logits)
        assert torch.isfinite(log_p).all() and torch.isfinite(gradient).all(), name


@pytest.mark.parametrize("name", EIGHT_BIT)
def test_a_colour_run_trains_evaluates_in_bits_per_dimension_and_draws(name, tmp_path):
    images, labels = fashion_images(300, (3, 32, 32))
    np.savez(tmp_path / "colour.npz", images=images, labels=labels)
    run = tmp_path / "run"
    option = {"gaussian": ["loss=gaussian"], "logistic_mixture": ["loss=logistic", "loss.likelihood.components=2"],
              "categorical": ["loss=categorical", "loss.likelihood.features=4"]}[name]
    train(make_config(run, *option, "model.hidden=[64]", "z_dim=4", "batch_size=32", "data=images",
                      f"data.path={tmp_path / 'colour.npz'}", "epochs=1", *TINY_RUN,
                      "callbacks.figures.every_n_epochs=0", "callbacks.figures.n_samples=16"))
    summary = json.loads((run / "summary.json").read_text())
    bits = summary["final"]["val_bits_per_dim"]
    assert summary["final"]["val_loss"] == pytest.approx(bits * 3072 * math.log(2), rel=1e-4)  # β = 1: the ELBO
    assert "val/bits_per_dim" in scalars(run)
    for picture, rows in (("samples_drawn.png", 4), ("reconstructions.png", 3)):
        drawn = np.asarray(Image.open(run / picture).convert("RGB")).astype(int)
        assert drawn.shape[0] == rows * 34 + 2 and np.abs(drawn[..., 0] - drawn[..., 1]).max() > 0  # colour tiles
    evaluate_main([f"run={run}", "k=4", "n_images=20", "n_samples=0", "disentanglement=false"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_bits_per_dim"] == pytest.approx(metrics[f"test_nll_{name}"] / (3072 * math.log(2)))
    assert metrics["test_bits_per_dim"] > 0
    generate_main([f"run={run}", "n=4"])
    assert np.load(run / "generated" / "samples.npy").shape == (4, 32, 32, 3)
    generated = run / "generated"
    assert Image.open(generated / "samples_drawn.png").size == Image.open(generated / "samples.png").size
