"""The one LightningModule: trains any ``vae_lab.models`` model with any ``VAELoss``."""
from collections.abc import Callable

import lightning as L
import torch

from vae_lab.losses import VAELoss
from vae_lab.models import VAE


class LitVAE(L.LightningModule):
    """Logs every term of the loss as ``train/<term>`` (each step), ``train/<term>_epoch`` and
    ``val/<term>`` (epoch means), in per-sample units.

    ``optimizer`` is a partial that takes the parameters (``_partial_: true`` in the config);
    ``config`` is the run's resolved config as a plain dict, stored in every checkpoint so that a
    checkpoint alone can rebuild the run.
    """

    def __init__(self, model: VAE, loss: VAELoss, optimizer: Callable, seed: int = 0, config: dict | None = None):
        super().__init__()
        self.model, self.loss, self.optimizer_factory = model, loss, optimizer
        self.seed, self.config = seed, config

    def _losses(self, batch) -> dict[str, torch.Tensor]:
        x, y = batch
        y = y if self.model.num_classes else None
        logits, mu, logvar = self.model(x, y)
        return self.loss(logits, x, mu, logvar)

    def _reseed(self, step: int) -> None:
        # The reparameterisation noise depends only on (seed, rank, step), not on what ran before,
        # so a resumed run draws the same noise as one that was never interrupted.
        torch.manual_seed((self.seed * 1_000_003 + step) * 1_009 + self.global_rank)

    def on_train_batch_start(self, batch, batch_idx):
        self._reseed(self.global_step)

    def on_validation_epoch_start(self):
        # The same validation noise every epoch, so val/loss moves only because the model did.
        self._reseed(-1)

    def training_step(self, batch, batch_idx):
        losses = self._losses(batch)
        batch_size = batch[0].shape[0]
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, batch_size=batch_size, prog_bar=False)
        self.log_dict({f"train/{k}_epoch": v for k, v in losses.items()},
                      on_step=False, on_epoch=True, batch_size=batch_size)
        return losses["loss"]

    def validation_step(self, batch, batch_idx):
        losses = self._losses(batch)
        self.log_dict({f"val/{k}": v for k, v in losses.items()}, batch_size=batch[0].shape[0],
                      prog_bar=True)

    def configure_optimizers(self):
        return self.optimizer_factory(self.parameters())

    def on_save_checkpoint(self, checkpoint):
        checkpoint["vae_lab_config"] = self.config
