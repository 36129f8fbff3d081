"""The numbers of vae_lab.evaluation.metrics are trustworthy: the importance-sampled likelihood converges to
log p(x) computed exactly, tightens the ELBO on a trained model, and the evaluation command writes
them into the run folder."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import DATA_ROOT, REPO, TINY_RUN, make_model, run_train
from torchvision.transforms.functional import gaussian_blur

from vae_lab.runs import load_model
from vae_lab.evaluation.classifier import accuracy
from vae_lab.data import load_mnist
from vae_lab.evaluate import main as evaluate_main
from vae_lab.registry import LIKELIHOODS
from vae_lab.priors import StandardNormal
from vae_lab.evaluation.metrics import active_units, elbo_terms, frechet_distance, iwae_bound, sample_quality


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
    model = make_model(z_dim=1, likelihood=likelihood).double().eval()
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

    gap = {k: exact - iwae_bound(model, images, labels, k=k).mean().item() for k in (1, 1000)}
    assert gap[1] > 0.5  # the ELBO of a poor q is visibly loose ...
    assert abs(gap[1000]) < 0.03, gap  # ... and 1000 importance samples close the gap


def test_iwae_bound_tightens_the_elbo_on_a_trained_model(short_runs, data_root):
    model, config, _ = load_model(short_runs("dense-bce"))
    images, labels = load_mnist(data_root, train=False, download=False).tensors
    images, labels = images[:200], labels[:200]
    bounds = {k: iwae_bound(model, images, labels, k=k).mean().item() for k in (1, 10, 100)}
    elbo = elbo_terms(model, images, labels)["elbo"]
    assert abs(bounds[1] - elbo) < 2.0  # L_1 is a one-sample ELBO (200 images: Monte Carlo noise)
    assert elbo < bounds[10] < bounds[100], (elbo, bounds)
    assert bounds[100] - elbo > 1.0


def test_active_units_counts_dimensions_whose_mean_varies():
    mu = torch.randn(1000, 5, generator=torch.Generator().manual_seed(0))
    mu[:, 1] *= 0.05  # variance 0.0025: inactive
    mu[:, 3] = 2.0  # constant: inactive
    assert active_units(mu) == 3


def test_classifier_is_right_on_98_percent_of_the_test_digits_after_one_epoch(classifier, data_root):
    assert accuracy(classifier, *load_mnist(data_root, train=False, download=False).tensors) >= 0.98


def test_frechet_distance_is_zero_on_itself_small_on_new_digits_and_large_on_damaged_ones(classifier, data_root):
    test = load_mnist(data_root, train=False, download=False).tensors[0]
    train = load_mnist(data_root, train=True, download=False).tensors[0][:10_000]
    noise = torch.Generator().manual_seed(0)
    distance = {
        "itself": frechet_distance(classifier, test, test),
        "training digits": frechet_distance(classifier, test, train),
        "blurred": frechet_distance(classifier, test, gaussian_blur(test, kernel_size=5, sigma=1.5)),
        "noisy": frechet_distance(classifier, test, (test + 0.3 * torch.randn(test.shape, generator=noise)).clamp(0, 1)),
    }
    assert abs(distance["itself"]) < 1e-3 * distance["training digits"], distance
    assert distance["blurred"] > 10 * distance["training digits"], distance
    assert distance["noisy"] > 10 * distance["training digits"], distance


class Replay(torch.nn.Module):
    """A stand-in generator that decodes to real test digits: digit y when asked for one, else always ``images[0]``."""

    z_dim = 2

    def __init__(self, images: torch.Tensor, num_classes: int):
        super().__init__()
        self.images, self.num_classes = images, num_classes
        self.prior, self.likelihood = StandardNormal(self.z_dim), LIKELIHOODS.build("bce")
        self.image_shape = tuple(images.shape[1:])
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # metrics find the device through the parameters

    def decode(self, z, y=None):
        index = torch.zeros(len(z), dtype=torch.long) if y is None else y
        return torch.logit(self.images[index].clamp(1e-4, 1 - 1e-4))


def test_class_metrics_see_mode_coverage_and_conditioning(classifier, data_root):
    test, labels = load_mnist(data_root, train=False, download=False).tensors
    one_per_digit = test[[int((labels == digit).nonzero()[0]) for digit in range(10)]]
    conditional = sample_quality(Replay(one_per_digit, num_classes=10), classifier, test, n_samples=1000)
    assert conditional["conditional_accuracy"] == 1.0  # each sample shows the digit asked for
    assert conditional["class_entropy"] == pytest.approx(math.log(10), abs=1e-6)  # all ten, equally often
    collapsed = sample_quality(Replay(one_per_digit, num_classes=0), classifier, test, n_samples=1000)
    assert collapsed["class_entropy"] == pytest.approx(0, abs=1e-6) and "conditional_accuracy" not in collapsed
    assert collapsed["mean_max_prob"] > 0.9
    assert collapsed["fid"] > 3 * conditional["fid"]  # one repeated digit is further from the test set than ten


def test_sample_quality_of_a_trained_cvae(classifier, short_runs, data_root):
    model, _, _ = load_model(short_runs("cvae-bce"))
    test = load_mnist(data_root, train=False, download=False).tensors[0]
    trained = sample_quality(model, classifier, test, n_samples=1000)
    torch.manual_seed(0)
    untrained = sample_quality(make_model("cvae", z_dim=model.z_dim), classifier, test, n_samples=1000)
    assert untrained["conditional_accuracy"] < 0.2  # about chance
    assert trained["conditional_accuracy"] > untrained["conditional_accuracy"] + 0.05, (trained, untrained)
    assert trained["fid"] < untrained["fid"], (trained, untrained)


def evaluate(*args: str) -> subprocess.CompletedProcess:
    env = {"VAE_LAB_DATA": str(DATA_ROOT), "OMP_NUM_THREADS": "1", "PATH": ""}
    return subprocess.run([sys.executable, "-m", "vae_lab.evaluate", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name", ["dense-bce", "conv-mse-z2"])
def test_evaluate_writes_metrics_json_into_the_run_folder(name, short_runs, classifier_path):
    run_dir = short_runs(name)
    result = evaluate(f"run={run_dir}", "k=20", "n_images=100", "n_samples=500", f"classifier={classifier_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads((run_dir / "metrics.json").read_text())
    likelihood = "bce" if name == "dense-bce" else "mse"
    assert found["likelihood"] == likelihood and found["binarize"] == "none"
    assert f"test_nll_{'mse' if likelihood == 'bce' else 'bce'}" not in found  # never one key for both
    assert found["iwae_k"] == 20 and found["n_images"] == 100 and found["n_samples"] == 500
    assert found["classifier_test_accuracy"] >= 0.98 and found["fid"] > 0 and "conditional_accuracy" not in found
    assert found["disentanglement"] == "not measured: at least 1000 images are needed, 100 given" and "mig" not in found
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
    (("run=/no/such/run", "n_samples=0"), "error: no checkpoint at /no/such/run"),
    (("run=x", "k=0"), "error: k=0 must be an integer >= 1"),
    (("run=x", "classifier=/no/such.pt"), "error: no classifier at /no/such.pt: train it once with"),
    (("run=x", "n_samples=-1"), "error: n_samples=-1 must be an integer >= 0"),
    (("run=x", "kk=3"), "error: Key 'kk' is not in struct; options are run, k, n_images"),
])
def test_evaluate_errors_are_one_line(args, message):
    with pytest.raises(SystemExit) as refusal:  # the command in this process (a process each costs seconds of imports)
        evaluate_main(list(args))
    assert str(refusal.value.code).startswith(message) and "\n" not in str(refusal.value.code)


def test_an_evaluate_refusal_is_the_last_line_its_process_prints():
    result = evaluate("run=x", "k=0")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: k=0 must be an integer >= 1"), result.stderr


def test_evaluation_at_the_end_of_training_joins_the_hparams_table(tmp_path, morphometrics_cache, monkeypatch):
    monkeypatch.setenv("VAE_LAB_CACHE", str(morphometrics_cache))
    result = run_train("epochs=1", "callbacks=evaluate", "callbacks.evaluate.k=5", "callbacks.evaluate.n_images=1000",
                       *TINY_RUN, run_dir=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads((tmp_path / "metrics.json").read_text())
    assert found["iwae_k"] == 5 and found["n_images"] == 1000 and "fid" not in found
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert {"hparams/test_nll_bce", "hparams/active_units", "hparams/val_loss", "hparams/mig",
            "hparams/dci_disentanglement", "hparams/sap"} <= set(events.Tags()["scalars"])
    assert events.Scalars("hparams/test_nll_bce")[-1].value == pytest.approx(found["test_nll_bce"])
    assert events.Scalars("hparams/mig")[-1].value == pytest.approx(found["mig"])
    assert (tmp_path / "traversal_factors.png").is_file()


def test_a_damaged_classifier_file_is_one_line_for_evaluate_and_for_training(classifier_path, tmp_path):
    corrupt, foreign = tmp_path / "corrupt.pt", tmp_path / "foreign.pt"
    corrupt.write_bytes(classifier_path.read_bytes()[:3000])
    torch.save({"weights": torch.zeros(3)}, foreign)
    for path, fault in ((corrupt, "not a readable classifier file (truncated or corrupt)"),
                        (foreign, "not a vae_lab classifier file; train it again with python -m vae_lab.classifier")):
        result = evaluate("run=x", f"classifier={path}")
        assert result.returncode != 0 and "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines()[-1] == f"error: {path}: {fault}"
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "mnist_classifier.pt").write_bytes(corrupt.read_bytes())
    result = subprocess.run([sys.executable, "train.py", "callbacks=evaluate", "callbacks.evaluate.n_samples=100",
                             *TINY_RUN, f"hydra.run.dir={tmp_path / 'run'}"], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "VAE_LAB_DATA": str(DATA_ROOT), "VAE_LAB_CACHE": str(cache)})
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (f"error: {cache / 'mnist_classifier.pt'}: not a readable "
                                                      "classifier file (truncated or corrupt)")
    assert not (tmp_path / "run").exists()
