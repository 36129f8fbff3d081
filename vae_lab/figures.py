"""What a model learned, as pictures: image grids (3, H, W) in [0, 1] and matplotlib figures.

Every function takes a ``vae_lab.models`` model and returns tensors on the CPU; none of them
changes the model or draws from the global random generator, so the same inputs always give
the same picture.
"""
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files and TensorBoard only, never a window
import matplotlib.pyplot as plt
import torch
from scipy.stats import norm
from torchvision.utils import make_grid, save_image

from vae_lab.inference import decode_images, kl_per_dimension, posterior
from vae_lab.summary import Recording

log = logging.getLogger(__name__)
GRID_SIDE = 16  # tiles per side of the manifold and per row of a traversal


def grid(images: torch.Tensor, nrow: int) -> torch.Tensor:
    """(N, 1, 28, 28) images in [0, 1] -> (3, H, W) grid, nrow tiles per row, 2 px padding."""
    return make_grid(images.detach().float().cpu(), nrow=nrow, padding=2, pad_value=1.0)


def normal_quantiles(n: int = GRID_SIDE) -> torch.Tensor:
    """n points of N(0, 1) at equally spaced probabilities 0.05 ... 0.95."""
    return torch.from_numpy(norm.ppf(torch.linspace(0.05, 0.95, n).numpy())).float()


def reconstructions(model, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Originals (first row) over their reconstructions from the posterior mean (second row)."""
    mu, _ = posterior(model, images, labels)
    return grid(torch.cat([images, decode_images(model, mu, labels)]), nrow=len(images))


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


def manifold(model, n: int = GRID_SIDE, label: int | None = None) -> torch.Tensor:
    """z_dim = 2: the n x n grid of decoded manifold_latents() (a conditional model needs a label)."""
    latents = manifold_latents(n)
    labels = None if label is None else torch.full((len(latents),), label)
    return grid(decode_images(model, latents, labels), nrow=n)


def traversal(model, kl_per_dim: torch.Tensor, max_dims: int = 10, n: int = GRID_SIDE) -> torch.Tensor:
    """One row per latent dimension, most informative (largest KL) first: that dimension sweeps the
    normal quantiles while all others stay 0."""
    dims = kl_per_dim.argsort(descending=True)[:max_dims]
    z = torch.zeros(len(dims), n, model.z_dim)
    for row, d in enumerate(dims):
        z[row, :, d] = normal_quantiles(n)
    return grid(decode_images(model, z.flatten(0, 1)), nrow=n)


def interpolation(model, images: torch.Tensor, labels: torch.Tensor, steps: int = 10,
                  label: int | None = None) -> torch.Tensor:
    """One row decoded from ``steps`` points on the line between the posterior means of two images
    (2, 1, 28, 28); a conditional model draws ``label``, or the first image's label."""
    mu, _ = posterior(model, images, labels)
    weights = torch.linspace(0, 1, steps).unsqueeze(1)
    condition = torch.full((steps,), int(labels[0]) if label is None else label)
    return grid(decode_images(model, (1 - weights) * mu[0] + weights * mu[1], condition), nrow=steps)


def latent_scatter(mu: torch.Tensor, labels: torch.Tensor) -> plt.Figure:
    """z_dim = 2: the posterior means (N, 2) of a set of images, coloured by digit."""
    figure, axes = plt.subplots(figsize=(6, 5), dpi=100)
    points = axes.scatter(mu[:, 0], mu[:, 1], c=labels, cmap="tab10", s=2, vmin=-0.5, vmax=9.5)
    figure.colorbar(points, ax=axes, ticks=range(10), label="digit")
    axes.set(xlabel="$z_1$", ylabel="$z_2$", title="posterior means of the test digits")
    figure.tight_layout()
    return figure


class FigureLogger(Recording):
    """Shows a run's progress in TensorBoard and leaves the final pictures in its folder.

    Every ``every_n_epochs`` validation epochs (and at initialisation; 0 = only at the end) it logs
    ``images/reconstructions`` (16 fixed test digits over their reconstructions),
    ``images/samples`` (``n_samples`` fixed z ~ N(0, I), drawn once from the run's seed) or, for a
    conditional model, ``images/digits`` (one row per digit), and by latent size
    ``images/manifold`` and ``figures/latent_scatter`` (z_dim = 2) or ``images/traversal`` (z_dim > 2).
    At the end of training it writes the same pictures as PNGs into the run folder and the test
    set's posterior means as a projector embedding (z_dim > 2). A picture that fails to draw at the
    end is reported in the run's summary; it does not fail a run that trained.
    """

    def __init__(self, every_n_epochs: int = 1, n_samples: int = 64):
        if every_n_epochs < 0 or n_samples < 1:
            raise ValueError(f"every_n_epochs={every_n_epochs} must be >= 0 and n_samples={n_samples} >= 1")
        self.every_n_epochs, self.n_samples = every_n_epochs, n_samples
        self.written, self.error = [], None

    def setup(self, trainer, pl_module, stage):
        self.images, self.labels = trainer.datamodule.val_set.tensors
        generator = torch.Generator().manual_seed(pl_module.seed)
        self.z = torch.randn(self.n_samples, pl_module.model.z_dim, generator=generator)

    def posteriors(self, model, n_points: int | None = None):
        """(mu, logvar, labels) of q(z|x) for the first ``n_points`` test digits (all if None)."""
        images, labels = self.images[:n_points], self.labels[:n_points]
        return (*posterior(model, images, labels), labels)

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
        if not trainer.is_global_zero or trainer.sanity_checking or trainer.logger is None:
            return
        if fitting and (not self.every_n_epochs or (trainer.current_epoch + 1) % self.every_n_epochs):
            return
        writer, model = trainer.logger.experiment, pl_module.model  # in eval mode during validation
        # 2,000 test digits place the scatter well enough and keep this cheap during training.
        for name, figure in self.figures(model, *self.posteriors(model, n_points=2000)).items():
            if isinstance(figure, plt.Figure):
                writer.add_figure(f"figures/{name}", figure, trainer.global_step)  # closes the figure
            else:
                writer.add_image(f"images/{name}", figure, trainer.global_step)

    def on_train_end(self, trainer, pl_module):
        # on the training device still (Lightning moves the model to the CPU before on_fit_end)
        if not trainer.is_global_zero:  # with DDP, the first process draws and writes
            return
        try:
            self.written = self.write_pictures(trainer, pl_module.model.eval())
        except Exception as error:  # a picture that fails must not fail a run that trained
            self.error = f"{type(error).__name__}: {' '.join(str(error).split())}"
            log.error("the end-of-run pictures failed (%s); the run's checkpoints and losses are kept", self.error)

    def write_pictures(self, trainer, model) -> list[str]:
        """The PNGs (and the projector embedding) of the trained model; returns the file names."""
        folder = Path(trainer.default_root_dir)
        mu, logvar, labels = self.posteriors(model)
        written = []
        for name, figure in self.figures(model, mu, logvar, labels).items():
            path = folder / f"{name}.png"
            if isinstance(figure, plt.Figure):
                figure.savefig(path)
                plt.close(figure)
            else:
                save_image(figure, path)
            written.append(path.name)
        if model.z_dim > 2 and trainer.logger is not None:
            trainer.logger.experiment.add_embedding(
                mu, metadata=self.labels.tolist(), label_img=self.images,
                global_step=trainer.global_step, tag="test_posterior_means",
            )
        return written

    def record(self) -> dict:
        return {"figures": {"written": self.written, "error": self.error}}
