"""``callbacks.progress_bar``: how a run shows its progress on the console: a bar per training epoch in a terminal, one line per
epoch anywhere else (a cluster job's log, nohup, CI), where a redrawn bar would write every state
it passes through."""
import sys
import time

from lightning.pytorch.callbacks import TQDMProgressBar
from tqdm.auto import tqdm

from vae_lab.arguments import PositiveInt
from vae_lab.registry import CALLBACKS


@CALLBACKS.register("progress_bar")
class TrainingBar(TQDMProgressBar):
    """Lightning's TQDM bar without the bars of the validation passes (at initialisation and
    after every epoch), which in a log or a notebook add lines of their own; the epoch's bar
    still shows val/loss when validation ends.

    ``lines``: print one line per epoch (epoch, losses, seconds) instead of the bar; by default
    when stdout is not a terminal.
    """

    def __init__(self, refresh_rate: PositiveInt = 10, lines: bool | None = None):
        super().__init__(refresh_rate=refresh_rate)
        self.lines = (not sys.stdout.isatty()) if lines is None else lines
        self.epoch_started = time.perf_counter()

    def init_validation_tqdm(self):
        return tqdm(disable=True)  # what Lightning updates during validation, drawn nowhere

    def init_sanity_tqdm(self):
        return tqdm(disable=True)

    def init_train_tqdm(self):
        return tqdm(disable=True) if self.lines else super().init_train_tqdm()

    def on_train_epoch_start(self, trainer, pl_module):
        super().on_train_epoch_start(trainer, pl_module)
        self.epoch_started = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        super().on_train_epoch_end(trainer, pl_module)
        if self.lines and trainer.is_global_zero:  # validation has run: its losses are the epoch's
            print(epoch_line(trainer, pl_module, time.perf_counter() - self.epoch_started), flush=True)


def epoch_line(trainer, pl_module, seconds: float) -> str:
    """``epoch 3/20: train loss 123.45, val loss 120.01 (recon 100.20, kl 19.81), 7.1 s``. The train
    loss is the epoch's mean so far (LitVAE's sums: its own epoch-end log comes after callbacks)."""
    metrics = {key: float(value) for key, value in trainer.callback_metrics.items() if value.numel() == 1}
    parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}:"]
    if getattr(pl_module, "epoch_count", 0):
        parts.append(f"train loss {float(pl_module.epoch_sums[0]) / pl_module.epoch_count:.2f},")
    if "val/loss" in metrics:
        terms = ", ".join(f"{term} {metrics[f'val/{term}']:.2f}" for term in ("recon", "kl") if f"val/{term}" in metrics)
        parts.append(f"val loss {metrics['val/loss']:.2f} ({terms}),")
    return " ".join([*parts, f"{seconds:.1f} s"])
