"""A training through ``vae_lab.training.train`` whose validation loss rises after its first epoch,
deterministically: from the second epoch on, each step climbs the loss instead of descending it.
With ``--die-at-epoch N`` the process kills itself (SIGKILL) as epoch N starts, as an
out-of-memory kill or a power cut would.

    python tests/rising_probe.py <output_dir> [--die-at-epoch N] [override ...]

Run by tests/test_reliability.py.
"""
import os
import signal
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from lightning.pytorch.callbacks import Callback

from vae_lab.training.module import LitVAE
from vae_lab.training import train
from vae_lab.config import CONF

REPO = Path(__file__).resolve().parents[1]


class DieAtEpoch(Callback):
    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)


def climbing_losses(module, batch, epoch):
    losses, mu, logvar = descending_losses(module, batch, epoch)
    if module.training and module.current_epoch >= 1:
        losses["loss"] = -losses["loss"]
    return losses, mu, logvar


if __name__ == "__main__":
    output_dir, arguments = Path(sys.argv[1]), sys.argv[2:]
    callbacks = []
    if arguments[:1] == ["--die-at-epoch"]:
        callbacks.append(DieAtEpoch(int(arguments[1])))
        arguments = arguments[2:]
    descending_losses, LitVAE._losses = LitVAE._losses, climbing_losses
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"output_dir={output_dir}",
                                           f"data.root={os.environ['VAE_LAB_DATA']}", *arguments])
    train(cfg, callbacks=callbacks)
