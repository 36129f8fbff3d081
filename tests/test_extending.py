"""A user's own model, prior and likelihood (the file and configs of docs/extending.md, run as
written) and a user's own image sizes, each a real short run on real images."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback
from PIL import Image

from conftest import DATA_ROOT, REPO, TINY_RUN, make_config, scalars
from vae_lab.errors import VaeLabError
from vae_lab.runs import load_model
from vae_lab.data import load_torchvision
from vae_lab.evaluate import main as evaluate_main
from vae_lab.priors import VampPrior
from vae_lab.training import train


QUICK = ["epochs=1", "trainer.limit_train_batches=6", "trainer.limit_val_batches=2", "callbacks.figures.every_n_epochs=0"]


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", (REPO / "docs" / "extending.md").read_text(), re.S)


def fashion_images(n: int, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """n Fashion-MNIST training images padded to H x W and, for 3 channels, tinted (a colour per
    class), as uint8 N x H x W (grey) or N x H x W x 3 arrays, with their labels."""
    images, labels = load_torchvision("fashion_mnist", DATA_ROOT, train=True, download=False).tensors
    images, labels = images[:n, 0], labels[:n]
    colours, height, width = shape
    top, left = (height - 28) // 2, (width - 28) // 2
    canvas = torch.zeros(n, height, width)
    canvas[:, top:top + 28, left:left + 28] = images
    if colours == 3:
        tint = torch.rand(10, 3, generator=torch.Generator().manual_seed(0)) * 0.7 + 0.3
        canvas = canvas.unsqueeze(-1) * tint[labels].view(n, 1, 1, 3)
    return (canvas * 255).round().to(torch.uint8).numpy(), labels.numpy()


def run_module(module: str, *args: str, cwd, plugins: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "VAE_LAB_DATA": str(DATA_ROOT)}
    env.pop("PYTHONPATH", None)
    command = [sys.executable, "-m", module, *args, *(["plugins=[my_lab]"] if plugins else [])]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def plugin_folder(tmp_path_factory):
    """A folder outside the repository holding docs/extending.md's my_lab.py and my_conf/, and a
    3x32x32 colour arrays file."""
    folder = tmp_path_factory.mktemp("user")
    assert REPO not in folder.parents
    (folder / "my_lab.py").write_text(blocks("python")[0])
    for group, text in zip(("model/resnet", "prior/diagonal", "loss/laplace"), blocks("yaml")):
        (folder / "my_conf" / group).with_suffix(".yaml").parent.mkdir(parents=True, exist_ok=True)
        (folder / "my_conf" / f"{group}.yaml").write_text(text)
    images, labels = fashion_images(600, (3, 32, 32))
    np.savez(folder / "colour.npz", images=images, labels=labels)
    return folder


def own_components(folder) -> list[str]:
    return ["model=resnet", "prior=diagonal", "loss=laplace", "model.activation=gelu", "model.dropout=0.1",
            f"hydra.searchpath=[file://{folder / 'my_conf'}]", "data=images", f"data.path={folder / 'colour.npz'}"]


@pytest.fixture(scope="module")
def plugin_run(plugin_folder):
    """A run of the plugin's model, prior and likelihood, trained through plugins=[my_lab]."""
    first = run_module("vae_lab.train", *own_components(plugin_folder), *QUICK, "output_dir=outputs/first", cwd=plugin_folder)
    assert first.returncode == 0, first.stderr[-3000:]
    return plugin_folder / "outputs" / "first"


def test_a_plugin_model_prior_and_likelihood_train_evaluate_generate_resume_and_load(plugin_folder, plugin_run):
    folder, run, own = plugin_folder, plugin_run, own_components(plugin_folder)
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["name"] == "resnet" and config["prior"]["name"] == "diagonal"
    assert config["loss"]["likelihood"] == {"name": "laplace", "scale": 0.1} and config["plugins"] == ["my_lab"]
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert {"model.prior.mean", "model.prior.log_var"} <= set(state)  # the learned prior travels with the model
    assert not torch.equal(state["model.prior.mean"], torch.zeros_like(state["model.prior.mean"]))  # and trained

    evaluated = run_module("vae_lab.evaluate", f"run={run}", "k=5", "n_images=50", "n_samples=0", cwd=folder)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert np.isfinite(metrics["test_nll_laplace"]) and metrics["likelihood"] == "laplace"

    generated = run_module("vae_lab.generate", f"run={run}", "n=9", cwd=folder)
    assert generated.returncode == 0, generated.stderr[-3000:]
    assert np.load(run / "generated" / "samples.npy").shape == (9, 32, 32, 3)

    resumed = run_module("vae_lab.train", *own, *QUICK, "epochs=2", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
                         "output_dir=outputs/resumed", cwd=folder)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert torch.load(folder / "outputs" / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1

    # load_run in a process of its own, so that the plugin registers nowhere else (load_plugins
    # imports from the current folder, as python -m does)
    script = (f"import vae_lab; run = vae_lab.load_run({str(run)!r}, plugins=['my_lab']); picture = run.samples(n=4); "
              "print(type(run.model).__name__, type(run.model.prior).__name__, picture.size, picture.mode)")
    opened = subprocess.run([sys.executable, "-c", script], cwd=folder, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "VAE_LAB_DATA": str(DATA_ROOT)})
    assert opened.stdout.split() == ["ResNetVAE", "LearnedDiagonal", "(70,", "70)", "RGB"], opened.stderr[-3000:]


def test_a_plugin_checkpoint_read_without_the_plugin_is_one_line(plugin_folder, plugin_run):
    folder, checkpoint = plugin_folder, plugin_run / "checkpoints" / "last.ckpt"
    for module, args in (("vae_lab.evaluate", ["k=2", "n_images=10", "n_samples=0"]), ("vae_lab.generate", ["n=4"])):
        refused = run_module(module, f"run={checkpoint}", *args, cwd=folder, plugins=False)
        assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
        assert "model.name=resnet is not a registered model" in refused.stderr
        assert "plugins=[my_lab]" in refused.stderr and "Traceback" not in refused.stderr


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 64, 64)])
@pytest.mark.parametrize("model", ["dense", "conv"])
def test_arrays_of_other_sizes_and_colours_train_and_give_pictures_of_their_size(model, shape, tmp_path):
    images, labels = fashion_images(600, shape)
    np.savez(tmp_path / "images.npz", images=images, labels=labels)
    run = tmp_path / "run"  # in this process: the registries hold only vae_lab's own components here
    train(make_config(run, f"model={model}", "z_dim=2", "data=images", f"data.path={tmp_path / 'images.npz'}",
                      *QUICK, "callbacks.progress_bar=null"))
    colours, height, width = shape
    for name, tiles in {"samples.png": 8, "reconstructions.png": 16, "manifold.png": 16}.items():
        picture = Image.open(run / name)
        assert picture.size[0] == tiles * (width + 2) + 2, name
        pixels = np.asarray(picture.convert("RGB")).astype(int)
        coloured = np.abs(pixels[..., 0] - pixels[..., 1]).max() > 0
        assert coloured == (colours == 3), name  # colour pictures exactly when the data are
    evaluate_main([f"run={run}", "k=5", "n_images=50", "n_samples=0"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert np.isfinite(metrics["test_nll_bce"]) and metrics["n_images"] == 50
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["data"]["image_shape"] == list(shape) and config["data"]["num_classes"] == 10


def test_a_learned_mixture_prior_one_file_and_one_yaml_trains_evaluates_and_samples(tmp_path):
    run = tmp_path / "run"
    train(make_config(run, "prior=mog", "prior.components=5", "z_dim=2", "epochs=2", "trainer.limit_train_batches=30",
                      "trainer.limit_val_batches=2", "callbacks.progress_bar=null"))
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert state["model.prior.means"].shape == (5, 2) and state["model.prior.logits"].abs().max() > 0  # learned
    summary = json.loads((run / "summary.json").read_text())
    assert summary["final"]["val_kl"] > 0 and np.isfinite(summary["final"]["val_loss"])
    evaluate_main([f"run={run}", "k=20", "n_images=100", "n_samples=0"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["kl_per_dim"] is None and metrics["test_nll_bce"] <= -metrics["test_elbo"] + 1.0  # k=20 tightens
    assert (run / "manifold.png").is_file() and (run / "samples.png").is_file()


def test_the_vamp_prior_trains_its_pseudo_inputs_and_comes_back_from_the_checkpoint(tmp_path):
    class Watch(Callback):
        def on_train_start(self, trainer, pl_module):
            self.start = pl_module.model.prior.pseudo_logits.detach().clone()

        def on_train_end(self, trainer, pl_module):
            self.model = pl_module.model

    run, watch = tmp_path / "run", Watch()
    train(make_config(run, "prior=vamp", "prior.components=20", "z_dim=5", "epochs=1", *TINY_RUN), callbacks=[watch])
    model, config, _ = load_model(run)
    assert isinstance(model.prior, VampPrior) and model.prior.encode.__self__ is model  # its own encoder, not a copy
    trained = model.prior.pseudo_logits.detach()
    assert trained.shape == (20, 1, 28, 28) and (trained - watch.start).abs().mean() > 1e-4  # they learned
    z = torch.randn(3, 5)
    torch.testing.assert_close(model.prior.log_prob(z), watch.model.eval().cpu().prior.log_prob(z), rtol=0, atol=0)
    evaluate_main([f"run={run}", "k=10", "n_images=50", "n_samples=0"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["kl_per_dim"] is None and np.isfinite(metrics["test_nll_bce"])


def test_an_installed_plugin_registers_through_the_entry_point_group_without_naming_it(plugin_folder, tmp_path):
    site = tmp_path / "site"  # what pip leaves for a package declaring [project.entry-points."vae_lab.plugins"]
    info = site / "my_lab-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my_lab\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[vae_lab.plugins]\nmy_lab = my_lab\n")
    (site / "my_lab.py").write_text((plugin_folder / "my_lab.py").read_text())
    script = "from vae_lab.registry import MODELS, load_plugins; print(MODELS.names()); load_plugins(); print(MODELS.names())"
    found = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(site)})
    shipped, after = found.stdout.splitlines()
    assert "'dense'" in shipped and after == shipped[:-1] + ", 'resnet']", found.stderr[-2000:]


def test_a_plugin_schedule_and_callback_train_as_the_builtins_do(tmp_path, monkeypatch, data_root):
    """docs/extending.md's my_extras.py: a KL schedule and a callback registered as models are,
    chosen by name on the command line, trained with, and recorded."""
    (tmp_path / "my_extras.py").write_text(next(block for block in blocks("python") if block.startswith("# my_extras.py")))
    monkeypatch.syspath_prepend(str(tmp_path))
    run = tmp_path / "run"
    train(make_config(run, "plugins=[my_extras]", "kl_schedule.name=sigmoid", "+kl_schedule.midpoint_epochs=1",
                      "+callbacks.epoch_timer={}", "epochs=2", *TINY_RUN, "trainer.log_every_n_steps=1",
                      "trainer.steps_per_execution=1"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and len(summary["epoch_seconds"]) == 2
    assert summary["settings"]["kl_schedule"] == "sigmoid"
    beta = dict(scalars(run)["train/beta"])  # step -> β: 5 steps an epoch, half-way at epoch 1
    assert beta[0] < 0.1 and beta[5] == pytest.approx(0.5) and beta[9] > 0.8
    with pytest.raises(VaeLabError, match=r"^kl_schedule.steepness=-1 must be a number > 0"):
        train(make_config(tmp_path / "refused", "plugins=[my_extras]", "kl_schedule.name=sigmoid",
                          "+kl_schedule.steepness=-1", *TINY_RUN))
    assert not (tmp_path / "refused").exists()


def test_a_plugin_likelihood_of_two_outputs_per_pixel_trains_draws_and_evaluates(tmp_path, monkeypatch, data_root):
    """docs/extending.md's my_laplace.py: the decoder's last layer grows to its 2 outputs per pixel
    value, and the loss, the pictures, the IWAE bound and a checkpoint read back all use them."""
    (tmp_path / "my_laplace.py").write_text(next(block for block in blocks("python") if block.startswith("# my_laplace.py")))
    monkeypatch.syspath_prepend(str(tmp_path))
    run = tmp_path / "run"
    train(make_config(run, "plugins=[my_laplace]", "loss.likelihood={name: laplace_scaled, min_scale: 0.02}",
                      "epochs=1", *TINY_RUN, "callbacks.figures.every_n_epochs=0"))
    model, config, _ = load_model(run)
    assert model.output_shape == (2, 28, 28) and model.decoder[-1].out_features == 2 * 784
    assert config["loss"]["likelihood"] == {"name": "laplace_scaled", "min_scale": 0.02}
    drawn = np.asarray(Image.open(run / "samples_drawn.png").convert("L")).astype(int)
    assert drawn.shape == np.asarray(Image.open(run / "samples.png").convert("L")).shape
    assert np.abs(drawn - np.asarray(Image.open(run / "samples.png").convert("L"))).max() > 0  # draws, not means
    evaluate_main([f"run={run}", "k=5", "n_images=50", "n_samples=0", "disentanglement=false"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert np.isfinite(metrics["test_nll_laplace_scaled"]) and "test_bits_per_dim" not in metrics  # a density
    with pytest.raises(VaeLabError, match=r"^loss.likelihood.min_scale=-1 must be a number > 0"):
        train(make_config(tmp_path / "refused", "plugins=[my_laplace]", "loss.likelihood={name: laplace_scaled, min_scale: -1}",
                          *TINY_RUN))
