"""Samplers fitted to where the training images sit in latent space (vae_lab.evaluation.samplers), on real
encodings of short trained runs; see docs/metrics.md."""
import numpy as np
import pytest
import torch

from conftest import TINY_RUN, run_train
from vae_lab.runs import load_model
from vae_lab.data import load_mnist
from vae_lab.errors import VaeLabError
from vae_lab.generate import main as generate_main
from vae_lab.evaluation.inference import posterior
from vae_lab.evaluation.metrics import sample_quality
from vae_lab.evaluation.samplers import FromPrior, GaussianMixture, SecondStage, build_sampler, fitted_sampler, sampler_file


@pytest.fixture(scope="module")
def training_means(short_runs, data_root):
    """The dense short run's model and the posterior means (10,000 training digits) it encodes."""
    model, _, _ = load_model(short_runs("dense-bce"))
    images, labels = load_mnist(data_root, train=True, download=False).tensors
    return model, posterior(model, images[:10_000], labels[:10_000])[0]


@pytest.mark.parametrize("sampler, tolerance", [(GaussianMixture(10), 0.05), (SecondStage(hidden=256, epochs=15), 0.25)])
def test_a_fitted_samplers_draws_have_the_moments_of_the_training_means(sampler, tolerance, training_means):
    model, mu = training_means
    sampler.fit(mu, None, seed=0)
    z = sampler.sample(20_000, model, seed=1)
    scale = mu.std(0).mean()
    assert (z.mean(0) - mu.mean(0)).abs().max() < tolerance * scale
    relative = torch.linalg.matrix_norm(torch.cov(z.T) - torch.cov(mu.T)) / torch.linalg.matrix_norm(torch.cov(mu.T))
    assert relative < 2 * tolerance, relative
    prior = FromPrior().sample(20_000, model, seed=1)  # the prior's draws miss them by far more
    assert torch.linalg.matrix_norm(torch.cov(prior.T) - torch.cov(mu.T)) > 3 * torch.linalg.matrix_norm(torch.cov(z.T) - torch.cov(mu.T))


def test_refitting_is_deterministic_and_a_saved_sampler_draws_the_same(training_means, tmp_path):
    model, mu = training_means
    first, second = GaussianMixture(5), GaussianMixture(5)
    first.fit(mu, None, seed=3)
    second.fit(mu, None, seed=3)
    assert all(np.array_equal(first.arrays[name], second.arrays[name]) for name in first.arrays)
    first.save(tmp_path / "mixture.npz")
    loaded = GaussianMixture(5)
    loaded.load(tmp_path / "mixture.npz")
    assert torch.equal(loaded.sample(100, model, seed=4), first.sample(100, model, seed=4))


def test_fitted_sampler_fits_once_and_keeps_it_beside_the_checkpoint(training_means, tmp_path, data_root):
    model, _ = training_means
    images, labels = load_mnist(data_root, train=True, download=False).tensors
    checkpoint = tmp_path / "last.ckpt"
    fitted = fitted_sampler(GaussianMixture(3), model, images[:2000], labels[:2000], checkpoint, seed=0)
    path = sampler_file(checkpoint, fitted, seed=0)
    assert path == tmp_path / "last.gmm-3-seed0.npz" and path.is_file()
    with np.load(path, allow_pickle=False) as saved:  # plain arrays only
        assert sorted(saved.files) == ["-1/cholesky", "-1/means", "-1/weights"]
    again = fitted_sampler(GaussianMixture(3), model, images[:0], labels[:0], checkpoint, seed=0)  # read, not refitted
    assert torch.equal(again.sample(10, model, seed=1), fitted.sample(10, model, seed=1))


def test_a_cvae_sampler_fitted_per_class_draws_what_was_asked_more_often_than_the_prior(short_runs, classifier, data_root):
    model, _, _ = load_model(short_runs("cvae-bce"))
    images, labels = load_mnist(data_root, train=True, download=False).tensors
    gmm = GaussianMixture(3)
    gmm.fit(posterior(model, images[:20_000], labels[:20_000])[0], labels[:20_000], seed=0)
    assert gmm.classes() == list(range(10))
    test = load_mnist(data_root, train=False, download=False).tensors[0]
    prior = sample_quality(model, classifier, test, n_samples=2000, sampler=FromPrior())
    per_class = sample_quality(model, classifier, test, n_samples=2000, sampler=gmm)
    assert per_class["conditional_accuracy"] > prior["conditional_accuracy"], (per_class, prior)


@pytest.mark.parametrize("config, message", [
    ("nosuch", "sampler.name=nosuch is not a registered sampler (registered: prior, gmm, vae2); a component of your own is loaded with plugins=[your.module]"),
    ({"name": "prior", "temperature": 0.0}, "sampler.temperature=0.0 must be a number > 0"),
    ({"name": "prior", "temperature": -1}, "sampler.temperature=-1 must be a number > 0"),
    ({"name": "gmm", "components": 0}, "sampler.components=0 must be an integer >= 1"),
    ({"name": "gmm", "components": "many"}, "sampler.components=many must be an integer >= 1"),
    ({"name": "gmm", "temperature": 1.0}, "sampler.temperature: sampler gmm has no such setting (its settings: components); if a preset set it for another choice of sampler, drop it with ~sampler.temperature"),
])
def test_bad_sampler_settings_are_one_line(config, message):
    with pytest.raises(VaeLabError) as error:
        build_sampler(config)
    assert str(error.value) == message


def test_bad_sampler_on_the_command_lines_is_one_line(short_runs, tmp_path):
    for argv in (["sampler=nosuch"], ["sampler.temperature=0"], ["sampler=gmm", "sampler.components=0"]):
        with pytest.raises(SystemExit) as exit:
            generate_main([f"run={short_runs('dense-bce')}", f"out={tmp_path}", *argv])
        assert str(exit.value.code).startswith("error: sampler") and "\n" not in str(exit.value.code)
    result = run_train("sampler.temperature=0", *TINY_RUN, run_dir=tmp_path / "run")  # before anything trains
    assert result.stderr.strip().splitlines()[-1] == "error: sampler.temperature=0 must be a number > 0"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("damage", ["truncated", "empty", "of another sampler"])
def test_a_damaged_sampler_file_is_one_line(damage, short_runs, tmp_path, training_means):
    run = short_runs("dense-bce")
    path = run / "checkpoints" / "last.gmm-4-seed0.npz"
    model, mu = training_means
    if damage == "of another sampler":
        other = SecondStage(hidden=8, epochs=1)
        other.fit(mu[:500], None, seed=0)
        other.save(path)
    else:
        path.write_bytes(b"" if damage == "empty" else b"PK\x03\x04 half a file")
    try:
        with pytest.raises(SystemExit) as exit:
            generate_main([f"run={run}", "sampler=gmm", "sampler.components=4", f"out={tmp_path}"])
        line = str(exit.value.code)
        assert line.startswith(f"error: {path}: not a") and line.endswith("delete it to fit the sampler again"), line
    finally:
        path.unlink()
