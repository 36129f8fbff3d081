"""model=hvae: two stochastic layers (x -> z1 -> z2), its prior over the codes, the two-layer bound and
what is logged and measured per layer."""
import json
import math

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf

from conftest import TINY_RUN, make_config, make_model, scalars
from vae_lab.evaluation import metrics
from vae_lab.runs import load_model
from vae_lab.errors import VaeLabError
from vae_lab.evaluate import main as evaluate_main
from vae_lab.models import build_model
from vae_lab.gaussian import gaussian_log_prob
from vae_lab.models.hvae import CodePrior
from vae_lab.priors import StandardNormal, VampPrior
from vae_lab.training.schedules import Constant
from vae_lab.registry import KL_SCHEDULES
from vae_lab.training import train
from vae_lab.training.losses import build_loss


def linear_count(n_in, n_out):
    return n_in * n_out + n_out


def test_the_layers_have_the_sizes_asked_for_and_the_codes_are_z1():
    model = make_model("hvae", z_dim=6, hidden=[40, 30], top_dim=4, top_hidden=[20, 10])
    expected = (  # x -> 40 -> 30 -> (mu, logvar) of z1, and back; z1 -> 20 -> 10 -> z2, and back
        linear_count(784, 40) + linear_count(40, 30) + 2 * linear_count(30, 6)
        + linear_count(6, 30) + linear_count(30, 40) + linear_count(40, 784)
        + linear_count(6, 20) + linear_count(20, 10) + 2 * linear_count(10, 4)
        + linear_count(4, 10) + linear_count(10, 20) + 2 * linear_count(20, 6))
    assert sum(p.numel() for p in model.parameters()) == expected
    x = torch.rand(5, 1, 28, 28)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (5, 6) and model.decode(mu).shape == (5, 1, 28, 28)
    assert [t.shape for t in model.encode_top(x)] == [(5, 4), (5, 4)]
    assert isinstance(model.prior, CodePrior) and isinstance(model.prior.top, StandardNormal)
    assert model.prior.top.z_dim == model.prior_dim == 4
    assert model.prior.sample(7).shape == (7, 6)
    samples = model.sample(7)
    assert samples.shape == (7, 1, 28, 28) and 0 <= samples.min() and samples.max() <= 1


def test_the_code_priors_density_estimate_is_unbiased():
    """exp of log p(z1|z2) + log p(z2) − log q(z2|z1), z2 ~ q(z2|z1), averages to p(z1) = E_p(z2)[p(z1|z2)]."""
    torch.manual_seed(0)
    model = make_model("hvae", z_dim=2, hidden=[8], top_dim=1, top_hidden=[8])
    prior = model.prior
    with torch.no_grad():
        z1 = prior.sample(3)
        estimate = prior.log_prob(z1.expand(200_000, 3, 2)).exp().mean(0)
        z2 = torch.randn(200_000, 1, 1)
        exact = gaussian_log_prob(z1, *prior.down(z2)).exp().mean(0)  # p(z1|z2) averaged over p(z2)
    torch.testing.assert_close(estimate, exact, rtol=0.03, atol=0)


def test_the_kl_of_both_layers_adds_up_to_the_kl_and_the_bound_tightens_with_k():
    torch.manual_seed(0)
    model = make_model("hvae", z_dim=4, hidden=[32], top_dim=2, top_hidden=[16])
    x = torch.bernoulli(torch.rand(50, 1, 28, 28))
    with torch.no_grad():
        mu, logvar = model.encode(x)
        z = model.reparameterize(mu, logvar)
        torch.manual_seed(1)
        total = model.prior.kl(mu, logvar, z)
        torch.manual_seed(1)  # the same draw of z2
        layers = model.prior.layer_kls(mu, logvar, z)
    assert set(layers) == {"kl_z1", "kl_z2"}
    torch.testing.assert_close(layers["kl_z1"] + layers["kl_z2"], total)
    labels = torch.zeros(50, dtype=torch.long)
    bounds = [metrics.iwae_bound(model, x, labels, k=k).mean().item() for k in (1, 10, 100)]
    assert bounds[0] < bounds[1] < bounds[2]
    assert metrics.iwae_bound(model, x, labels, k=10, seed=3).equal(metrics.iwae_bound(model, x, labels, k=10, seed=3))
    elbo = metrics.elbo_terms(model, x, labels)
    assert elbo["kl"] == pytest.approx(elbo["kl_z1"] + elbo["kl_z2"], rel=1e-5)
    assert elbo["elbo"] == pytest.approx(bounds[0], abs=2.0)  # both one-draw bounds, from different draws


def test_a_vamp_prior_over_the_top_layer_encodes_its_pseudo_inputs_to_z2():
    model = build_model({"model": {"name": "hvae", "z_dim": 6, "top_dim": 3}, "prior": {"name": "vamp", "components": 5}})
    top = model.prior.top
    assert isinstance(top, VampPrior)
    means, log_vars = top.components()
    torch.testing.assert_close(means, model.prior.up(model.encode(top.pseudo_inputs())[0])[0])
    assert means.shape == log_vars.shape == (5, 3)
    # the pseudo-inputs and the encoder reach the bound's gradient through p(z2)
    model.prior.log_prob(torch.randn(4, 6)).sum().backward()
    assert top.pseudo_logits.grad.abs().sum() > 0 and model.encoder[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("knob", [["kl_schedule=constant", "loss.estimator=dreg"], ["prior=vamp"], ["loss.iwae_k=1"]],
                         ids=["dreg", "vamp", "elbo"])
def test_each_knob_of_the_preset_turns_on_the_command_line(tmp_path, knob):
    """The 50-epoch knob table's commands build and set up, with no key of the preset's own choices left over."""
    cfg = make_config(tmp_path, "+experiment=hierarchical_baseline", *knob)
    config = OmegaConf.to_container(cfg, resolve=True)
    model = build_model(config)
    build_loss(config["loss"], model, KL_SCHEDULES.build(config["kl_schedule"]), train_size=100)


@pytest.mark.parametrize("loss, expected", [
    (["loss.free_bits=0.5"], "loss.free_bits=0.5 needs a KL per latent dimension, which model=hvae's prior over its codes"),
    (["loss=btcvae"], "loss=btcvae splits the KL over latent dimensions, so the prior must factorise over them; "
                      "model=hvae's prior over its codes does not"),
], ids=["free_bits", "btcvae"])
def test_what_needs_a_factorised_prior_refuses_the_hierarchical_model_in_one_line(tmp_path, loss, expected):
    cfg = make_config(tmp_path, "model=hvae", *loss)
    model = make_model("hvae")
    with pytest.raises(VaeLabError) as error:
        build_loss(OmegaConf.to_container(cfg.loss, resolve=True), model, Constant(1.0), train_size=100)
    assert str(error.value).startswith(expected) and "\n" not in str(error.value)


def test_a_short_run_trains_both_layers_logs_each_and_comes_back_from_its_checkpoint(tmp_path):
    class Keep(Callback):
        def on_train_end(self, trainer, pl_module):
            self.model = pl_module.model

    run, keep = tmp_path / "run", Keep()
    train(make_config(run, "model=hvae", "prior=vamp", "prior.components=10", "z_dim=8", "model.top_dim=4",
                      "loss.iwae_k=3", "data.binarize=dynamic", "epochs=3", *TINY_RUN[:-2],
                      "trainer.limit_train_batches=40", "trainer.limit_val_batches=4"), callbacks=[keep])
    logged = scalars(run)
    for term in ("loss", "kl_z1", "kl_z2"):
        assert f"val/{term}" in logged and f"train/{term}_epoch" in logged
    assert {"val/active_units", "val/active_units_z2"} <= set(logged)
    val_loss = [value for _, value in logged["val/loss"]]
    assert val_loss[-1] < val_loss[0] - 20  # it learned, from ~545 nats at the start
    model, _, _ = load_model(run)
    z1 = torch.randn(3, 8)
    torch.manual_seed(0)
    restored = model.prior.log_prob(z1)
    torch.manual_seed(0)
    torch.testing.assert_close(restored, keep.model.eval().cpu().prior.log_prob(z1), rtol=0, atol=0)
    evaluate_main([f"run={run}", "k=20", "n_images=200", "n_samples=0", "disentanglement=false"])
    measured = json.loads((run / "metrics.json").read_text())
    assert measured["test_kl"] == pytest.approx(measured["test_kl_z1"] + measured["test_kl_z2"], rel=1e-4)
    assert 0 <= measured["active_units_z2"] <= 4 and math.isfinite(measured["test_nll_bce"])
    assert measured["test_nll_bce"] < -measured["test_elbo"] + 1  # the k=20 bound is the tighter one
