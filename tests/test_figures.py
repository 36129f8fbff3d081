"""What a run shows: TensorBoard images, PNGs in the run folder, the HPARAMS table, and `generate`."""
import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import TensorDataset

from conftest import REPO, make_model
from vae_lab.evaluation import figures
from vae_lab.runs import load_model
from vae_lab.generate import main as generate_main
from vae_lab.evaluation.inference import decode_images
from vae_lab.training.callbacks import FigureLogger

TILE = 28 + 2  # figures.grid pads every tile with 2 px


def grid_size(rows, columns):
    """(width, height) in pixels of a figures.grid of rows x columns tiles."""
    return (columns * TILE + 2, rows * TILE + 2)


def image_tags(run_dir):
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    return {tag: [e.step for e in events.Images(tag)] for tag in events.Tags()["images"]}, events


EXPECTED = {  # run -> image tags logged at initialisation and after each of the 2 epochs
    "dense-bce": {"images/reconstructions", "images/samples", "images/traversal", "images/kl_per_dim"},
    "conv-mse-z2": {"images/reconstructions", "images/samples", "images/manifold", "figures/latent_scatter",
                    "images/kl_per_dim"},
    "cvae-bce": {"images/reconstructions", "images/digits", "images/kl_per_dim"},
}


@pytest.mark.parametrize("name", EXPECTED)
def test_event_file_holds_the_image_tags_every_epoch(name, short_runs):
    tags, _ = image_tags(short_runs(name))
    assert set(tags) == EXPECTED[name]
    for steps in tags.values():
        assert steps == [0, 100, 200]


@pytest.mark.parametrize("name", EXPECTED)
def test_run_folder_has_pngs_of_the_expected_size(name, short_runs):
    run_dir = short_runs(name)
    expected = {tag.split("/")[1] for tag in EXPECTED[name]}
    assert {p.stem for p in run_dir.glob("*.png")} == expected
    sizes = {"reconstructions": grid_size(2, 16), "samples": grid_size(8, 8), "digits": grid_size(10, 10),
             "manifold": grid_size(16, 16), "traversal": grid_size(10, 16)}
    for stem, size in sizes.items():
        if stem in expected:
            assert Image.open(run_dir / f"{stem}.png").size == size, stem


def test_hparams_and_projector_embedding(short_runs):
    run_dir = short_runs("dense-bce")
    _, events = image_tags(run_dir)
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")
    assert set(events.Tags()["scalars"]) >= {"hparams/val_loss", "hparams/train_loss"}
    hparams = yaml.safe_load((run_dir / "hparams.yaml").read_text())
    assert hparams == {"model": "dense", "data": "mnist", "loss": "bce", "beta": 1.0, "z_dim": 20, "epochs": 2,
                       "batch_size": 128, "lr": 1e-3, "seed": 0, "data.binarize": "none", "model.hidden": "[256, 128]", "prior": "standard",
                       "loss.iwae_k": 1, "loss.free_bits": 0.0, "loss.estimator": "standard",
                       "kl_schedule": "constant", "lr_schedule": "constant", "optimizer": "adam", "optimizer.fused": True,
                       "sampler": "prior", "sampler.temperature": 1.0}
    embedding = next(run_dir.glob("*/test_posterior_means"))
    means = np.loadtxt(embedding / "tensors.tsv")
    assert means.shape == (10_000, 20)
    assert len((embedding / "metadata.tsv").read_text().split()) == 10_000
    assert Image.open(embedding / "sprite.png").size == (2800, 2800)  # 100 x 100 digit thumbnails
    config = (run_dir / "projector_config.pbtxt").read_text()  # what TensorBoard's projector reads first
    paths = re.findall(r'(?:tensor_path|metadata_path|image_path): "(.+)"', config)
    assert sorted(paths) == sorted(str((embedding / name).relative_to(run_dir))
                                   for name in ("tensors.tsv", "metadata.tsv", "sprite.png"))
    assert re.findall(r"single_image_dim: (\d+)", config) == ["28", "28"]


def test_manifold_tiles_decode_the_normal_quantile_grid():
    model = make_model(z_dim=2).eval()
    latents = figures.manifold_latents(model)
    q = figures.prior_quantiles(model)[:, 0]
    assert latents.shape == (256, 2)
    torch.testing.assert_close(latents[0], torch.stack([q[0], q[-1]]))   # top left: z1 low, z2 high
    torch.testing.assert_close(latents[-1], torch.stack([q[-1], q[0]]))  # bottom right
    torch.testing.assert_close(q[[0, -1]], torch.tensor([-1.6449, 1.6449]), atol=1e-4, rtol=0)
    picture = figures.manifold(model)
    tile = picture[0, 2 + 5 * TILE: 2 + 5 * TILE + 28, 2 + 7 * TILE: 2 + 7 * TILE + 28]  # row 5, column 7
    torch.testing.assert_close(tile, decode_images(model, latents[5 * 16 + 7: 5 * 16 + 8])[0, 0])


def test_samples_use_the_same_z_for_the_same_seed():
    images, labels = torch.rand(20, 1, 28, 28), torch.arange(20) % 10
    trainer = SimpleNamespace(datamodule=SimpleNamespace(val_set=TensorDataset(images, labels)))

    logger_model = make_model(z_dim=4)

    def fixed_z(seed):
        logger = FigureLogger()
        logger.setup(trainer, SimpleNamespace(seed=seed, model=logger_model), "fit")
        return logger.prior_draws(logger_model)

    assert torch.equal(fixed_z(3), fixed_z(3)) and not torch.equal(fixed_z(3), fixed_z(4))


def test_traversal_puts_the_highest_kl_dimension_first():
    model = make_model(z_dim=4).eval()
    picture = figures.traversal(model, information=torch.tensor([0.1, 3.0, 0.0, 1.0]), max_dims=2, n=3)
    z = torch.zeros(3, 4)
    z[:, 1] = figures.prior_quantiles(model, 3)[:, 1]
    first_row = figures.grid(decode_images(model, z), nrow=3)[:, :TILE + 2]
    torch.testing.assert_close(picture[:, :TILE + 2], first_row)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tensorboard_serves_the_run(short_runs):
    logdir = short_runs("conv-mse-z2")
    port = free_port()
    server = subprocess.Popen([Path(sys.executable).parent / "tensorboard", "--logdir", str(logdir),
                               "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def get(path):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
                return json.loads(response.read())

        deadline = time.time() + 300  # a bound so the test cannot hang, not a speed requirement
        while True:
            try:
                scalar_tags = get("/data/plugin/scalars/tags")
                if scalar_tags:
                    break
            except OSError:
                pass
            assert time.time() < deadline, "tensorboard did not serve the run within 300 s"
            time.sleep(1)
        (run, tags), = scalar_tags.items()
        assert {"train/loss", "val/loss", "val/kl"} <= set(tags)
        assert EXPECTED["conv-mse-z2"] <= set(get("/data/plugin/images/tags")[run])
    finally:
        server.terminate()
        server.wait(timeout=30)


def generate(*args):
    """Runs `python -m vae_lab.generate args` in-process; returns the error line or None."""
    try:
        generate_main(list(args))
    except SystemExit as exit:
        return str(exit.code)
    return None


def test_generate_writes_samples_manifold_and_interpolation(short_runs, tmp_path):
    assert generate(f"run={short_runs('conv-mse-z2')}", "n=25", f"out={tmp_path}") is None
    samples = np.load(tmp_path / "samples.npy")
    assert samples.shape == (25, 28, 28) and samples.dtype == np.float32
    assert 0 <= samples.min() and samples.max() <= 1
    assert Image.open(tmp_path / "samples.png").size == grid_size(5, 5)
    assert Image.open(tmp_path / "manifold.png").size == grid_size(16, 16)
    assert Image.open(tmp_path / "interpolation.png").size == grid_size(1, 10)


def test_generate_cvae_draws_the_requested_digit(short_runs, tmp_path):
    run = short_runs("cvae-bce")
    assert generate(f"run={run}", "n=12", "label=7", "seed=5", f"out={tmp_path}") is None
    model, _, _ = load_model(run)
    z = torch.randn(12, model.z_dim, generator=torch.Generator().manual_seed(5))
    expected = torch.sigmoid(model.decode(z, torch.full((12,), 7))).squeeze(1).detach().numpy()
    np.testing.assert_allclose(np.load(tmp_path / "samples.npy"), expected, rtol=0, atol=1e-6)
    assert (np.load(tmp_path / "labels.npy") == 7).all()
    assert Image.open(tmp_path / "digits.png").size == grid_size(10, 10)


def test_generate_errors_are_one_line(short_runs, tmp_path):
    dense, cvae = short_runs("dense-bce"), short_runs("cvae-bce")
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes((dense / "checkpoints" / "last.ckpt").read_bytes()[:5000])
    cases = {
        f"run={tmp_path / 'missing'}": "no checkpoint at",
        f"run={corrupt}": "not a readable checkpoint (truncated or corrupt)",
        f"run={cvae} label=10": "label=10 must be a class 0-9",
        f"run={dense} label=3": "label=3: this model is not conditional",
        f"run={dense} colour=red": "Key 'colour' is not in struct",
        f"run={dense} between=[0,10000]": "must be two test-set indices",
    }
    for args, message in cases.items():
        error = generate(*args.split(), f"out={tmp_path / 'out'}")
        assert error is not None and error.startswith("error: ") and message in error, (args, error)
        assert "\n" not in error
    assert not (tmp_path / "out").exists()


def test_generate_command_line_exits_non_zero_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "vae_lab.generate", f"run={tmp_path}"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"error: no checkpoint at {tmp_path}/checkpoints/last.ckpt: " \
                                    "give a run folder (outputs/...) or a .ckpt file"
