"""KL schedules, free bits, the IWAE objective, β-TCVAE and the cosine learning rate, on short real
runs (5 steps an epoch, every step logged); see docs/configuration.md and docs/theory.md."""
import math

import pytest
import torch

from conftest import TINY_RUN, make_config, scalars
from vae_lab.runs import load_model
from vae_lab.data import load_mnist
from vae_lab.errors import VaeLabError
from vae_lab.training.losses import VAELoss
from vae_lab.training.schedules import Constant, CosineLR
from vae_lab.training import train

STEPS = 5  # per epoch, in TINY_RUN


def logged_run(tmp_path, *overrides):
    """{tag: {step: value}} of a run of TINY_RUN epochs with every step logged."""
    train(make_config(tmp_path, *TINY_RUN, "trainer.log_every_n_steps=1", *overrides))
    return {tag: dict(values) for tag, values in scalars(tmp_path).items()}


def test_linear_warmup_starts_at_zero_and_reaches_beta(tmp_path, data_root):
    logged = logged_run(tmp_path, "epochs=3", "beta=2", "kl_schedule=linear_warmup", "kl_schedule.warmup_epochs=2")
    beta = logged["train/beta"]
    assert sorted(beta) == list(range(3 * STEPS))
    assert beta[0] == 0 and beta[3 * STEPS - 1] == 2.0
    for step, value in beta.items():
        assert value == pytest.approx(2.0 * min(1.0, step / (2 * STEPS)))
    # validation is measured at the final weighting, whatever the schedule is at
    assert logged["val/loss"][STEPS] == pytest.approx(logged["val/recon"][STEPS] + 2.0 * logged["val/kl"][STEPS], rel=1e-5)


def test_cyclical_schedule_repeats_its_ramp(tmp_path, data_root):
    logged = logged_run(tmp_path, "epochs=3", "kl_schedule=cyclical", "kl_schedule.cycle_epochs=1", "kl_schedule.ramp=0.6")
    beta = logged["train/beta"]
    first = [beta[step] for step in range(STEPS)]
    assert first == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0, 1.0])  # 0 → β over 60% of the cycle, then β
    for step in range(STEPS, 3 * STEPS):
        assert beta[step] == beta[step - STEPS]


def test_capacity_schedule_tracks_c_of_t(tmp_path, data_root):
    logged = logged_run(tmp_path, "epochs=2", "beta=50", "kl_schedule=capacity", "kl_schedule.capacity=10",
                        "kl_schedule.capacity_epochs=1")
    for step, capacity in logged["train/capacity"].items():
        assert capacity == pytest.approx(10.0 * min(1.0, step / STEPS))
        kl, recon = logged["train/kl"][step], logged["train/recon"][step]
        assert logged["train/loss"][step] == pytest.approx(recon + 50 * abs(kl - capacity), rel=1e-4)
    assert set(logged["train/beta"].values()) == {50.0}


def test_free_bits_keep_every_dimensions_kl_term_at_lambda_or_above(tmp_path, data_root):
    logged = logged_run(tmp_path, "epochs=2", "z_dim=8", "loss.free_bits=0.5")
    for step, loss in logged["train/loss"].items():
        penalty = loss - logged["train/recon"][step]  # Σ_d max(λ, KL_d)
        assert penalty >= 8 * 0.5 - 1e-3 and penalty >= logged["train/kl"][step] - 1e-3
    assert min(logged["train/kl"].values()) < 8 * 0.5  # the floor was reached and held


def test_iwae_loss_is_below_the_elbo_loss_in_expectation(short_runs, data_root):
    model, _, _ = load_model(short_runs("dense-bce"))
    x = load_mnist(data_root, train=False, download=False).tensors[0][:500]
    elbo, iwae = VAELoss(iwae_k=1), VAELoss(iwae_k=8)
    torch.manual_seed(0)
    with torch.no_grad():
        mu, logvar = model.encode(x)
        draws = {name: torch.stack([loss(model, x, None, mu, logvar, Constant(1.0))["loss"] for _ in range(20)])
                 for name, loss in (("elbo", elbo), ("iwae", iwae))}
    gap = draws["elbo"].mean() - draws["iwae"].mean()
    noise = (draws["elbo"].var() / 20 + draws["iwae"].var() / 20).sqrt()
    assert gap > 4 * noise and gap > 0.5, (gap, noise)  # nats per digit


def test_iwae_training_runs_and_reports_recon_and_kl(tmp_path, data_root):
    logged = logged_run(tmp_path, "epochs=1", "loss.iwae_k=4")
    for step, loss in logged["train/loss"].items():
        assert loss < logged["train/recon"][step] + logged["train/kl"][step]  # tighter than its own ELBO terms
    assert logged["val/loss"][STEPS] < logged["val/loss"][0]


def test_cosine_learning_rate_falls_from_lr_to_the_final_fraction(tmp_path, data_root):
    logged = logged_run(tmp_path, "epochs=4", "lr=2e-3", "lr_schedule=cosine", "lr_schedule.warmup_epochs=1",
                        "lr_schedule.final_fraction=0.1")
    schedule = CosineLR(warmup_epochs=1, final_fraction=0.1)
    for step, lr in logged["train/lr"].items():
        assert lr == pytest.approx(2e-3 * schedule.factor(step / STEPS, 4), rel=1e-6, abs=1e-12)  # float32 events
    assert logged["train/lr"][STEPS] == pytest.approx(2e-3)  # the top, after one epoch of warm-up
    assert logged["train/lr"][4 * STEPS - 1] == pytest.approx(2e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 14 / 15))))


def test_btcvae_trains_on_mnist_and_logs_each_term(tmp_path, data_root):
    logged = logged_run(tmp_path, "epochs=2", "loss=btcvae", "loss.likelihood=mse", "beta=4")
    for stage in ("train", "val"):
        for step, loss in logged[f"{stage}/loss"].items():
            terms = {term: logged[f"{stage}/{term}"][step] for term in ("recon", "mi", "tc", "dim_kl")}
            assert loss == pytest.approx(terms["recon"] + terms["mi"] + 4 * terms["tc"] + terms["dim_kl"], rel=1e-4)
    first, *_, last = sorted(logged["val/loss"])  # from the untrained model at step 0 to the end
    assert logged["val/loss"][last] < logged["val/loss"][first]
    assert logged["val/recon"][last] < 0.7 * logged["val/recon"][first]


def test_btcvae_with_a_prior_that_does_not_factorise_is_refused_before_the_run_folder_gets_a_file(tmp_path, data_root):
    with pytest.raises(VaeLabError, match=r"^loss=btcvae splits the KL over latent dimensions.*prior=mog does not"):
        train(make_config(tmp_path, *TINY_RUN, "loss=btcvae", "prior=mog"))
    assert not (tmp_path / "config.yaml").exists()
