"""The Trainer and the logger of a run, built by vae_lab from the plain keys of ``trainer:`` and
``logger:`` (vae_lab/conf/trainer/*.yaml, conf/logger/tensorboard.yaml), each key checked against
``lightning.Trainer``'s and ``TensorBoardLogger``'s signatures, so any of their arguments can be
given (``+trainer.gradient_clip_val=1.0``) and none names code."""
from collections.abc import Mapping, Sequence
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, Checkpoint, ProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.io import CheckpointIO

from vae_lab.arguments import check_settings
from vae_lab.errors import VaeLabError
from vae_lab.training.callbacks import AtomicCheckpointIO

# The Trainer's arguments that vae_lab sets itself, from the run; a config never does.
SET_BY_VAE_LAB = ("logger", "callbacks", "plugins", "default_root_dir", "enable_progress_bar", "enable_checkpointing")
# The logger's: its files go straight into the run folder (no version subfolders).
LOGGER_SET_BY_VAE_LAB = ("save_dir", "name", "version")
STEPPING = ("steps_per_execution",)  # vae_lab's own key in trainer: (vae_lab.training.module.MultiStepVAE)
CLIPPING = ("gradient_clip_val", "gradient_clip_algorithm")


def stepping(trainer: Mapping) -> dict:
    """How the LightningModule steps, from ``trainer:``: ``{}`` for one optimizer step per Lightning
    step, else ``MultiStepVAE``'s settings (``steps_per_execution`` and the gradient clipping it
    applies itself). Settings that cannot go with several steps per execution are refused."""
    steps = trainer.get("steps_per_execution", 1)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise VaeLabError(f"trainer.steps_per_execution={steps} must be an integer >= 1")
    if steps == 1:
        return {}
    if trainer.get("val_check_interval", 1.0) != 1.0:  # Lightning would count its steps, not batches
        raise VaeLabError(f"trainer.val_check_interval={trainer['val_check_interval']} needs "
                          f"trainer.steps_per_execution=1 (it is {steps}); vae_lab validates after every epoch")
    if trainer.get("accumulate_grad_batches", 1) != 1:
        raise VaeLabError(f"trainer.accumulate_grad_batches={trainer['accumulate_grad_batches']} needs "
                          f"trainer.steps_per_execution=1 (it is {steps}): each of several steps per "
                          "execution updates the weights")
    return {"steps_per_execution": steps, **{key: trainer[key] for key in CLIPPING if key in trainer}}


def build_logger(settings: Mapping | None, output_dir: Path) -> TensorBoardLogger | bool:
    """TensorBoard event files in the run folder; ``logger=null`` for none."""
    if settings is None:
        return False
    check_settings(TensorBoardLogger, settings, "logger", "TensorBoardLogger", LOGGER_SET_BY_VAE_LAB)
    return TensorBoardLogger(save_dir=output_dir, name="", version="", **settings)


def build_trainer(settings: Mapping, logger: Mapping | None, callbacks: Sequence[Callback], output_dir: Path,
                  checkpoint_io: CheckpointIO | None = None) -> L.Trainer:
    """A ``lightning.Trainer`` from ``trainer:`` (less vae_lab's own keys, and the clipping that
    ``MultiStepVAE`` applies itself), writing into ``output_dir``, with exactly ``callbacks``;
    checkpoints written by ``checkpoint_io`` (default ``AtomicCheckpointIO``)."""
    arguments = {key: value for key, value in settings.items() if key not in STEPPING}
    if stepping(settings):
        arguments = {key: value for key, value in arguments.items() if key not in CLIPPING}
    check_settings(L.Trainer, arguments, "trainer", "lightning.Trainer", SET_BY_VAE_LAB)
    if arguments.get("limit_val_batches") in (0, 0.0):
        raise VaeLabError("trainer.limit_val_batches=0: every epoch is validated (val/loss picks the best "
                          "checkpoint); give a number of batches or a fraction > 0")
    if arguments.get("accelerator") in ("gpu", "cuda") and not torch.cuda.is_available():
        raise VaeLabError(f"trainer.accelerator={arguments['accelerator']}, but torch finds no GPU here; "
                          "leave out trainer=gpu (the default trainer takes a GPU when there is one)")
    try:
        return L.Trainer(
            **arguments, logger=build_logger(logger, output_dir), callbacks=list(callbacks),
            plugins=[checkpoint_io or AtomicCheckpointIO()], default_root_dir=output_dir,
            # Lightning adds a progress bar and a checkpoint callback of its own unless told not to:
            # the run has those of its callbacks: config, and no others.
            enable_progress_bar=any(isinstance(c, ProgressBar) for c in callbacks),
            enable_checkpointing=any(isinstance(c, Checkpoint) for c in callbacks),
        )
    except (ValueError, TypeError, MisconfigurationException) as error:  # the Trainer's own checks of its arguments
        raise VaeLabError(f"trainer: {' '.join(str(error).split())}") from None
