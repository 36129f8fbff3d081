"""Stop a run whose loss or weights stop being finite, before a bad step or checkpoint is kept."""
import math

import lightning as L
import torch

from vae_lab.errors import VaeLabError


class FiniteGuard(L.Callback):
    """Raises VaeLabError at the first non-finite training loss, naming the step and the last good
    checkpoint, and refuses to write a checkpoint whose weights are not all finite.

    The loss is checked before backward, so the bad step never reaches the weights. The check reads
    one scalar per step and tests it with math.isfinite, which is far cheaper than torch.isfinite on
    a tensor that requires grad (docs/performance.md).
    """

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        value = loss.item()
        if not math.isfinite(value):
            raise VaeLabError(f"training loss became {value} at step {trainer.global_step} "
                              f"(epoch {trainer.current_epoch}); stopped, {self._last_good(trainer)}; "
                              "try a lower lr")

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if not all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values()):
            raise VaeLabError(f"weights became non-finite by step {trainer.global_step} "
                              f"(epoch {trainer.current_epoch}); stopped without saving, "
                              f"{self._last_good(trainer)}; try a lower lr")

    @staticmethod
    def _last_good(trainer: L.Trainer) -> str:
        last = trainer.checkpoint_callback.last_model_path if trainer.checkpoint_callback else ""
        return f"last good checkpoint: {last}" if last else "no checkpoint was saved yet"
