"""Other data than MNIST: Fashion-MNIST through torchvision and a user's own arrays file, on short
real runs; see docs/configuration.md (data) and docs/results.md (Fashion-MNIST)."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import DATA_ROOT, REPO, SHORT_RUN, TINY_RUN, made_once, make_config, run_train, scalars
from vae_lab.runs import load_model
from vae_lab.evaluation.classifier import load_classifier, save_classifier, train_classifier
from vae_lab.data import load_mnist
from vae_lab.errors import VaeLabError
from vae_lab.evaluate import main as evaluate_main
from vae_lab.generate import main as generate_main
from vae_lab.training import train


def test_a_short_fashion_mnist_run_names_its_data_set_and_learns(tmp_path, data_root):
    result = run_train("data=fashion_mnist", "model=conv", "loss=mse", "epochs=1", *SHORT_RUN, run_dir=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["settings"]["data"] == "fashion_mnist" and summary["status"] == "finished"
    val_loss = scalars(tmp_path)["val/loss"]
    assert val_loss[-1][1] < 0.7 * val_loss[0][1]
    _, config, _ = load_model(tmp_path)
    assert config["data"]["name"] == "fashion_mnist" and config["data"]["root"] == str(DATA_ROOT)


def test_the_run_folder_names_the_data_set():
    for data, prefix in (("mnist", "outputs/mnist-dense-bce-beta1.0-z20/"), ("fashion_mnist", "outputs/fashion_mnist-conv-")):
        result = subprocess.run([sys.executable, "train.py", f"data={data}", "model=conv" if data != "mnist" else "model=dense",
                                 "--cfg", "all", "--resolve"], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert f"dir: {prefix}" in result.stdout


def real_digits_file(path, n=600, labels=True):
    """The first n MNIST test digits as uint8, saved the way a user would save their own images."""
    images, digits = load_mnist(DATA_ROOT, train=False, download=False).tensors
    arrays = {"images": (images[:n, 0] * 255).round().to(torch.uint8).numpy()}
    if labels:
        arrays["labels"] = digits[:n].numpy()
    np.savez(path, **arrays) if path.suffix == ".npz" else np.save(path, arrays["images"])
    return path


def test_own_images_from_an_arrays_file_train_a_cvae_and_generate_reads_them_again(tmp_path, data_root):
    path = real_digits_file(tmp_path / "mine.npz")
    run = tmp_path / "run"
    train(make_config(run, "data=images", f"data.path={path}", "model=cvae", "epochs=1", *TINY_RUN))
    _, config, _ = load_model(run)
    assert config["data"] == {**config["data"], "name": "images", "path": str(path), "test_fraction": 0.1}
    generate_main([f"run={run}", "label=3", f"out={tmp_path / 'generated'}"])  # the test images from the file
    assert (tmp_path / "generated" / "interpolation.png").is_file()


def test_a_file_without_labels_trains_unconditional_models_and_refuses_conditional_ones(tmp_path, data_root):
    path = real_digits_file(tmp_path / "mine.npy", labels=False)
    train(make_config(tmp_path / "dense", "data=images", f"data.path={path}", "z_dim=2", "epochs=1", *TINY_RUN))
    assert (tmp_path / "dense" / "latent_scatter.png").is_file()
    with pytest.raises(VaeLabError, match=r"^model cvae: it is conditional and needs labelled data \(the data have no classes\)$"):
        train(make_config(tmp_path / "cvae", "data=images", f"data.path={path}", "model=cvae", "epochs=1", *TINY_RUN))
    assert not (tmp_path / "cvae").exists()


@pytest.mark.parametrize("overrides, message", [
    (["data=images"], "error: data.path has no value: give it on the command line, data.path=..."),
    (["data=images", "data.path=/no/such.npz"], "error: /no/such.npz: no such file"),
    (["data.name=cifar10"], "error: data.name=cifar10 is not a registered data (registered: mnist, fashion_mnist, images)"),
    (["data=fashion_mnist", "data.root=/no/such/folder", "data.download=false"],
     "error: FashionMNIST not found in /no/such/folder/FashionMNIST/raw"),
])
def test_bad_data_settings_are_one_line(overrides, message, tmp_path):
    result = run_train(*overrides, *TINY_RUN, run_dir=tmp_path / "run")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(message), result.stderr[-2000:]
    assert not (tmp_path / "run").exists()


def test_unknown_data_set_keeps_hydras_message_listing_the_choices(tmp_path):
    result = run_train("data=cifar10", run_dir=tmp_path / "run")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "Could not find 'data/cifar10'" in result.stderr
    assert all(name in result.stderr for name in ("mnist", "fashion_mnist", "images"))


@pytest.fixture(scope="module")
def fashion_classifier(tmp_path_factory, data_root):
    """A Fashion-MNIST classifier trained for one epoch (the measured 3-epoch one is in docs/metrics.md)."""
    source = {"name": "fashion_mnist", "root": str(data_root), "download": False}
    cache = made_once(tmp_path_factory, "fashion-cache",
                      lambda folder: save_classifier(*train_classifier(source, epochs=1), folder / "fashion_mnist_classifier.pt"))
    return cache / "fashion_mnist_classifier.pt", load_classifier(cache / "fashion_mnist_classifier.pt")[1]


def test_fashion_classifier_learns_the_classes(fashion_classifier):
    assert fashion_classifier[1] > 0.85  # one epoch; three reach more (docs/metrics.md)


def test_evaluate_judges_fashion_samples_with_the_fashion_classifier(fashion_classifier, tmp_path, data_root, monkeypatch):
    run = tmp_path / "run"
    train(make_config(run, "data=fashion_mnist", "epochs=1", *TINY_RUN))
    monkeypatch.setenv("VAE_LAB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(SystemExit) as exit:  # no classifier cached for fashion_mnist there
        evaluate_main([f"run={run}", "k=2", "n_images=50", "n_samples=100"])
    assert str(exit.value.code).startswith(f"error: no classifier for fashion_mnist at {tmp_path / 'empty'}")
    assert str(exit.value.code).endswith("train it once with python -m vae_lab.classifier data=fashion_mnist")
    monkeypatch.setenv("VAE_LAB_CACHE", str(fashion_classifier[0].parent))
    evaluate_main([f"run={run}", "k=2", "n_images=50", "n_samples=100"])
    found = json.loads((run / "metrics.json").read_text())
    assert found["classifier_test_accuracy"] == fashion_classifier[1] and found["fid"] > 0
