import pytest
import torch
from torch.distributions import Normal

from vae_lab.losses import VAELoss, kl_divergence, reconstruction_error


def test_closed_form_kl_matches_monte_carlo():
    torch.manual_seed(0)
    mu, logvar = torch.randn(4, 3), torch.randn(4, 3)
    closed_form = kl_divergence(mu, logvar).sum(1)

    q, prior = Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)
    z = q.sample((200_000,))  # (S, 4, 3)
    log_ratio = (q.log_prob(z) - prior.log_prob(z)).sum(-1)  # (S, 4)
    monte_carlo, standard_error = log_ratio.mean(0), log_ratio.std(0) / 200_000 ** 0.5
    assert (closed_form - monte_carlo).abs().max() < 4 * standard_error.max()


def test_kl_is_zero_at_the_prior_and_positive_elsewhere():
    assert kl_divergence(torch.zeros(2, 5), torch.zeros(2, 5)).abs().max() == 0
    assert (kl_divergence(torch.randn(2, 5), torch.randn(2, 5)) >= 0).all()


@pytest.mark.parametrize("likelihood", ["bce", "mse"])
def test_beta_weights_only_the_kl(likelihood):
    torch.manual_seed(0)
    logits, x = torch.randn(8, 1, 28, 28), torch.rand(8, 1, 28, 28)
    mu, logvar = torch.randn(8, 4), torch.randn(8, 4)
    plain = VAELoss(likelihood, beta=0.0)(logits, x, mu, logvar)
    assert plain["loss"] == plain["recon"]
    weighted = VAELoss(likelihood, beta=8.0)(logits, x, mu, logvar)
    torch.testing.assert_close(weighted["loss"], plain["recon"] + 8.0 * plain["kl"])


def test_bce_is_the_bernoulli_negative_log_likelihood_summed_over_pixels():
    torch.manual_seed(0)
    logits, x = torch.randn(3, 1, 28, 28), torch.rand(3, 1, 28, 28)
    p = torch.sigmoid(logits)
    expected = -(x * p.log() + (1 - x) * (1 - p).log()).sum((1, 2, 3))
    torch.testing.assert_close(reconstruction_error(logits, x, "bce"), expected, rtol=1e-5, atol=1e-4)


def test_mse_is_the_squared_error_of_the_probabilities_summed_over_pixels():
    logits, x = torch.zeros(2, 1, 28, 28), torch.ones(2, 1, 28, 28)  # sigmoid(0) = 0.5
    torch.testing.assert_close(reconstruction_error(logits, x, "mse"), torch.full((2,), 784 * 0.25))


def test_losses_are_per_sample_batch_means():
    torch.manual_seed(0)
    logits, x, mu, logvar = torch.randn(1, 1, 28, 28), torch.rand(1, 1, 28, 28), torch.randn(1, 4), torch.randn(1, 4)
    one = VAELoss("bce")(logits, x, mu, logvar)
    many = VAELoss("bce")(*(t.repeat(16, *[1] * (t.dim() - 1)) for t in (logits, x, mu, logvar)))
    for term in one:
        torch.testing.assert_close(one[term], many[term])


def test_unknown_likelihood_is_refused():
    with pytest.raises(ValueError, match="'bce' or 'mse'"):
        VAELoss("gaussian")
