"""Rebuild a trained model from a run folder or checkpoint, without unpickling arbitrary objects."""
from pathlib import Path

import torch
from hydra.utils import instantiate

from vae_lab.errors import VaeLabError
from vae_lab.models import VAE


def find_checkpoint(run: str | Path) -> Path:
    """A checkpoint file as given, or ``<run folder>/checkpoints/last.ckpt``."""
    path = Path(run).expanduser()
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise VaeLabError(f"no checkpoint at {path}: give a run folder (outputs/...) or a .ckpt file")
    return path


def load_checkpoint(path: Path) -> dict:
    """The checkpoint's dict, read with ``weights_only=True``: tensors and plain containers only."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, corrupt, or holding objects that would run code
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise VaeLabError(f"{path} is not a readable vae_lab checkpoint ({reason[:200]})") from None
    if not isinstance(checkpoint, dict) or "vae_lab_config" not in checkpoint or "state_dict" not in checkpoint:
        raise VaeLabError(f"{path} is not a vae_lab checkpoint (no vae_lab_config or state_dict)")
    return checkpoint


def load_model(run: str | Path) -> tuple[VAE, dict, Path]:
    """(model in eval mode on the CPU, the run's resolved config, the checkpoint path)."""
    path = find_checkpoint(run)
    checkpoint = load_checkpoint(path)
    config = checkpoint["vae_lab_config"]
    model = instantiate(config["model"])
    weights = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()}
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        raise VaeLabError(f"{path}: weights do not fit {config['model']['_target_']} ({str(error).splitlines()[0]})") from None
    return model.eval(), config, path
