"""A DDP training through ``vae_lab.training.train`` that records what each process trained on.

    python tests/ddp_probe.py <output_dir> [override ...]

Run by tests/test_parallel.py; Lightning runs it again for every further process. Each process
writes the images of its training batches, in order, to ``<output_dir>/seen-rank<r>.pt``, and its
model's weights at the end to ``<output_dir>/weights-rank<r>.pt``.
"""
import os
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.callbacks import Callback

from vae_lab.training import train
from vae_lab.config import CONF

REPO = Path(__file__).resolve().parents[1]


class SeenImages(Callback):
    def __init__(self, output_dir: Path):
        self.output_dir, self.batches = output_dir, []

    def on_train_start(self, trainer, pl_module):
        # every training batch passes the data module's on_after_batch_transfer, however many
        # batches a Lightning step takes (trainer.steps_per_execution)
        datamodule, transfer = trainer.datamodule, trainer.datamodule.on_after_batch_transfer

        def seen(batch, dataloader_idx):
            batch = transfer(batch, dataloader_idx)
            if trainer.training:
                self.batches.append(batch[0].cpu())
            return batch

        datamodule.on_after_batch_transfer = seen

    def on_train_end(self, trainer, pl_module):
        torch.save(torch.cat(self.batches), self.output_dir / f"seen-rank{trainer.global_rank}.pt")
        torch.save(pl_module.model.state_dict(), self.output_dir / f"weights-rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    output_dir, overrides = Path(sys.argv[1]), sys.argv[2:]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"output_dir={output_dir}",
                                           f"data.root={os.environ['VAE_LAB_DATA']}", *overrides])
    train(cfg, callbacks=[SeenImages(output_dir)])
