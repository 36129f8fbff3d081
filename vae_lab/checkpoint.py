"""Checkpoints written atomically and read without running code.

A Lightning checkpoint is a dict of tensors, numbers, strings and containers of them, so it loads
with ``torch.load(weights_only=True)``, whose unpickler refuses every other object instead of
constructing it: a file crafted to run code on load is rejected, never executed.
"""
import os
import pickle
import re
from pathlib import Path

import torch
from hydra.utils import instantiate
from lightning.pytorch.plugins.io import TorchCheckpointIO

from vae_lab.errors import VaeLabError
from vae_lab.models import VAE
from vae_lab.module import LitVAE

# What Lightning needs to resume a run (a weights-only export lacks the optimizer and loop state).
RESUME_KEYS = ("state_dict", "optimizer_states", "loops", "epoch", "global_step")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Saves to ``<path>.tmp`` and renames it over ``<path>``; loads with ``weights_only=True``.

    A rename within one folder is atomic, so a process killed during a save leaves the previous
    checkpoint whole (and at worst a stale ``.tmp`` that the next save overwrites).
    """

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())  # the bytes reach the disk before the name points at them
        os.replace(tmp, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        # whatever the caller asks for, never unpickle arbitrary objects
        return load_checkpoint(path)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """The checkpoint at ``path`` (tensors on the CPU), or VaeLabError with one line naming the file."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as error:
        raise VaeLabError(f"{path}: cannot read it ({error.strerror})") from None
    except Exception as error:  # torch.load fails on damaged files with many exception types
        unsafe = isinstance(error, pickle.UnpicklingError) and re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if unsafe:
            raise VaeLabError(f"{path}: refused, loading it would call {unsafe[1]}; a checkpoint "
                              "holds only tensors and plain values (loaded with weights_only=True)") from None
        raise VaeLabError(f"{path}: not a readable checkpoint (truncated or corrupt)") from None
    missing = [key for key in RESUME_KEYS if not isinstance(checkpoint, dict) or key not in checkpoint]
    if missing:
        raise VaeLabError(f"{path}: not a vae_lab training checkpoint (no {', '.join(missing)})")
    return checkpoint


def check_fits(checkpoint: dict, module: LitVAE, path: str | os.PathLike) -> None:
    """Raise VaeLabError unless the checkpoint's weights have exactly the module's names and shapes."""
    expected = {name: tuple(t.shape) for name, t in module.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in checkpoint["state_dict"].items() if isinstance(t, torch.Tensor)}
    if found != expected:
        model = (checkpoint.get("vae_lab_config") or {}).get("model", {})
        theirs = f"{model.get('_target_', 'another model')} (z_dim={model.get('z_dim', '?')})"
        ours = f"{type(module.model).__module__}.{type(module.model).__name__} (z_dim={module.model.z_dim})"
        raise VaeLabError(f"{path}: holds weights of {theirs}, which do not fit the configured model {ours}")


def find_checkpoint(run: str | os.PathLike) -> Path:
    """A checkpoint file as given, or ``<run folder>/checkpoints/last.ckpt``."""
    path = Path(run).expanduser()
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise VaeLabError(f"no checkpoint at {path}: give a run folder (outputs/...) or a .ckpt file")
    return path


def load_model(run: str | os.PathLike) -> tuple[VAE, dict, Path]:
    """Rebuild a trained model from a run folder or checkpoint alone.

    Returns (model in eval mode on the CPU, the run's resolved config, the checkpoint's path).
    """
    path = find_checkpoint(run)
    checkpoint = load_checkpoint(path)
    config = checkpoint.get("vae_lab_config")
    if not isinstance(config, dict) or "model" not in config:
        raise VaeLabError(f"{path}: holds no vae_lab_config to rebuild the model from")
    model = instantiate(config["model"])
    weights = {name.removeprefix("model."): tensor for name, tensor in checkpoint["state_dict"].items()}
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        raise VaeLabError(f"{path}: weights do not fit {config['model']['_target_']} "
                          f"({str(error).splitlines()[0]})") from None
    return model.eval(), config, path
