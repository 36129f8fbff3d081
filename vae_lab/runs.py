"""A run folder on disk, and how it is read back: its checkpoints (``checkpoints/last.ckpt``,
``checkpoints/best-epochNN.ckpt``), its record (``summary.json``) and the results the tools write
beside them; ``load_model`` rebuilds a trained model from a checkpoint alone.

A Lightning checkpoint is a dict of tensors, numbers, strings and containers of them, so it loads
with ``torch.load(weights_only=True)`` (``vae_lab.io.safe_load``), whose unpickler refuses every
other object instead of constructing it: a file crafted to run code on load is rejected, never
executed. What it holds is then read as plain values only: the run's config (Lightning's
``hyper_parameters``) may choose a model, prior and likelihood among those registered
(``vae_lab.registry``) and give them checked arguments, and nothing in it is ever called, imported
or instantiated by name (its ``plugins`` are only named back to the user, never imported).
"""
import json
import math
import os
import re
from pathlib import Path

import torch

from vae_lab.config import upgraded
from vae_lab.data.splits import BINARIZE
from vae_lab.errors import VaeLabError
from vae_lab.io import safe_load
from vae_lab.models import VAE, build_model
from vae_lab.registry import DATASETS

# What Lightning needs to resume a run (a weights-only export lacks the optimizer and loop state).
RESUME_KEYS = ("state_dict", "optimizer_states", "loops", "epoch", "global_step")
CONFIG_KEY = "hyper_parameters"  # where Lightning stores LitVAE's hyperparameters: the run's config
CHECKPOINTS = ("last", "best")  # which checkpoint of a run folder the tools read
BEST_NAME = re.compile(r"best-epoch\d+\.ckpt")
SUMMARY_FILE = "summary.json"  # the run's record (vae_lab.training.callbacks.summary)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """The training checkpoint at ``path`` (tensors on the CPU), or VaeLabError naming the file."""
    checkpoint = safe_load(path)
    missing = [key for key in RESUME_KEYS if not isinstance(checkpoint, dict) or key not in checkpoint]
    if missing:
        raise VaeLabError(f"{path}: not a vae_lab training checkpoint (no {', '.join(missing)})")
    return checkpoint


def epochs_done(checkpoint: dict) -> int:
    """The epochs a run had finished when the checkpoint was saved (vae_lab saves it as an epoch ends)."""
    return checkpoint.get("epoch", -1) + 1


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
    config = upgraded(config)  # a run from before the configs chose by name: the same run, by name
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


def numbers(values: dict) -> dict:
    """The entries of values that are plain numbers (not bools)."""
    return {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def job_order(path: Path):
    """Sort key of a sweep's run folder: its job number, from its record (``job.json``:
    vae_lab.sweep names job folders by their overrides), or the ``<number>-`` that began job
    folders' names before; name order after numbered jobs."""
    try:
        number = json.loads((path / "job.json").read_text()).get("number")
    except (OSError, ValueError, AttributeError):
        number = None
    number = path.name.split("-")[0] if number is None else number
    return (int(number), path.name) if str(number).isdigit() else (math.inf, path.name)
