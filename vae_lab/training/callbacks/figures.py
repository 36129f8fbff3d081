"""``callbacks.figures``: a run's pictures in TensorBoard while it trains, and as PNGs in its
folder at the end (the drawings themselves: ``vae_lab.evaluation.figures``)."""
import logging
import math
from pathlib import Path

import numpy as np
import torch
from torchvision.utils import save_image

from vae_lab.arguments import NonNegativeInt, PositiveInt
from vae_lab.evaluation.figures import (ROW_LENGTH, digit_rows, draws_differ, kl_heatmap, latent_scatter, manifold,
                                        reconstructions, samples, traversal)
from vae_lab.evaluation.inference import dimension_information, kl_per_dimension, posterior
from vae_lab.evaluation.samplers import FromPrior, fitted_sampler
from vae_lab.registry import CALLBACKS
from vae_lab.training.callbacks.base import Recording

log = logging.getLogger(__name__)


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



@CALLBACKS.register("figures")
class FigureLogger(Recording):
    """Shows a run's progress in TensorBoard and leaves the final pictures in its folder.

    Every ``every_n_epochs`` validation epochs (and at initialisation; 0 = only at the end) it logs
    ``images/reconstructions`` (16 fixed test digits over their reconstructions),
    ``images/samples`` (``n_samples`` fixed draws from the prior, from the run's seed) or, for a
    conditional model, ``images/digits`` (one row per digit), for a likelihood that draws images of
    its own (``loss=gaussian``, ``logistic``, ``categorical``) also ``images/samples_drawn`` (or
    ``digits_drawn``: the same latents, images drawn from p(x|z) beside their means), and by latent size
    ``images/manifold`` and ``figures/latent_scatter`` (z_dim = 2) or ``images/traversal`` (z_dim > 2),
    and ``images/kl_per_dim``, the KL of every latent dimension at every validation logged so far.
    At the end of training it writes the same pictures as PNGs into the run folder, the samples
    drawn by the run's sampler (``sampler=``; also in TensorBoard as ``images/samples_<sampler>``
    when it is not the plain prior), and the test set's posterior means as a projector embedding
    (z_dim > 2). A picture that fails to draw at the
    end is reported in the run's summary; it does not fail a run that trained.
    """

    def __init__(self, every_n_epochs: NonNegativeInt = 1, n_samples: PositiveInt = 64):
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
        name, draw = ("digits", digit_rows) if model.num_classes else ("samples", samples)
        if samples_z is None:
            samples_z = self.prior_draws(model)[:ROW_LENGTH] if model.num_classes else self.prior_draws(model)
        figures[name] = draw(model, samples_z)
        if draws_differ(model):  # the same latents, each image drawn from p(x|z), not its mean
            figures[f"{name}_drawn"] = draw(model, samples_z, seed=self.seed)
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
        sampler = pl_module.sampler
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
