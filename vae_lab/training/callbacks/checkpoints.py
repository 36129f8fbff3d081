"""``callbacks.checkpoints``: a run's checkpoints, written atomically, kept as its last and best
epochs (the layout ``vae_lab.runs`` reads)."""
import os
import shutil
from pathlib import Path

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from vae_lab.events import mark_epoch
from vae_lab.io import write_atomically
from vae_lab.registry import CALLBACKS
from vae_lab.runs import BEST_NAME, load_checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """Saves to ``<path>.tmp`` and renames it over ``<path>``; loads with ``weights_only=True``.

    A rename within one folder is atomic, so a process killed during a save leaves the previous
    checkpoint whole (and at worst a stale ``.tmp`` that the next save overwrites).
    """

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        write_atomically(path, lambda f: torch.save(checkpoint, f))

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        # whatever the caller asks for, never unpickle arbitrary objects
        return load_checkpoint(path)


@CALLBACKS.register("checkpoints")
class RunCheckpoints(ModelCheckpoint):
    """``checkpoints/last.ckpt``, the state after the last finished epoch, always, and
    ``checkpoints/best-epochNN.ckpt``, the epoch with the lowest ``val/loss`` over the whole run,
    resumes included.

    Lightning's own ``save_last`` writes last.ckpt only on epochs that also save a new best
    (Lightning 2.6), and a run resumed into a new folder forgets the best it resumed from; both
    are handled here. A run resumed in its own folder (a sweep's, ``vae_lab.sweep``) trains the
    killed epoch again: its best, if that epoch saved one, is written again under the same name,
    not beside it as ``-v1``, and each epoch's start is marked in the TensorBoard events, where the
    resume cuts them (``vae_lab.events``).
    """

    def __init__(self, dirpath: str | None = None):
        super().__init__(dirpath=dirpath, filename="best-epoch{epoch:02d}", monitor="val/loss", save_top_k=1,
                         auto_insert_metric_name=False, enable_version_counter=False)
        self._resumed_state = None
        self._state_key = super().state_key

    @property
    def state_key(self) -> str:
        # Lightning reads it at every hook of every step, and ModelCheckpoint builds it anew from
        # its settings each time; they do not change.
        return self._state_key

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.is_global_zero:
            mark_epoch(trainer.logger, trainer.global_step)

    def on_train_epoch_end(self, trainer, pl_module):
        super().on_train_epoch_end(trainer, pl_module)  # the best is saved after validation, before this
        self.last_model_path = os.path.join(self.dirpath, "last.ckpt")
        trainer.save_checkpoint(self.last_model_path, weights_only=False)  # the full state, to resume from

    def load_state_dict(self, state_dict: dict) -> None:
        if state_dict.get("dirpath") == self.dirpath:
            super().load_state_dict(state_dict)
        else:  # resumed into a new folder: carry the earlier best over once the trainer knows ckpt_path
            self._resumed_state = state_dict

    def on_fit_start(self, trainer, pl_module):
        state, self._resumed_state = self._resumed_state, None
        if state is None or trainer.ckpt_path is None:
            return
        score, name = state.get("best_model_score"), Path(str(state.get("best_model_path") or "")).name
        # only a best-epochNN.ckpt beside the checkpoint resumed from, never a path the file names
        earlier = Path(trainer.ckpt_path).parent / name
        if not (isinstance(score, torch.Tensor) and score.numel() == 1 and torch.isfinite(score)
                and BEST_NAME.fullmatch(name) and earlier.is_file()):
            return
        copy = Path(self.dirpath) / name
        if trainer.is_global_zero:
            with open(earlier, "rb") as source:
                write_atomically(copy, lambda f: shutil.copyfileobj(source, f))
        trainer.strategy.barrier()
        self.best_model_score = self.kth_value = score.reshape(())
        self.best_model_path = self.kth_best_model_path = str(copy)
        self.best_k_models = {str(copy): self.best_model_score}
