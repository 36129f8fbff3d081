"""Checkpoints written atomically, kept as the run's last and best epochs, and read without
running code.

A Lightning checkpoint is a dict of tensors, numbers, strings and containers of them, so it loads
with ``torch.load(weights_only=True)``, whose unpickler refuses every other object instead of
constructing it: a file crafted to run code on load is rejected, never executed. What it holds is
then read as plain values only: the run's config (Lightning's ``hyper_parameters``) may choose a
model, prior and likelihood among those registered (``vae_lab.registry``) and give them checked
arguments, and nothing in it is ever called, imported or instantiated by name (its ``plugins``
are only named back to the user, never imported).
"""
import os
import pickle
import re
import shutil
from pathlib import Path

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from vae_lab.config import BINARIZE
from vae_lab.errors import VaeLabError
from vae_lab.io import write_atomically
from vae_lab.models import VAE, build_model
from vae_lab.registry import DATASETS

# What Lightning needs to resume a run (a weights-only export lacks the optimizer and loop state).
RESUME_KEYS = ("state_dict", "optimizer_states", "loops", "epoch", "global_step")
CONFIG_KEY = "hyper_parameters"  # where Lightning stores LitVAE's hyperparameters: the run's config
CHECKPOINTS = ("last", "best")  # which checkpoint of a run folder the tools read
BEST_NAME = re.compile(r"best-epoch\d+\.ckpt")


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


def safe_load(path: str | os.PathLike, what: str = "checkpoint"):
    """``torch.load(path, weights_only=True)`` on the CPU, or VaeLabError with one line naming the file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as error:
        raise VaeLabError(f"{path}: cannot read it ({error.strerror})") from None
    except Exception as error:  # torch.load fails on damaged files with many exception types
        unsafe = isinstance(error, pickle.UnpicklingError) and re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if unsafe:
            name = unsafe[1] if "." in unsafe[1] else f"builtins.{unsafe[1]}"  # torch ≥ 2.5 drops "builtins."
            raise VaeLabError(f"{path}: refused, loading it would call {name}; a {what} "
                              "holds only tensors and plain values (loaded with weights_only=True)") from None
        raise VaeLabError(f"{path}: not a readable {what} (truncated or corrupt)") from None


def load_checkpoint(path: str | os.PathLike) -> dict:
    """The training checkpoint at ``path`` (tensors on the CPU), or VaeLabError naming the file."""
    checkpoint = safe_load(path)
    missing = [key for key in RESUME_KEYS if not isinstance(checkpoint, dict) or key not in checkpoint]
    if missing:
        raise VaeLabError(f"{path}: not a vae_lab training checkpoint (no {', '.join(missing)})")
    return checkpoint


def _plain(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))


def stored_config(checkpoint: dict, path: str | os.PathLike) -> dict:
    """The run's config stored in a checkpoint, checked: plain values only; a registered model,
    prior and likelihood with valid settings (``build_model``, on the meta device, so no size read
    from the file allocates memory), whose weights have exactly the shapes the file holds; and the
    settings the tools read (data.name, data.binarize, data.seed, seed) of the right kinds.
    VaeLabError naming the file and what was refused otherwise."""
    config = checkpoint.get(CONFIG_KEY)
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise VaeLabError(f"{path}: holds no vae_lab run config to rebuild the model from")
    if not _plain(config):
        raise VaeLabError(f"{path}: refused, its run config holds values other than numbers, strings and lists")
    plugins = config.get("plugins") or []
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise VaeLabError(f"{path}: refused, its run config has no valid plugins list")
    try:
        with torch.device("meta"):  # shapes only: a size read from the file allocates nothing
            skeleton = build_model(config)
        if not isinstance(config.get("data"), dict):
            config["data"] = {}
        data = config["data"]
        data.setdefault("name", "mnist")  # runs from before data.name existed trained on MNIST
        DATASETS.get(data["name"], plugins)
    except VaeLabError as error:
        raise VaeLabError(f"{path}: refused: {error}") from None
    expected = {name: tuple(t.shape) for name, t in skeleton.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in model_state(checkpoint.get("state_dict") or {}).items()
             if isinstance(t, torch.Tensor)}
    if found != expected:
        wrong = sorted(set(found) ^ set(expected)) or [n for n in expected if found[n] != expected[n]]
        raise VaeLabError(f"{path}: refused, its run config does not describe its weights (model "
                          f"{config['model'].get('name')}, first mismatch at {wrong[0]}); the config was edited "
                          "or the file is damaged")
    checks = {
        "data.binarize": data.get("binarize", "none") in BINARIZE,
        "data.seed": isinstance(data.get("seed"), int),
        "seed": isinstance(config.get("seed"), int),
    }
    for key, ok in checks.items():
        if not ok:
            raise VaeLabError(f"{path}: refused, its run config has no valid {key}")
    return config


def model_state(state_dict: dict) -> dict:
    """The model's own weights out of a LitVAE state dict (whose model is ``LitVAE.model``)."""
    return {name.removeprefix("model."): t for name, t in state_dict.items() if name.startswith("model.")}


def check_fits(checkpoint: dict, module, path: str | os.PathLike) -> None:
    """Raise VaeLabError unless the checkpoint's weights have exactly the module's names and shapes."""
    expected = {name: tuple(t.shape) for name, t in module.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in checkpoint["state_dict"].items() if isinstance(t, torch.Tensor)}
    if found != expected:
        config = checkpoint.get(CONFIG_KEY)
        model = config.get("model") if isinstance(config, dict) else None
        model = model if isinstance(model, dict) else {}
        theirs = f"model {model.get('name', '?')} (z_dim={model.get('z_dim', '?')})"
        ours = f"model {module.config['model']['name']} (z_dim={module.model.z_dim})"
        raise VaeLabError(f"{path}: holds weights of {theirs}, which do not fit the configured {ours}")


def find_checkpoint(run: str | os.PathLike, which: str = "last") -> Path:
    """A checkpoint file as given, or the run folder's ``checkpoints/last.ckpt`` (``which="last"``,
    the state after the last epoch) or its ``best-epochNN.ckpt`` (``which="best"``, lowest val/loss)."""
    if which not in CHECKPOINTS:
        raise VaeLabError(f"checkpoint={which} must be one of {', '.join(CHECKPOINTS)}")
    path = Path(run).expanduser()
    if path.is_dir():
        folder = path / "checkpoints"
        best = sorted(p for p in folder.glob("best-epoch*.ckpt") if BEST_NAME.fullmatch(p.name))
        path = folder / "last.ckpt" if which == "last" else (best[-1] if best else folder / "best-epochNN.ckpt")
    if not path.is_file():
        raise VaeLabError(f"no checkpoint at {path}: give a run folder (outputs/...) or a .ckpt file")
    return path


def run_folder(checkpoint: Path) -> Path | None:
    """The run folder a checkpoint belongs to (``<run>/checkpoints/<file>``), or None for a file
    kept anywhere else."""
    checkpoint = Path(checkpoint)
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else None


def result_path(checkpoint: Path, name: str) -> Path:
    """Where a tool writes its result ``name`` (metrics.json, generated/) for a checkpoint: into its
    run folder, or for a file outside one, beside it as ``<stem>-<name>``, never anywhere above it."""
    checkpoint = Path(checkpoint)
    folder = run_folder(checkpoint)
    return folder / name if folder is not None else checkpoint.with_name(f"{checkpoint.stem}-{name}")


def load_model(run: str | os.PathLike, which: str = "last") -> tuple[VAE, dict, Path]:
    """Rebuild a trained model from a run folder or checkpoint alone.

    Returns (model in eval mode on the CPU, the run's checked config, the checkpoint's path).
    """
    path = find_checkpoint(run, which)
    checkpoint = load_checkpoint(path)
    config = stored_config(checkpoint, path)
    model = build_model(config)
    try:
        model.load_state_dict(model_state(checkpoint["state_dict"]))
    except RuntimeError as error:
        raise VaeLabError(f"{path}: weights do not fit model {config['model']['name']} "
                          f"({str(error).splitlines()[0]})") from None
    return model.eval(), config, path


class RunCheckpoints(ModelCheckpoint):
    """``checkpoints/last.ckpt``, the state after the last finished epoch, always, and
    ``checkpoints/best-epochNN.ckpt``, the epoch with the lowest ``val/loss`` over the whole run,
    resumes included.

    Lightning's own ``save_last`` writes last.ckpt only on epochs that also save a new best
    (Lightning 2.6), and a run resumed into a new folder forgets the best it resumed from; both
    are handled here.
    """

    def __init__(self, dirpath: str | None = None):
        super().__init__(dirpath=dirpath, filename="best-epoch{epoch:02d}", monitor="val/loss", save_top_k=1,
                         auto_insert_metric_name=False)
        self._resumed_state = None
        self._state_key = super().state_key

    @property
    def state_key(self) -> str:
        # Lightning reads it at every hook of every step, and ModelCheckpoint builds it anew from
        # its settings each time; they do not change.
        return self._state_key

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
