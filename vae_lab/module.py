"""The one LightningModule: trains any ``vae_lab.models`` model with any ``VAELoss``."""
import logging
from collections.abc import Callable

import lightning as L
import torch

from vae_lab.losses import VAELoss
from vae_lab.models import VAE

log = logging.getLogger(__name__)


class LitVAE(L.LightningModule):
    """Logs every term of the loss as ``train/<term>`` (every ``trainer.log_every_n_steps`` steps),
    ``train/<term>_epoch`` and ``val/<term>`` (epoch means), in per-sample units.

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

    def on_fit_start(self):
        # Processes that share the cores get a share of the threads each (cores // processes, through
        # OMP_NUM_THREADS): joblib sets it for parallel sweeps, Lightning's launcher for DDP.
        log.info("torch uses %d CPU threads", torch.get_num_threads())

    def _reseed(self, step: int, rank: int) -> None:
        # The reparameterisation noise depends only on (seed, step, rank), not on what ran before,
        # so a resumed run draws the same noise as one that was never interrupted. Only the model's
        # device is seeded: torch.manual_seed seeds every backend torch knows, ~1 ms a step.
        seed = (self.seed * 1_000_003 + step) * 1_009 + rank
        if self.device.type == "cpu":
            torch.default_generator.manual_seed(seed)
        elif self.device.type == "cuda":
            torch.cuda.manual_seed(seed)
        else:
            torch.manual_seed(seed)

    def on_train_batch_start(self, batch, batch_idx):
        self._reseed(self.global_step, self.global_rank)  # each DDP process its own noise

    def on_validation_epoch_start(self):
        # The same validation noise every epoch (and in every DDP process), so val/loss moves only
        # because the model did.
        self._reseed(-1, rank=0)

    def on_train_epoch_start(self):
        self.epoch_sums, self.epoch_count = {}, 0

    def training_step(self, batch, batch_idx):
        losses = self._losses(batch)
        batch_size = batch[0].shape[0]
        # Each self.log call costs about half a millisecond, a tenth of a dense step on a CPU: the
        # per-step values are logged only on the steps Lightning writes (every log_every_n_steps;
        # its own LearningRateMonitor asks the same way), and the epoch means are summed here.
        if self.trainer._logger_connector.should_update_logs:
            self.log_dict({f"train/{k}": v for k, v in losses.items()}, batch_size=batch_size)
        for term, value in losses.items():
            self.epoch_sums[term] = self.epoch_sums.get(term, 0.0) + value.detach() * batch_size
        self.epoch_count += batch_size
        return losses["loss"]

    def on_train_epoch_end(self):
        # sync_dist: with DDP, the mean over the processes' shards (equal in size)
        self.log_dict({f"train/{k}_epoch": v / self.epoch_count for k, v in self.epoch_sums.items()}, sync_dist=True)

    def validation_step(self, batch, batch_idx):
        losses = self._losses(batch)
        # every DDP process validates on the whole test set; sync_dist averages equal numbers
        self.log_dict({f"val/{k}": v for k, v in losses.items()}, batch_size=batch[0].shape[0],
                      prog_bar=True, sync_dist=True)

    def configure_optimizers(self):
        return self.optimizer_factory(self.parameters())

    def on_save_checkpoint(self, checkpoint):
        checkpoint["vae_lab_config"] = self.config
