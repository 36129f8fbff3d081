"""The one LightningModule: trains any ``vae_lab.models`` model with a registered loss and KL schedule,
one optimizer step per Lightning step (``LitVAE``) or several (``MultiStepVAE``)."""
import itertools
import logging
import os
from collections.abc import Iterator

import lightning as L
import torch

from vae_lab.evaluation.inference import ACTIVE_UNIT_VARIANCE
from vae_lab.evaluation.samplers import FromPrior
from vae_lab.training.losses import VAELoss
from vae_lab.models import VAE
from vae_lab.training.schedules import Constant, FixedLR

log = logging.getLogger(__name__)
NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"  # torch.cuda.is_available() through NVML ("1") or the CUDA runtime


class LitVAE(L.LightningModule):
    """Logs every term of the loss, in per-sample units: ``train/<term>`` with ``train/beta`` and
    ``train/lr`` every ``trainer.log_every_n_steps`` steps, ``train/<term>_epoch`` and
    ``val/<term>`` as epoch means, and ``val/active_units``.

    ``optimizer`` is built on the model's parameters (``vae_lab.training.optimizers``),
    ``lr_schedule`` a ``vae_lab.training.schedules`` LR schedule, ``sampler`` how the end-of-run
    samples draw their latents (``vae_lab.evaluation.samplers``). ``config`` is the run's resolved
    config as plain values: Lightning stores it in every checkpoint as the module's hyperparameters,
    and ``vae_lab.runs.load_model`` rebuilds the model from it alone.
    """

    def __init__(self, model: VAE, loss: VAELoss, optimizer: torch.optim.Optimizer, kl_schedule=None, lr_schedule=None,
                 sampler=None, seed: int = 0, config: dict | None = None):
        super().__init__()
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self.sampler = sampler or FromPrior()
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
        # Importing Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 (asking whether CUDA is there then
        # cannot spoil a later fork), and torch's Adam asks at every step: with a CUDA build of torch,
        # and no CUDA in use, each step loads the NVML library again, 0.5-0.7 ms, a tenth of a dense
        # step on 2 cores (docs/performance.md). A fit on the CPU uses no CUDA, so it asks the CUDA
        # runtime instead, which remembers its answer; the setting is put back at the end of the fit.
        self._nvml_check_before = os.environ.get(NVML_CHECK)
        if self.device.type == "cpu":
            os.environ[NVML_CHECK] = "0"

    def on_fit_end(self):
        # unconditionally (a no-op after a fit on a GPU): Lightning has moved the model to the CPU by now
        if self._nvml_check_before is None:
            os.environ.pop(NVML_CHECK, None)
        else:
            os.environ[NVML_CHECK] = self._nvml_check_before

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

    def on_validation_epoch_start(self):
        # The same validation noise every epoch (and in every DDP process), so val/loss moves only
        # because the model did.
        self._reseed(-1, rank=0)
        self.val_moments = {}  # per layer of latents: Σ mu, Σ mu², count, each (dimensions,)

    def on_train_epoch_start(self):
        self.epoch_sums, self.epoch_count = 0.0, 0

    def training_step(self, batch, batch_idx):
        return self._step_loss(batch)

    def _step_loss(self, batch) -> torch.Tensor:
        """The loss of one optimizer step on ``batch`` (its per-step logging and epoch sums done)."""
        self._reseed(self.global_step, self.global_rank)  # each DDP process its own noise
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
        self.log_dict({f"train/{k}_epoch": v for k, v in zip(self.loss_terms, means)}, sync_dist=True,
                      batch_size=self.epoch_count)
        self.log_step()

    def validation_step(self, batch, batch_idx):
        losses, mu, _ = self._losses(batch, epoch=None)  # the schedule's final weighting: epochs compare
        # every DDP process validates on the whole test set; sync_dist averages equal numbers
        self.log_dict({f"val/{k}": v for k, v in losses.items()}, batch_size=len(batch[0]),
                      prog_bar=True, sync_dist=True)
        layers = {"active_units": mu, **{f"active_units_{name}": means
                                         for name, means in self.model.prior.layer_means(mu).items()}}
        for name, means in layers.items():
            moments = torch.stack([means.sum(0), means.pow(2).sum(0), torch.full_like(means[0], len(means))])
            self.val_moments[name] = self.val_moments.get(name, 0) + moments

    def on_validation_epoch_end(self):
        # Active units (Burda et al. 2015): dimensions whose posterior mean varies across the
        # test images (vae_lab.evaluation.metrics.active_units, here from running sums), of each layer
        for name, (total, squares, count) in self.val_moments.items():
            variance = (squares - total.pow(2) / count) / (count - 1).clamp(min=1)
            self.log(f"val/{name}", (variance > ACTIVE_UNIT_VARIANCE).sum().float(), sync_dist=True)
        self.log_step()

    def log_step(self) -> None:
        # The x of the epoch-level values in TensorBoard: the optimizer step, as for the per-step
        # values. Lightning writes a logged "step" as the x (LoggerConnector.log_metrics); its own
        # count is of Lightning steps, which are fewer with steps_per_execution > 1.
        self.log("step", float(self.global_step), batch_size=1)

    def configure_optimizers(self):
        scheduler = self.lr_schedule(self.optimizer, self.trainer)
        if scheduler is None:
            return self.optimizer
        return {"optimizer": self.optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class MultiStepVAE(LitVAE):
    """``LitVAE`` making ``steps_per_execution`` (K) optimizer steps in each Lightning step
    (``trainer.steps_per_execution``, as Keras's ``steps_per_execution``).

    Lightning runs its loop, its hooks and every callback once per training step, about 2,000
    Python calls, more than a small model's step costs on a GPU (docs/performance.md); here that is
    paid once per K batches. Each of the K optimizer steps is the one ``LitVAE`` makes: the same
    batch order, reparameterisation noise and binarization draw (both seeded by the global step),
    KL and learning-rate schedules (both functions of the global step), so K = 1 and K = 8 train to
    the same weights (tests/test_train.py). Lightning still counts batches: ``trainer.global_step``
    counts optimizer steps, ``limit_train_batches`` and the progress bar count batches; hooks that
    take a batch see the last one of the K.

    The steps are made by hand (Lightning's manual optimization, with ``training_step`` taking the
    ``dataloader_iter``), so Lightning's own gradient clipping is given here instead
    (``gradient_clip_val``, ``gradient_clip_algorithm``: the Trainer's arguments of the same names,
    applied the same way); gradient accumulation is refused (``vae_lab.training.trainer.stepping``).
    """

    def __init__(self, *args, steps_per_execution: int, gradient_clip_val: float | None = None,
                 gradient_clip_algorithm: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.automatic_optimization = False
        self.steps_per_execution = steps_per_execution
        self.gradient_clip_val, self.gradient_clip_algorithm = gradient_clip_val, gradient_clip_algorithm

    def training_step(self, dataloader_iter: Iterator):
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        steps = self.steps_per_execution
        if self.trainer.max_steps >= 0:  # stop at max_steps, not at the next multiple of K
            steps = min(steps, self.trainer.max_steps - self.global_step)
        # The epoch's last execution takes what is left (fewer than K batches when K does not divide it).
        for batch, _, _ in itertools.islice(dataloader_iter, steps):
            # what Lightning does to a batch before an automatic step: the data module's
            # on_after_batch_transfer (the dynamic binarization draw) included
            loss = self._step_loss(self.trainer.strategy.batch_to_device(batch))
            optimizer.zero_grad()
            self.manual_backward(loss)  # the NaN guard's on_before_backward runs here, every step
            if self.gradient_clip_val:
                self.clip_gradients(optimizer, self.gradient_clip_val, self.gradient_clip_algorithm)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
