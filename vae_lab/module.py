"""The one LightningModule: trains any ``vae_lab.models`` model with ``VAELoss`` and a KL schedule."""
import logging
from collections.abc import Callable

import lightning as L
import torch

from vae_lab.inference import ACTIVE_UNIT_VARIANCE
from vae_lab.losses import VAELoss
from vae_lab.models import VAE
from vae_lab.schedules import Constant, FixedLR

log = logging.getLogger(__name__)


class LitVAE(L.LightningModule):
    """Logs every term of the loss, in per-sample units: ``train/<term>`` with ``train/beta`` and
    ``train/lr`` every ``trainer.log_every_n_steps`` steps, ``train/<term>_epoch`` and
    ``val/<term>`` as epoch means, and ``val/active_units``.

    ``optimizer`` is a partial that takes the parameters (``_partial_: true`` in the config),
    ``lr_schedule`` a ``vae_lab.schedules`` LR schedule. ``config`` is the run's resolved config
    as plain values: Lightning stores it in every checkpoint as the module's hyperparameters, and
    ``vae_lab.checkpoint.load_model`` rebuilds the model from it alone.
    """

    def __init__(self, model: VAE, loss: VAELoss, optimizer: Callable, kl_schedule=None, lr_schedule=None,
                 seed: int = 0, config: dict | None = None):
        super().__init__()
        self.model, self.loss, self.optimizer_factory = model, loss, optimizer
        self.kl_schedule, self.lr_schedule = kl_schedule or Constant(), lr_schedule or FixedLR()
        self.seed = seed
        self.save_hyperparameters(config or {}, logger=False)  # the run summary fills the HPARAMS table

    @property
    def config(self) -> dict:
        return dict(self.hparams)

    def _losses(self, batch, epoch: float | None):
        """The loss terms of a batch at a point of the KL schedule, and the encoding (mu, logvar)."""
        x, y = batch
        mu, logvar = self.model.encode(x, y)
        return self.loss(self.model, x, y, mu, logvar, self.kl_schedule, epoch), mu, logvar

    def on_fit_start(self):
        # Processes that share the cores get a share of the threads each (cores // processes, through
        # OMP_NUM_THREADS): joblib sets it for parallel sweeps, Lightning's launcher for DDP.
        log.info("torch uses %d CPU threads", torch.get_num_threads())

    def _reseed(self, step: int, rank: int) -> None:
        # The reparameterisation noise depends only on (seed, step, rank), not on what ran before,
        # so a resumed run draws the same noise as one that was never interrupted. Only the model's
        # device is seeded: torch.manual_seed seeds every backend torch knows, which costs more
        # than the rest of a small step (docs/performance.md).
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
        self.val_moments = torch.zeros(3, self.model.z_dim, device=self.device)  # Σ mu, Σ mu², count

    def on_train_epoch_start(self):
        self.epoch_sums, self.epoch_count = 0.0, 0

    def training_step(self, batch, batch_idx):
        epoch = self.global_step / self.trainer.num_training_batches
        losses, _, _ = self._losses(batch, epoch)
        batch_size = len(batch[0])
        # Per-step values go straight to the logger on the logging steps only: self.log costs a
        # large share of a small step. The epoch means are summed here instead.
        values = torch.stack([v.detach() for v in losses.values()])
        every = self.trainer.log_every_n_steps  # 0: no per-step values
        if self.logger is not None and every and self.global_step % every == 0:
            scalars = {f"train/{k}": v for k, v in zip(losses, values.tolist())}  # one host copy
            scalars.update({f"train/{k}": v for k, v in self.kl_schedule.logged(epoch).items()})
            scalars["train/lr"] = self.trainer.optimizers[0].param_groups[0]["lr"]  # the rate this step uses
            self.logger.log_metrics(scalars, step=self.global_step)
        self.epoch_sums = self.epoch_sums + values * batch_size
        self.epoch_count += batch_size
        self.loss_terms = tuple(losses)
        return losses["loss"]

    def on_train_epoch_end(self):
        # sync_dist: with DDP, the mean over the processes' shards (equal in size)
        means = self.epoch_sums / self.epoch_count
        self.log_dict({f"train/{k}_epoch": v for k, v in zip(self.loss_terms, means)}, sync_dist=True)

    def validation_step(self, batch, batch_idx):
        losses, mu, _ = self._losses(batch, epoch=None)  # the schedule's final weighting: epochs compare
        # every DDP process validates on the whole test set; sync_dist averages equal numbers
        self.log_dict({f"val/{k}": v for k, v in losses.items()}, batch_size=len(batch[0]),
                      prog_bar=True, sync_dist=True)
        self.val_moments += torch.stack([mu.sum(0), mu.pow(2).sum(0), torch.full_like(mu[0], len(mu))])

    def on_validation_epoch_end(self):
        # Active units (Burda et al. 2015): dimensions whose posterior mean varies across the
        # test images (vae_lab.metrics.active_units, here from running sums)
        total, squares, count = self.val_moments
        variance = (squares - total.pow(2) / count) / (count - 1).clamp(min=1)
        self.log("val/active_units", (variance > ACTIVE_UNIT_VARIANCE).sum().float(), sync_dist=True)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        scheduler = self.lr_schedule(optimizer, self.trainer)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
