"""What a model learned, as pictures: image grids (3, H, W) in [0, 1], and for z_dim = 2 a
matplotlib scatter plot (matplotlib is imported only then: it takes a second to load).

Every function takes a ``vae_lab.models`` model and returns tensors on the CPU; none of them
changes the model or draws from the global random generator, so the same inputs always give
the same picture.
"""
import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.utils import make_grid, save_image

from vae_lab.inference import decode_images, dimension_information, kl_per_dimension, posterior
from vae_lab.samplers import FromPrior, build_sampler, fitted_sampler
from vae_lab.summary import Recording

log = logging.getLogger(__name__)
GRID_SIDE = 16  # tiles per side of the manifold and per row of a traversal
ROW_LENGTH = 10  # tiles per class in the rows of a conditional model's picture, and of an interpolation


def write_embedding(log_dir: str, vectors: torch.Tensor, labels: torch.Tensor, images: torch.Tensor,
                    step: int, tag: str) -> None:
    """The TensorBoard projector's files for (N, D) vectors with their labels and (N, C, H, W)
    images in [0, 1] (C = 1 or 3): the files and layout of ``SummaryWriter.add_embedding``, whose
    sprite costs a second per run (float64 RGB arithmetic on a 2800 x 2800 canvas); here it is
    8-bit (grey for grey images), and zlib's fastest level (1.9 MB instead of 1.7 for MNIST's test
    digits)."""
    from PIL import Image
    from tensorboard.plugins import projector

    subdir = f"{step:05d}/{tag}"
    folder = Path(log_dir) / subdir
    folder.mkdir(parents=True, exist_ok=True)
    np.savetxt(folder / "tensors.tsv", vectors.numpy(), fmt="%.6g", delimiter="\t")
    (folder / "metadata.tsv").write_text("".join(f"{label}\n" for label in labels.tolist()))
    n, colours, height, width = images.shape
    side = math.ceil(math.sqrt(n))  # the projector wants a square sprite, filled row by row
    tiles = torch.zeros(side * side, height, width, colours, dtype=torch.uint8)
    tiles[:n] = (images.permute(0, 2, 3, 1) * 255).round().to(torch.uint8)
    sprite = tiles.view(side, side, height, width, colours).permute(0, 2, 1, 3, 4).reshape(side * height, side * width, colours)
    picture = Image.fromarray(sprite[..., 0].numpy() if colours == 1 else sprite.numpy())
    picture.save(folder / "sprite.png", compress_level=1)  # 0.1 s, not 0.2
    config = projector.ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name = f"{tag}:{step:05d}"
    embedding.tensor_path, embedding.metadata_path = f"{subdir}/tensors.tsv", f"{subdir}/metadata.tsv"
    embedding.sprite.image_path = f"{subdir}/sprite.png"
    embedding.sprite.single_image_dim.extend([width, height])
    projector.visualize_embeddings(log_dir, config)


def grid(images: torch.Tensor, nrow: int) -> torch.Tensor:
    """(N, C, h, w) images in [0, 1] (C = 1 or 3) -> (3, H, W) grid, nrow tiles per row, 2 px padding."""
    return make_grid(images.detach().float().cpu(), nrow=nrow, padding=2, pad_value=1.0)


def prior_quantiles(model, n: int = GRID_SIDE) -> torch.Tensor:
    """(n, z_dim): per latent dimension, the points of the model's prior at equally spaced marginal
    probabilities 0.05 ... 0.95 (for N(0, I), the normal quantiles)."""
    return model.prior.quantiles(torch.linspace(0.05, 0.95, n, dtype=torch.float64)).detach().cpu()


def reconstructions(model, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Originals (first row) over their reconstructions from the posterior mean (second row)."""
    mu, _ = posterior(model, images, labels)
    return grid(torch.cat([images, decode_images(model, mu, labels)]), nrow=len(images))


def samples(model, z: torch.Tensor) -> torch.Tensor:
    """Grid of decoded latents z (N, z_dim), e.g. draws from the prior: the same z, the same tiles."""
    return grid(decode_images(model, z), nrow=int(len(z) ** 0.5))


def digit_rows(model, z: torch.Tensor) -> torch.Tensor:
    """Conditional models: one row per class (0 at the top). z (n, z_dim): column j decodes
    z[j] in every row; z (classes, n, z_dim): row c decodes z[c] (a sampler's draws for class c)."""
    classes = model.num_classes
    z = z.expand(classes, *z.shape) if z.dim() == 2 else z
    labels = torch.arange(classes).repeat_interleave(z.shape[1])
    return grid(decode_images(model, z.flatten(0, 1), labels), nrow=z.shape[1])


def manifold_latents(model, n: int = GRID_SIDE) -> torch.Tensor:
    """z_dim = 2: (n*n, 2) latents on the grid of the prior's quantiles; z1 grows rightwards, z2 upwards."""
    q = prior_quantiles(model, n)
    z2, z1 = torch.meshgrid(q[:, 1].flip(0), q[:, 0], indexing="ij")
    return torch.stack([z1.flatten(), z2.flatten()], dim=1)


def manifold(model, n: int = GRID_SIDE, label: int | None = None) -> torch.Tensor:
    """z_dim = 2: the n x n grid of decoded manifold_latents() (a conditional model needs a label)."""
    latents = manifold_latents(model, n)
    labels = None if label is None else torch.full((len(latents),), label)
    return grid(decode_images(model, latents, labels), nrow=n)


def traversal_dims(information: torch.Tensor, max_dims: int = ROW_LENGTH) -> torch.Tensor:
    """The latent dimensions a traversal shows, one per row: the ``max_dims`` most informative
    (largest ``information`` (z_dim,): its KL, or the variance of its posterior mean) first."""
    return information.argsort(descending=True)[:max_dims]


def traversal(model, information: torch.Tensor, max_dims: int = ROW_LENGTH, n: int = GRID_SIDE) -> torch.Tensor:
    """One row per latent dimension of ``traversal_dims``: that dimension sweeps the prior's
    quantiles while all others stay at the prior's median."""
    dims = traversal_dims(information, max_dims)
    q = prior_quantiles(model, n)
    median = model.prior.quantiles(torch.tensor([0.5], dtype=torch.float64)).detach().cpu()  # (1, z_dim)
    z = median.repeat(len(dims), n, 1)
    for row, d in enumerate(dims):
        z[row, :, d] = q[:, d]
    return grid(decode_images(model, z.flatten(0, 1)), nrow=n)


def interpolation(model, images: torch.Tensor, labels: torch.Tensor, steps: int = ROW_LENGTH,
                  label: int | None = None) -> torch.Tensor:
    """One row decoded from ``steps`` points on the line between the posterior means of two images
    (2, C, H, W); a conditional model draws ``label``, or the first image's label."""
    mu, _ = posterior(model, images, labels)
    weights = torch.linspace(0, 1, steps).unsqueeze(1)
    condition = torch.full((steps,), int(labels[0]) if label is None else label)
    return grid(decode_images(model, (1 - weights) * mu[0] + weights * mu[1], condition), nrow=steps)


def factor_traversal(model, information: torch.Tensor, factor_mi, factors: list[str]):
    """The ``traversal``, each row labelled with its latent dimension and the two factors that
    dimension carries most of, with their shares of the factor's entropy (``factor_mi`` (z_dim, K)
    and the K ``factors`` of ``vae_lab.disentanglement.measure``); a matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    dims = traversal_dims(information)
    picture = traversal(model, information)
    tile = model.image_shape[1] + 2  # each row: an image and the grid's padding of 2 pixels
    labels = []
    for d in dims.tolist():
        first, second = sorted(range(len(factors)), key=lambda k: -factor_mi[d][k])[:2]
        labels.append(f"z{d}: {factors[first]} {factor_mi[d][first]:.2f}, {factors[second]} {factor_mi[d][second]:.2f}"
                      if factor_mi[d][first] > 0 else f"z{d}: nothing")
    figure, axes = plt.subplots(figsize=(8, 0.45 * len(dims) + 0.9), dpi=100)
    axes.imshow(picture.permute(1, 2, 0).numpy())
    axes.set_yticks([2 + tile * row + tile / 2 - 1 for row in range(len(dims))], labels, fontsize=9)
    axes.set_xticks([])
    axes.set_title("each row sweeps one latent dimension; label: the factors it carries most of,\n"
                   "as shares of their entropy, I(z; factor) / H(factor) (docs/metrics.md)", fontsize=9)
    figure.tight_layout()
    return figure


def latent_scatter(mu: torch.Tensor, labels: torch.Tensor):
    """z_dim = 2: the posterior means (N, 2) of a set of images, coloured by class (one colour
    when the images have no labels); a matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")  # files and TensorBoard only, never a window
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 5), dpi=100)
    if (labels >= 0).all():
        classes = int(labels.max()) + 1
        few = classes <= len(matplotlib.colormaps["tab10"].colors)  # a colour each, or a continuous map
        points = axes.scatter(mu[:, 0], mu[:, 1], c=labels, cmap="tab10" if few else "viridis", s=2,
                              vmin=-0.5, vmax=classes - 0.5)
        figure.colorbar(points, ax=axes, ticks=range(classes), label="class")
    else:
        axes.scatter(mu[:, 0], mu[:, 1], s=2)
    axes.set(xlabel="$z_1$", ylabel="$z_2$", title="posterior means of the test images")
    figure.tight_layout()
    return figure


def kl_heatmap(history: list[torch.Tensor], cell: int = 6) -> torch.Tensor:
    """The mean KL of each latent dimension (rows, dimension 0 on top) at each logged validation
    (columns, oldest on the left) as grey levels, white the largest KL seen: units switching on
    show as rows turning bright, collapsed ones stay black. (3, H, W) in [0, 1]."""
    kl = torch.stack(history, dim=1)  # (z_dim, points)
    image = (kl / kl.max().clamp(min=1e-12)).clamp(0, 1)
    return F.interpolate(image[None, None], scale_factor=cell, mode="nearest")[0].expand(3, -1, -1)


class FigureLogger(Recording):
    """Shows a run's progress in TensorBoard and leaves the final pictures in its folder.

    Every ``every_n_epochs`` validation epochs (and at initialisation; 0 = only at the end) it logs
    ``images/reconstructions`` (16 fixed test digits over their reconstructions),
    ``images/samples`` (``n_samples`` fixed draws from the prior, from the run's seed) or, for a
    conditional model, ``images/digits`` (one row per digit), and by latent size
    ``images/manifold`` and ``figures/latent_scatter`` (z_dim = 2) or ``images/traversal`` (z_dim > 2),
    and ``images/kl_per_dim``, the KL of every latent dimension at every validation logged so far.
    At the end of training it writes the same pictures as PNGs into the run folder, the samples
    drawn by the run's sampler (``sampler=``; also in TensorBoard as ``images/samples_<sampler>``
    when it is not the plain prior), and the test set's posterior means as a projector embedding
    (z_dim > 2). A picture that fails to draw at the
    end is reported in the run's summary; it does not fail a run that trained.
    """

    def __init__(self, every_n_epochs: int = 1, n_samples: int = 64):
        if every_n_epochs < 0 or n_samples < 1:
            raise ValueError(f"every_n_epochs={every_n_epochs} must be >= 0 and n_samples={n_samples} >= 1")
        self.every_n_epochs, self.n_samples = every_n_epochs, n_samples
        self.written, self.error = [], None
        self.kl_history = []  # kl_per_dimension at each logged validation

    def setup(self, trainer, pl_module, stage):
        self.images, self.labels = trainer.datamodule.val_set.tensors
        self.seed = pl_module.seed

    def prior_draws(self, model) -> torch.Tensor:
        """The fixed draws of the samples picture: ``n_samples`` latents from the model's prior, the
        same draws every time (from the run's seed), so the tiles change only as the model does."""
        return model.prior.sample(self.n_samples, torch.Generator().manual_seed(self.seed)).detach().cpu()

    def posteriors(self, model, n_points: int | None = None):
        """(mu, logvar, labels) of q(z|x) for the first ``n_points`` test digits (all if None)."""
        images, labels = self.images[:n_points], self.labels[:n_points]
        return (*posterior(model, images, labels), labels)

    def figures(self, model, mu: torch.Tensor, logvar: torch.Tensor, labels: torch.Tensor,
                samples_z: torch.Tensor | None = None) -> dict:
        """Name -> (3, H, W) image grid (or the matplotlib scatter), for this model's kind and z_dim;
        the scatter and the traversal's KL ordering use the given posteriors (see ``posteriors``),
        the samples ``samples_z`` (default: the fixed prior draws; (classes, ROW_LENGTH, z_dim) for class rows)."""
        figures = {"reconstructions": reconstructions(model, self.images[:16], self.labels[:16])}
        if model.num_classes:
            figures["digits"] = digit_rows(model, self.prior_draws(model)[:ROW_LENGTH] if samples_z is None else samples_z)
        else:
            figures["samples"] = samples(model, self.prior_draws(model) if samples_z is None else samples_z)
        if model.z_dim == 2:
            figures["latent_scatter"] = latent_scatter(mu, labels)
            if not model.num_classes:
                figures["manifold"] = manifold(model)
        elif not model.num_classes:
            figures["traversal"] = traversal(model, dimension_information(model, mu, logvar))
        return figures

    def on_validation_epoch_end(self, trainer, pl_module):
        fitting = trainer.state.fn == "fit"
        if not trainer.is_global_zero or trainer.sanity_checking or trainer.logger is None:
            return
        if fitting and (not self.every_n_epochs or (trainer.current_epoch + 1) % self.every_n_epochs):
            return
        writer, model = trainer.logger.experiment, pl_module.model  # in eval mode during validation
        # 2,000 test digits place the scatter well enough and keep this cheap during training.
        mu, logvar, labels = self.posteriors(model, n_points=2000)
        figures = self.figures(model, mu, logvar, labels)
        if (kl := kl_per_dimension(model, mu, logvar)) is not None:
            self.kl_history.append(kl)
            figures["kl_per_dim"] = kl_heatmap(self.kl_history)
        for name, figure in figures.items():
            if isinstance(figure, torch.Tensor):
                writer.add_image(f"images/{name}", figure, trainer.global_step)
            else:  # the matplotlib scatter
                writer.add_figure(f"figures/{name}", figure, trainer.global_step)  # closes the figure

    def on_train_end(self, trainer, pl_module):
        # on the training device still (Lightning moves the model to the CPU before on_fit_end)
        if not trainer.is_global_zero:  # with DDP, the first process draws and writes
            return
        try:
            self.written = self.write_pictures(trainer, pl_module)
        except Exception as error:  # a picture that fails must not fail a run that trained
            self.error = f"{type(error).__name__}: {' '.join(str(error).split())}"
            log.error("the end-of-run pictures failed (%s); the run's checkpoints and losses are kept", self.error)

    def sampler_latents(self, trainer, pl_module):
        """The latents of the end-of-run samples, drawn by the run's sampler (config ``sampler``;
        fitted on the training images and saved beside last.ckpt if it is a fitted one), or None
        for the prior at temperature 1, the fixed draws of every epoch."""
        sampler = build_sampler(pl_module.config["sampler"])
        if sampler.tag() == FromPrior().tag():
            return None, sampler
        model, seed = pl_module.model, pl_module.seed
        sampler = fitted_sampler(sampler, model, *trainer.datamodule.fit_set.tensors,
                                 Path(trainer.checkpoint_callback.last_model_path), seed)
        if model.num_classes:
            labels = torch.arange(model.num_classes).repeat_interleave(ROW_LENGTH)
            return sampler.sample(len(labels), model, labels, seed).view(model.num_classes, ROW_LENGTH, -1), sampler
        return sampler.sample(self.n_samples, model, seed=seed), sampler

    def write_pictures(self, trainer, pl_module) -> list[str]:
        """The PNGs (and the projector embedding) of the trained model; returns the file names."""
        folder, model = Path(trainer.default_root_dir), pl_module.model.eval()
        mu, logvar, labels = self.posteriors(model)
        samples_z, sampler = self.sampler_latents(trainer, pl_module)
        figures = self.figures(model, mu, logvar, labels, samples_z)
        if samples_z is not None and trainer.logger is not None:  # the sampler's picture beside the prior's
            name = "digits" if model.num_classes else "samples"
            trainer.logger.experiment.add_image(f"images/{name}_{sampler.tag()}", figures[name], trainer.global_step)
        if self.kl_history:
            figures["kl_per_dim"] = kl_heatmap(self.kl_history)
        written = []
        for name, figure in figures.items():
            path = folder / f"{name}.png"
            if isinstance(figure, torch.Tensor):
                save_image(figure, path)
            else:  # the matplotlib scatter
                from matplotlib import pyplot

                figure.savefig(path)
                pyplot.close(figure)
            written.append(path.name)
        if model.z_dim > 2 and trainer.logger is not None:
            write_embedding(trainer.logger.experiment.get_logdir(), mu.cpu(), self.labels.cpu(), self.images.cpu(),
                            trainer.global_step, tag="test_posterior_means")
        return written

    def record(self) -> dict:
        return {"figures": {"written": self.written, "error": self.error}}
