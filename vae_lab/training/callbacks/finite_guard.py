"""``callbacks.finite_guard``: stop a run whose loss or weights stop being finite, before a bad step
or checkpoint is kept."""
import math

import lightning as L
import torch

from vae_lab.errors import VaeLabError
from vae_lab.registry import CALLBACKS


@CALLBACKS.register("finite_guard")
class FiniteGuard(L.Callback):
    """Raises VaeLabError at the first non-finite training loss, naming the step and the last good
    checkpoint, and refuses to write a checkpoint whose weights are not all finite.

    On the CPU the loss is checked before backward, every step, so the bad step never reaches the
    weights: the check reads one scalar and tests it with math.isfinite, far cheaper than
    torch.isfinite on a tensor that requires grad (docs/performance.md). On a GPU, reading a
    scalar every step would make every step wait for the device; there the steps' verdicts are
    gathered on the device and read every ``trainer.log_every_n_steps`` steps (when the logged
    values are read anyway), so a bad step is reported within that many steps ("by step N"), and
    the checkpoint check keeps any non-finite weights off the disk all the same.
    """

    def on_train_start(self, trainer, pl_module):
        self.bad = torch.zeros((), dtype=torch.bool, device=pl_module.device)

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        if loss.device.type == "cpu":
            value = loss.item()
            if not math.isfinite(value):
                self._stop(trainer, f"became {value} at step {trainer.global_step}")
            return
        self.bad |= ~torch.isfinite(loss.detach())
        every = trainer.log_every_n_steps or 1
        if trainer.global_step % every == 0 and self.bad.item():  # the steps whose values are logged
            self._stop(trainer, f"became non-finite by step {trainer.global_step}")

    def _stop(self, trainer: L.Trainer, what: str) -> None:
        raise VaeLabError(f"training loss {what} (epoch {trainer.current_epoch}); stopped, "
                          f"{self._last_good(trainer)}; try a lower lr")

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if not all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values()):
            raise VaeLabError(f"weights became non-finite by step {trainer.global_step} "
                              f"(epoch {trainer.current_epoch}); stopped without saving, "
                              f"{self._last_good(trainer)}; try a lower lr")

    @staticmethod
    def _last_good(trainer: L.Trainer) -> str:
        last = trainer.checkpoint_callback.last_model_path if trainer.checkpoint_callback else ""
        return f"last good checkpoint: {last}" if last else "no checkpoint was saved yet"
