"""A DDP training through ``vae_lab.training.train`` that records what each process trained on.

    python tests/ddp_probe.py <output_dir> [override ...]

Run by tests/test_parallel.py; Lightning runs it again for every further process. Each process
writes the images of its training batches, in order, to ``<output_dir>/seen-rank<r>.pt``.
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

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches.append(batch[0].cpu())

    def on_train_end(self, trainer, pl_module):
        torch.save(torch.cat(self.batches), self.output_dir / f"seen-rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    output_dir, overrides = Path(sys.argv[1]), sys.argv[2:]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"output_dir={output_dir}",
                                           f"data.root={os.environ['VAE_LAB_DATA']}", *overrides])
    train(cfg, callbacks=[SeenImages(output_dir)])
