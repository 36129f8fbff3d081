"""What a model learned, as pictures: image grids (3, H, W) in [0, 1] and matplotlib figures.

Every function takes a ``vae_lab.models`` model and returns tensors on the CPU; none of them
changes the model or draws from the global random generator, so the same inputs always give
the same picture.
"""
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files and TensorBoard only, never a window
import matplotlib.pyplot as plt
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.core.saving import save_hparams_to_yaml
from scipy.stats import norm
from torchvision.utils import make_grid, save_image

from vae_lab.losses import kl_divergence

GRID_SIDE = 16  # tiles per side of the manifold and per row of a traversal


def grid(images: torch.Tensor, nrow: int) -> torch.Tensor:
    """(N, 1, 28, 28) images in [0, 1] -> (3, H, W) grid, nrow tiles per row, 2 px padding."""
    return make_grid(images.detach().float().cpu(), nrow=nrow, padding=2, pad_value=1.0)


def normal_quantiles(n: int = GRID_SIDE) -> torch.Tensor:
    """n points of N(0, 1) at equally spaced probabilities 0.05 ... 0.95."""
    return torch.from_numpy(norm.ppf(torch.linspace(0.05, 0.95, n).numpy())).float()


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def decode_images(model, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Pixel probabilities (N, 1, 28, 28) of the latents z (N, z_dim), sigmoid applied once."""
    device = _device(model)
    return torch.sigmoid(model.decode(z.to(device), None if y is None else y.to(device))).cpu()


@torch.no_grad()
def posterior_means(model, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000):
    """Means and log-variances of q(z|x) for a whole image set: two (N, z_dim) tensors."""
    device, conditional = _device(model), model.num_classes > 0
    mus, logvars = [], []
    for x, y in zip(images.split(batch_size), labels.split(batch_size)):
        mu, logvar = model.encode(x.to(device), y.to(device) if conditional else None)
        mus.append(mu.cpu())
        logvars.append(logvar.cpu())
    return torch.cat(mus), torch.cat(logvars)


@torch.no_grad()
def reconstructions(model, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Originals (first row) over their reconstructions from the posterior mean (second row)."""
    mu, _ = posterior_means(model, images, labels)
    decoded = decode_images(model, mu, labels if model.num_classes else None)
    return grid(torch.cat([images, decoded]), nrow=len(images))


def samples(model, z: torch.Tensor) -> torch.Tensor:
    """Grid of decoded z ~ N(0, I): pass the same z (N, z_dim) to see the same tiles."""
    return grid(decode_images(model, z), nrow=int(len(z) ** 0.5))


def digit_rows(model, z: torch.Tensor) -> torch.Tensor:
    """Conditional models: one row per class (0-9 top to bottom); column j decodes z[j] each time."""
    classes = model.num_classes
    labels = torch.arange(classes).repeat_interleave(len(z))
    return grid(decode_images(model, z.repeat(classes, 1), labels), nrow=len(z))


def manifold_latents(n: int = GRID_SIDE) -> torch.Tensor:
    """(n*n, 2) latents on the grid of standard-normal quantiles; z1 grows rightwards, z2 upwards."""
    q = normal_quantiles(n)
    z2, z1 = torch.meshgrid(q.flip(0), q, indexing="ij")
    return torch.stack([z1.flatten(), z2.flatten()], dim=1)


def manifold(model, n: int = GRID_SIDE) -> torch.Tensor:
    """z_dim = 2: the n x n grid of decoded manifold_latents()."""
    return grid(decode_images(model, manifold_latents(n)), nrow=n)


def kl_per_dimension(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Mean KL(q(z_d|x) ‖ N(0, 1)) over a set of images, per latent dimension: (z_dim,) nats."""
    return kl_divergence(mu, logvar).mean(0)


def traversal(model, kl_per_dim: torch.Tensor, max_dims: int = 10, n: int = GRID_SIDE) -> torch.Tensor:
    """One row per latent dimension, most informative (largest KL) first: that dimension sweeps the
    normal quantiles while all others stay 0."""
    dims = kl_per_dim.argsort(descending=True)[:max_dims]
    z = torch.zeros(len(dims), n, model.z_dim)
    for row, d in enumerate(dims):
        z[row, :, d] = normal_quantiles(n)
    return grid(decode_images(model, z.flatten(0, 1)), nrow=n)


def latent_scatter(mu: torch.Tensor, labels: torch.Tensor) -> plt.Figure:
    """z_dim = 2: the posterior means (N, 2) of a set of images, coloured by digit."""
    figure, axes = plt.subplots(figsize=(6, 5), dpi=100)
    points = axes.scatter(mu[:, 0], mu[:, 1], c=labels, cmap="tab10", s=2, vmin=-0.5, vmax=9.5)
    figure.colorbar(points, ax=axes, ticks=range(10), label="digit")
    axes.set(xlabel="$z_1$", ylabel="$z_2$", title="posterior means of the test digits")
    figure.tight_layout()
    return figure


class FigureLogger(Callback):
    """Shows a run's progress in TensorBoard and leaves the final pictures in its folder.

    Every ``every_n_epochs`` validation epochs (and at initialisation; 0 = only at the end) it logs
    ``images/reconstructions`` (16 fixed test digits over their reconstructions),
    ``images/samples`` (``n_samples`` fixed z ~ N(0, I), drawn once from the run's seed) or, for a
    conditional model, ``images/digits`` (one row per digit), and by latent size
    ``images/manifold`` and ``figures/latent_scatter`` (z_dim = 2) or ``images/traversal`` (z_dim > 2).
    At the end of training it writes the same pictures as PNGs into ``output_dir``, the test set's
    posterior means as a projector embedding (z_dim > 2) and the hyperparameters with the final
    metrics and those of ``metrics.json`` when the run has one (the HPARAMS tab).
    """

    def __init__(self, output_dir: str, every_n_epochs: int = 1, n_samples: int = 64):
        self.output_dir, self.every_n_epochs, self.n_samples = Path(output_dir), every_n_epochs, n_samples

    def setup(self, trainer, pl_module, stage):
        self.images, self.labels = trainer.datamodule.val_set.tensors
        generator = torch.Generator().manual_seed(pl_module.seed)
        self.z = torch.randn(self.n_samples, pl_module.model.z_dim, generator=generator)

    def posteriors(self, model, n_points: int | None = None):
        """(mu, logvar, labels) of q(z|x) for the first ``n_points`` test digits (all if None)."""
        images, labels = self.images[:n_points], self.labels[:n_points]
        return (*posterior_means(model, images, labels), labels)

    def figures(self, model, mu: torch.Tensor, logvar: torch.Tensor, labels: torch.Tensor) -> dict:
        """Name -> (3, H, W) image grid or matplotlib figure, for this model's kind and z_dim;
        the scatter and the traversal's KL ordering use the given posteriors (see ``posteriors``)."""
        figures = {"reconstructions": reconstructions(model, self.images[:16], self.labels[:16])}
        if model.num_classes:
            figures["digits"] = digit_rows(model, self.z[:10])
        else:
            figures["samples"] = samples(model, self.z)
        if model.z_dim == 2:
            figures["latent_scatter"] = latent_scatter(mu, labels)
            if not model.num_classes:
                figures["manifold"] = manifold(model)
        elif not model.num_classes:
            figures["traversal"] = traversal(model, kl_per_dimension(mu, logvar))
        return figures

    def on_validation_epoch_end(self, trainer, pl_module):
        fitting = trainer.state.fn == "fit"
        if not trainer.is_global_zero or trainer.sanity_checking or (fitting and not self.every_n_epochs):
            return
        if fitting and (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        writer, model = trainer.logger.experiment, pl_module.model  # in eval mode during validation
        # 2,000 test digits place the scatter well enough and keep this cheap during training.
        for name, figure in self.figures(model, *self.posteriors(model, n_points=2000)).items():
            if isinstance(figure, plt.Figure):
                writer.add_figure(f"figures/{name}", figure, trainer.global_step)  # closes the figure
            else:
                writer.add_image(f"images/{name}", figure, trainer.global_step)

    def on_fit_end(self, trainer, pl_module):
        if not trainer.is_global_zero:  # with DDP, the first process draws and writes
            return
        model = pl_module.model.eval()  # training is over
        mu, logvar, labels = self.posteriors(model)
        for name, figure in self.figures(model, mu, logvar, labels).items():
            path = self.output_dir / f"{name}.png"
            if isinstance(figure, plt.Figure):
                figure.savefig(path)
                plt.close(figure)
            else:
                save_image(figure, path)
        if model.z_dim > 2:
            trainer.logger.experiment.add_embedding(
                mu, metadata=self.labels.tolist(), label_img=self.images,
                global_step=trainer.global_step, tag="test_posterior_means",
            )
        trainer.logger.log_hyperparams(run_hyperparameters(pl_module.config),
                                       {**final_metrics(trainer), **evaluation_metrics(self.output_dir)})
        # Lightning wrote hparams.yaml at the start, from the (empty) module hparams; fill it in.
        save_hparams_to_yaml(Path(trainer.logger.log_dir) / "hparams.yaml", trainer.logger.hparams)


def run_hyperparameters(config: dict) -> dict:
    """The settings that tell runs apart, flat, for TensorBoard's HPARAMS table."""
    return {
        "model": config["model"]["_target_"].split(".")[-2],  # vae_lab.models.<file>.<Class>
        "loss": config["loss"]["likelihood"],
        **{key: config[key] for key in ("beta", "z_dim", "epochs", "batch_size", "lr", "seed")},
    }


def final_metrics(trainer) -> dict:
    """The last epoch's losses under hparams/ tags (so they don't add points to the curves)."""
    metrics = trainer.callback_metrics
    names = {"val/loss": "val_loss", "val/recon": "val_recon", "val/kl": "val_kl", "train/loss_epoch": "train_loss"}
    return {f"hparams/{short}": metrics[tag].item() for tag, short in names.items() if tag in metrics}


def evaluation_metrics(output_dir: Path) -> dict:
    """The numbers in ``<output_dir>/metrics.json`` (``vae_lab.evaluate.EvaluateAtEnd``) under hparams/ tags."""
    path = Path(output_dir) / "metrics.json"
    found = json.loads(path.read_text()) if path.is_file() else {}
    return {f"hparams/{key}": value for key, value in found.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)}
