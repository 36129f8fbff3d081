import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from vae_lab.errors import VaeLabError
from conftest import make_config, make_model
from vae_lab.data import ImageDataModule
from vae_lab.likelihoods import Likelihood
from vae_lab.registry import LIKELIHOODS
from vae_lab.training.losses import BTCVAELoss, VAELoss, mws_log_q, tc_decomposition
from vae_lab.models import build_model
from vae_lab.priors import MixtureOfGaussians, StandardNormal
from vae_lab.training.schedules import Constant
from vae_lab.registry import KL_SCHEDULES
from vae_lab.training.losses import build_loss


def test_closed_form_kl_matches_monte_carlo():
    torch.manual_seed(0)
    mu, logvar = torch.randn(4, 3), torch.randn(4, 3)
    closed_form = StandardNormal(3).kl_per_dim(mu, logvar).sum(1)

    q, prior = Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)
    z = q.sample((200_000,))  # (S, 4, 3)
    log_ratio = (q.log_prob(z) - prior.log_prob(z)).sum(-1)  # (S, 4)
    monte_carlo, standard_error = log_ratio.mean(0), log_ratio.std(0) / 200_000 ** 0.5
    assert (closed_form - monte_carlo).abs().max() < 4 * standard_error.max()


def test_kl_is_zero_at_the_prior_and_positive_elsewhere():
    prior = StandardNormal(5)
    assert prior.kl_per_dim(torch.zeros(2, 5), torch.zeros(2, 5)).abs().max() == 0
    assert (prior.kl_per_dim(torch.randn(2, 5), torch.randn(2, 5)) >= 0).all()


def test_the_monte_carlo_kl_of_a_prior_without_closed_form_estimates_the_closed_form():
    torch.manual_seed(0)
    mu, logvar = torch.randn(4, 3), torch.randn(4, 3)
    prior = StandardNormal(3)
    z = mu + torch.exp(0.5 * logvar) * torch.randn(100_000, 4, 3)
    prior.closed_form_kl = False  # the base class's estimate, log q(z|x) − log p(z) over the draws
    estimate = prior.kl(mu, logvar, z)
    prior.closed_form_kl = True
    torch.testing.assert_close(estimate, prior.kl(mu, logvar, z), atol=0.05, rtol=0.02)


def encoded(z_dim=4, n=8, seed=0, likelihood="bce"):
    """A real (untrained) dense model, n images and their encoding."""
    torch.manual_seed(seed)
    model, x = make_model(z_dim=z_dim, likelihood=likelihood), torch.rand(n, 1, 28, 28)
    return model, x, *model.encode(x)


@pytest.mark.parametrize("likelihood", ["bce", "mse"])
def test_beta_weights_only_the_kl(likelihood):
    model, x, mu, logvar = encoded(likelihood=likelihood)
    torch.manual_seed(1)
    plain = VAELoss()(model, x, None, mu, logvar, Constant(0.0))
    assert plain["loss"] == plain["recon"]
    torch.manual_seed(1)  # the same noise
    weighted = VAELoss()(model, x, None, mu, logvar, Constant(8.0))
    torch.testing.assert_close(weighted["loss"], plain["recon"] + 8.0 * plain["kl"])


def test_iwae_with_one_sample_is_exactly_the_elbo_for_the_same_noise():
    model, x, mu, logvar = encoded()
    torch.manual_seed(1)
    eps = torch.randn(1, *mu.shape)
    recon = LIKELIHOODS.build("bce").reconstruction(model.decode(mu + torch.exp(0.5 * logvar) * eps[0]), x).mean()
    elbo_loss = recon + StandardNormal(4).kl_per_dim(mu, logvar).sum(1).mean()
    torch.manual_seed(1)
    iwae = VAELoss(iwae_k=1)(model, x, None, mu, logvar, Constant(1.0))
    assert torch.equal(iwae["loss"], elbo_loss) and torch.equal(iwae["recon"], recon)


def test_free_bits_hold_each_dimensions_kl_term_at_lambda_when_below_it():
    model, x, _, _ = encoded(z_dim=3)
    mu = torch.tensor([[0.0, 0.0, 3.0]]).repeat(len(x), 1).requires_grad_()  # KL per dim 0, 0, 4.5 nats
    logvar = torch.zeros(len(x), 3)
    torch.manual_seed(1)
    plain = VAELoss()(model, x, None, mu, logvar, Constant(1.0))
    torch.manual_seed(1)
    floored = VAELoss(free_bits=0.5)(model, x, None, mu, logvar, Constant(1.0))
    assert plain["kl"].item() == floored["kl"].item() == pytest.approx(4.5)  # the reported KL is the true one
    torch.testing.assert_close(floored["loss"] - floored["recon"], torch.tensor(0.5 + 0.5 + 4.5))
    (gradient,) = torch.autograd.grad(floored["loss"] - floored["recon"], mu)
    assert (gradient[:, :2] == 0).all() and (gradient[:, 2] > 0).all()  # below λ: no pull towards the prior


def test_bce_is_the_bernoulli_negative_log_likelihood_summed_over_pixels():
    torch.manual_seed(0)
    logits, x = torch.randn(3, 1, 28, 28), torch.rand(3, 1, 28, 28)
    p = torch.sigmoid(logits)
    expected = -(x * p.log() + (1 - x) * (1 - p).log()).sum((1, 2, 3))
    torch.testing.assert_close(LIKELIHOODS.build("bce").reconstruction(logits, x), expected, rtol=1e-5, atol=1e-4)


def test_mse_is_the_squared_error_of_the_probabilities_summed_over_pixels():
    logits, x = torch.zeros(2, 1, 28, 28), torch.ones(2, 1, 28, 28)  # sigmoid(0) = 0.5
    torch.testing.assert_close(LIKELIHOODS.build("mse").reconstruction(logits, x), torch.full((2,), 784 * 0.25))


@pytest.mark.parametrize("likelihood", ["bce", "mse", "gaussian", "logistic_mixture", "categorical"])
def test_the_fast_iwae_log_probability_equals_the_plain_one(likelihood):
    torch.manual_seed(0)
    owner = LIKELIHOODS.build(likelihood)
    logits, x = torch.randn(3, 5, owner.outputs(1), 28, 28), torch.rand(3, 1, 28, 28)
    plain = owner.log_prob(logits.flatten(0, 1), x.repeat_interleave(5, 0)).view(3, 5)
    torch.testing.assert_close(owner.flat_log_prob(logits, x), plain, rtol=1e-5, atol=1e-3)
    # and the base class's way, which a likelihood of one's own inherits
    torch.testing.assert_close(Likelihood.flat_log_prob(owner, logits, x), plain, rtol=1e-5, atol=1e-3)


def test_losses_are_per_sample_batch_means():
    model, x, mu, _ = encoded(n=1)
    logvar = torch.full_like(mu, -40.0)  # σ ≈ 2e-9: every draw of z is mu, whatever the noise
    one = VAELoss()(model, x, None, mu, logvar, Constant(1.0))
    many = VAELoss()(model, x.repeat(16, 1, 1, 1), None, mu.repeat(16, 1), logvar.repeat(16, 1), Constant(1.0))
    for term in one:
        torch.testing.assert_close(one[term], many[term])


def test_unknown_likelihood_is_refused():
    with pytest.raises(VaeLabError, match=r"^loss.likelihood.name=poisson is not a registered likelihood "
                                          r"\(registered: bce, mse, gaussian, logistic_mixture, categorical"):  # plugins another test loaded follow
        make_model(likelihood="poisson")


def test_the_model_owns_its_likelihood_and_the_loss_asks_it():
    """One likelihood per run: the model's, built once; the loss's reconstruction term is its."""
    model, x, mu, logvar = encoded(likelihood="mse")
    assert type(model.likelihood).__name__ == "FixedGaussian" and model.likelihood in model.modules()
    model.likelihood.reconstruction = lambda logits, images: torch.full((len(images),), 7.0)  # the one every caller asks
    assert VAELoss()(model, x, None, mu, logvar, Constant(1.0))["recon"] == 7.0


def test_the_mixture_prior_has_the_density_of_torchs_mixture_and_samples_from_it():
    torch.manual_seed(0)
    prior = MixtureOfGaussians(z_dim=3, components=4)
    with torch.no_grad():
        prior.log_vars.normal_(0, 0.5), prior.logits.normal_()
    mixture = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=prior.logits),
        torch.distributions.Independent(torch.distributions.Normal(prior.means, (0.5 * prior.log_vars).exp()), 1))
    z = torch.randn(2, 5, 3)
    torch.testing.assert_close(prior.log_prob(z), mixture.log_prob(z))
    draws = prior.sample(200_000, torch.Generator().manual_seed(1)).detach()
    torch.testing.assert_close(draws.mean(0), mixture.mean.detach(), atol=0.02, rtol=0)
    torch.testing.assert_close(draws.var(0), mixture.variance.detach(), atol=0.05, rtol=0.02)


def test_a_one_component_standard_mixture_gives_the_closed_form_kl_by_monte_carlo():
    torch.manual_seed(0)
    prior = MixtureOfGaussians(z_dim=3, components=1)
    with torch.no_grad():
        prior.means.zero_()
    mu, logvar = torch.randn(4, 3), torch.randn(4, 3)
    z = mu + torch.exp(0.5 * logvar) * torch.randn(100_000, 4, 3)
    closed_form = StandardNormal(3).kl_per_dim(mu, logvar).sum(1)
    torch.testing.assert_close(prior.kl(mu, logvar, z), closed_form, atol=0.05, rtol=0.02)


def vamp_model(components=6, z_dim=3):
    """A dense model with a VampPrior whose components lie apart (its encoder's outputs scaled up)."""
    torch.manual_seed(0)
    model = build_model({"model": {"name": "dense", "z_dim": z_dim, "hidden": [32]},
                         "prior": {"name": "vamp", "components": components}})
    with torch.no_grad():
        model.mu.weight.mul_(20), model.logvar.weight.mul_(5)
    return model


def test_the_vamp_prior_is_the_mixture_of_the_encoders_gaussians_at_its_pseudo_inputs():
    model = vamp_model()
    pseudo_inputs = model.prior.pseudo_inputs()
    assert pseudo_inputs.shape == (6, 1, 28, 28) and 0 < pseudo_inputs.min() and pseudo_inputs.max() < 1
    z = torch.randn(2, 5, 3) * 3
    per_component = torch.stack([Normal(mu, torch.exp(0.5 * logvar)).log_prob(z).sum(-1)  # brute force, one by one
                                 for mu, logvar in zip(*model.encode(pseudo_inputs))])  # (6, 2, 5)
    log_prob = model.prior.log_prob(z)
    torch.testing.assert_close(log_prob, torch.logsumexp(per_component, 0) - math.log(6))
    assert (per_component.max(0).values - per_component.min(0).values).min() > 1  # the components differ
    log_prob.sum().backward()
    assert model.prior.pseudo_logits.grad.abs().min() > 0 and model.mu.weight.grad.abs().max() > 0  # both learn


def test_the_vamp_prior_draws_from_its_mixture():
    model = vamp_model()
    draws = model.prior.sample(100_000, torch.Generator().manual_seed(1)).detach()
    mu, logvar = (t.detach() for t in model.encode(model.prior.pseudo_inputs()))
    mean, variance = mu.mean(0), (logvar.exp() + mu.pow(2)).mean(0) - mu.mean(0).pow(2)
    assert draws.shape == (100_000, 3)
    torch.testing.assert_close(draws.mean(0), mean, atol=0.03 * variance.max().sqrt().item(), rtol=0)
    torch.testing.assert_close(draws.var(0), variance, atol=0, rtol=0.02)
    assert model.sample(4).shape == (4, 1, 28, 28)
    assert model.prior.quantiles(torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)).shape == (3, 3)


def gradients(model, x, loss, seed):
    """The loss's value and its gradient, flat, for the encoder's and the decoder's parameters."""
    model.zero_grad()
    mu, logvar = model.encode(x)
    torch.manual_seed(seed)
    value = loss(model, x, None, mu, logvar, Constant(1.0))["loss"]
    value.backward()
    encoder = [p for name, p in model.named_parameters() if not name.startswith(("decoder", "prior"))]
    flat = [torch.cat([p.grad.flatten() for p in group]) for group in (encoder, model.decoder.parameters())]
    return value.detach(), *flat


def test_dreg_keeps_the_value_and_the_decoders_and_priors_gradient_of_the_standard_estimator():
    model, x, _, _ = encoded(n=3)
    model.prior = MixtureOfGaussians(z_dim=4, components=3)  # a learned prior gets the usual gradient too
    standard = gradients(model, x, VAELoss(iwae_k=7), seed=1)
    prior_standard = model.prior.means.grad.clone()
    dreg = gradients(model, x, VAELoss(iwae_k=7, estimator="dreg"), seed=1)
    assert torch.equal(standard[0], dreg[0])  # the same loss, bit for bit
    # the decoder's gradient, up to the float32 rounding of log w ≈ −550 nats (~5e-5) in the weights
    torch.testing.assert_close(dreg[2], standard[2], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(model.prior.means.grad, prior_standard, rtol=1e-4, atol=1e-4)
    assert (dreg[1] - standard[1]).abs().max() > 100 * (dreg[2] - standard[2]).abs().max()  # the encoder's is not


def test_dreg_gives_the_encoder_the_squared_weights_times_the_path_gradient():
    """Tucker et al. (2018): ∇φ = Σ_i w̃_i² ∂log w_i/∂z_i ∂z_i/∂φ, here computed step by step:
    ∂log w_i/∂z_i at a detached z with q's parameters fixed, then pushed through z = mu + σ·eps."""
    model, x, _, _ = encoded(n=3)
    k, loss = 6, VAELoss(iwae_k=6, estimator="dreg")
    _, encoder, _ = gradients(model, x, loss, seed=2)

    mu, logvar = model.encode(x)
    torch.manual_seed(2)
    eps = torch.randn(k, *mu.shape)
    z = model.reparameterize(mu, logvar, eps)
    at = z.detach().requires_grad_()
    q = Normal(mu.detach(), torch.exp(0.5 * logvar.detach()))
    log_w = (-model.likelihood.reconstruction(model.decode(at.flatten(0, 1)), x.repeat(k, 1, 1, 1)).view(k, len(x))
             + Normal(0.0, 1.0).log_prob(at).sum(-1) - q.log_prob(at).sum(-1))
    (path,) = torch.autograd.grad(log_w.sum(), at)  # ∂log w_i/∂z_i: each sample's own
    squared_weights = torch.softmax(log_w.detach(), 0).pow(2).unsqueeze(-1)
    encoder_parameters = [p for name, p in model.named_parameters() if not name.startswith("decoder")]
    expected = torch.autograd.grad(-(squared_weights * path * z).sum() / len(x), encoder_parameters)
    torch.testing.assert_close(encoder, torch.cat([g.flatten() for g in expected]), rtol=1e-4, atol=1e-6)


def test_dreg_lowers_the_variance_of_the_encoders_gradient_at_k_50(data_root):
    from vae_lab.data import load_mnist

    x = load_mnist(data_root, train=False, download=False).tensors[0][:4]  # four real test digits
    torch.manual_seed(0)
    model = make_model(z_dim=8, hidden=[32])
    variance = {}
    for estimator in ("standard", "dreg"):
        loss = VAELoss(iwae_k=50, estimator=estimator)
        draws = torch.stack([gradients(model, x, loss, seed)[1] for seed in range(30)])  # the same 30 seeds
        variance[estimator] = draws.var(0).sum().item()
    assert variance["dreg"] * 5 < variance["standard"], variance  # measured: about 20x lower


@pytest.mark.parametrize("settings, message", [
    ({"estimator": "dreg"}, "estimator=dreg reweights the k samples of the importance-weighted bound: it needs iwae_k > 1"),
    ({"estimator": "dreg", "iwae_k": 5, "free_bits": 0.5}, "estimator=dreg is the gradient of the plain importance-weighted "
                                                           "bound: it needs free_bits=0, not 0.5"),
    ({"estimator": "reinforce", "iwae_k": 5}, "estimator=reinforce must be standard or dreg"),
])
def test_dreg_without_the_plain_bound_is_refused(settings, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        VAELoss(**settings)


@pytest.fixture
def tiny_data(tmp_path):
    """A data module over 50 random images of one's own, 40 of them for training."""
    np.savez(tmp_path / "tiny.npz", images=np.random.default_rng(0).integers(0, 256, (50, 28, 28), np.uint8))
    datamodule = ImageDataModule("images", path=str(tmp_path / "tiny.npz"), test_fraction=0.2)
    datamodule.setup("fit")
    return datamodule


def drawn(mu, logvar):
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


def test_mws_estimate_of_the_aggregate_posterior_against_the_mixture_itself():
    """q(z) = 1/N Σ_n q(z|x_n) and its marginals, computed as torch's mixture of the N posteriors:
    a batch of the whole data set (M = N) gives log q(z) − log N exactly, a batch of some of its
    images at most log q(z) − log M."""
    torch.manual_seed(0)
    n, z_dim = 6, 3
    mu, logvar = torch.randn(n, z_dim, dtype=torch.float64), torch.randn(n, z_dim, dtype=torch.float64)
    z = drawn(mu, logvar)
    components = Normal(mu, torch.exp(0.5 * logvar))
    aggregate = MixtureSameFamily(Categorical(logits=torch.zeros(n)), Independent(components, 1))
    marginals = MixtureSameFamily(Categorical(logits=torch.zeros(z_dim, n)), Normal(mu.T, components.scale.T))
    exact, exact_marginals = aggregate.log_prob(z), marginals.log_prob(z)  # (M,), (M, z_dim)

    log_q_z, log_q_marginals = mws_log_q(z, mu, logvar, dataset_size=n)
    torch.testing.assert_close(log_q_z, exact - math.log(n))
    torch.testing.assert_close(log_q_marginals, exact_marginals - math.log(n))

    batch = [0, 2, 5]  # a batch of three of the six images, each with its own z
    log_q_z, log_q_marginals = mws_log_q(z[batch], mu[batch], logvar[batch], dataset_size=n)
    assert (log_q_z <= exact[batch] - math.log(len(batch))).all()
    assert (log_q_marginals <= exact_marginals[batch] - math.log(len(batch))).all()


def test_mws_when_every_posterior_is_the_same_gives_mi_log_n_and_tc_d_minus_1_log_n():
    """A collapsed code: q(z) is each image's posterior, so the true MI and TC are 0; the estimate
    of log q(z) is log N too low, and the terms carry that offset (docs/theory.md, section 5)."""
    torch.manual_seed(0)
    n, batch, z_dim = 60_000, 64, 5
    mu, logvar = torch.randn(1, z_dim).expand(batch, -1), torch.randn(1, z_dim).expand(batch, -1)
    z = drawn(mu, logvar)
    terms = tc_decomposition(z, mu, logvar, StandardNormal(z_dim), dataset_size=n)
    torch.testing.assert_close(terms["mi"], torch.tensor(math.log(n)))
    torch.testing.assert_close(terms["tc"], torch.tensor((z_dim - 1) * math.log(n)))


def test_mi_tc_and_dimension_wise_kl_add_up_to_the_one_draw_kl_estimate():
    _, _, mu, logvar = encoded(z_dim=5, n=16)
    z = drawn(mu, logvar)
    terms = tc_decomposition(z, mu, logvar, StandardNormal(5), dataset_size=60_000)
    one_draw_kl = (Normal(mu, torch.exp(0.5 * logvar)).log_prob(z) - Normal(0.0, 1.0).log_prob(z)).sum(1).mean()
    torch.testing.assert_close(terms["mi"] + terms["tc"] + terms["dim_kl"], one_draw_kl)
    # N only moves nats between the terms: log(N·M) enters MI once, TC (z_dim − 1) times, dimKL −z_dim times
    smaller = tc_decomposition(z, mu, logvar, StandardNormal(5), dataset_size=600)
    shift = math.log(100)
    for term, times in {"mi": 1, "tc": 4, "dim_kl": -5}.items():
        torch.testing.assert_close(terms[term] - smaller[term], torch.tensor(times * shift), atol=1e-4, rtol=0)


def test_btcvae_with_unit_weights_is_the_elbo_but_for_the_kl_estimate(tiny_data):
    model, x, mu, logvar = encoded()
    loss = BTCVAELoss(model=model, kl_schedule=Constant(1.0), train_size=len(tiny_data.train_set))
    torch.manual_seed(1)
    btcvae = loss(model, x, None, mu, logvar, Constant(1.0))
    torch.manual_seed(1)  # the same noise
    plain = VAELoss()(model, x, None, mu, logvar, Constant(1.0))
    assert torch.equal(btcvae["recon"], plain["recon"]) and torch.equal(btcvae["kl"], plain["kl"])
    # the rest of the loss is the KL estimated from the draws: over many, the closed form
    with torch.no_grad():
        draws = [loss(model, x, None, mu, logvar, Constant(1.0)) for _ in range(200)]
    estimates = torch.stack([draw["loss"] - draw["recon"] for draw in draws])
    assert abs(estimates.mean() - plain["kl"]) < 4 * estimates.std() / len(draws) ** 0.5


def test_btcvae_weights_enter_as_configured_and_n_comes_from_the_data(tmp_path, tiny_data):
    config = OmegaConf.to_container(make_config(tmp_path, "loss=btcvae", "loss.alpha=2", "loss.gamma=0.5", "beta=5"),
                                    resolve=True)
    model, x, mu, logvar = encoded()
    schedule = KL_SCHEDULES.build(config["kl_schedule"])
    loss = build_loss(config["loss"], model, schedule, len(tiny_data.train_set))
    assert loss.dataset_size == len(tiny_data.train_set)
    torch.manual_seed(1)
    weighted = loss(model, x, None, mu, logvar, schedule)
    torch.testing.assert_close(weighted["loss"], weighted["recon"] + 2 * weighted["mi"] + 5 * weighted["tc"]
                               + 0.5 * weighted["dim_kl"])
    unit = BTCVAELoss(model=model, kl_schedule=Constant(1.0), train_size=len(tiny_data.train_set))
    torch.manual_seed(1)
    for term, value in unit(model, x, None, mu, logvar, Constant(1.0)).items():
        if term != "loss":  # the weights change the loss, not its terms
            assert torch.equal(value, weighted[term]), term


@pytest.mark.parametrize("refused, expected", [
    ("loss.iwae_k=4", "loss.iwae_k=4: loss=btcvae estimates the KL's parts from one z per image"),
    ("loss.free_bits=0.5", "loss.free_bits=0.5: loss=btcvae weights the KL's parts"),
    ("prior=mog", "loss=btcvae splits the KL over latent dimensions, so the prior must factorise over them; "
                  "prior=mog does not"),
    ("kl_schedule=capacity", "kl_schedule=capacity aims the whole KL at a capacity"),
], ids=["iwae_k", "free_bits", "mog", "capacity"])
def test_btcvae_refuses_what_makes_no_sense_in_one_line(tmp_path, tiny_data, refused, expected):
    config = OmegaConf.to_container(make_config(tmp_path, "loss=btcvae", refused), resolve=True)
    model = make_model()
    if refused == "prior=mog":
        model.prior = MixtureOfGaussians(model.z_dim)
    with pytest.raises(VaeLabError) as error:
        build_loss(config["loss"], model, KL_SCHEDULES.build(config["kl_schedule"]), len(tiny_data.train_set))
    assert str(error.value).startswith(expected) and "\n" not in str(error.value)
