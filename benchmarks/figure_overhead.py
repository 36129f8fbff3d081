"""What the per-epoch pictures cost, next to what an epoch of training costs, measured side by side.

    VAE_LAB_DATA=../shared/data python benchmarks/figure_overhead.py

For each model it times FigureLogger's pictures of one validation epoch (drawn and written to a
TensorBoard file, as during training) and 50 plain training steps (batch 128, Adam), scaled to one
epoch of 469 steps. The plain loop has no framework around it, so the share it prints is an upper
bound on what the pictures add to a real epoch. Medians of 3.
"""
import statistics
import tempfile
import time
from types import SimpleNamespace

import matplotlib.pyplot as plt
import torch
from torch.utils.tensorboard import SummaryWriter

from vae_lab.cli import exit_on_error
from vae_lab.data import ImageDataModule, data_root
from vae_lab.training.callbacks import FigureLogger
from vae_lab.training.losses import VAELoss
from vae_lab.training.schedules import Constant
from vae_lab.models import build_model

STEPS, STEPS_PER_EPOCH = 50, 469


def median_seconds(work, repeats=3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    datamodule = ImageDataModule(root=data_root())
    datamodule.setup()
    images, labels = datamodule.train_set.tensors
    writer = SummaryWriter(tempfile.mkdtemp())
    for name, z_dim in (("dense", 20), ("conv", 20), ("conv", 2), ("cvae", 20)):
        model = build_model({"model": {"name": name, "z_dim": z_dim}})
        figures = FigureLogger()
        figures.setup(SimpleNamespace(datamodule=datamodule), SimpleNamespace(seed=0, model=model), "fit")

        def log_pictures():
            for name, picture in figures.figures(model, *figures.posteriors(model, n_points=2000)).items():
                if isinstance(picture, plt.Figure):
                    writer.add_figure(name, picture)
                else:
                    writer.add_image(name, picture)

        optimizer, loss = torch.optim.Adam(model.parameters(), lr=1e-3), VAELoss()

        def train_steps():
            for step in range(STEPS):
                x, y = images[step * 128:(step + 1) * 128], labels[step * 128:(step + 1) * 128]
                mu, logvar = model.encode(x, y)
                losses = loss(model, x, y, mu, logvar, Constant(1.0))
                optimizer.zero_grad()
                losses["loss"].backward()
                optimizer.step()

        pictures, epoch = median_seconds(log_pictures), median_seconds(train_steps) * STEPS_PER_EPOCH / STEPS
        print(f"{type(model).__name__:8s} z_dim={model.z_dim:2d}: pictures {pictures:5.2f} s per validation epoch, "
              f"plain training epoch {epoch:5.1f} s -> pictures add at most {pictures / epoch:.1%}")


if __name__ == "__main__":
    exit_on_error(main)  # e.g. no MNIST under VAE_LAB_DATA: one line, no traceback
