"""What a resumed run checks of the checkpoint it resumes from, before the run folder gets a file."""
import os

import torch

from vae_lab.errors import VaeLabError
from vae_lab.runs import CONFIG_KEY, epochs_done, load_checkpoint, stored_config


def read_resumable(path: str | os.PathLike, steps_per_execution: int, max_epochs: int | None = None) -> dict:
    """The checkpoint at ``path``, checked (``vae_lab.runs.stored_config``: a checkpoint whose
    config names code is refused here too), trained with the same way of stepping (Lightning
    counts the steps of one optimizer step per Lightning step and of several in different places
    of its state, so a run of one is never resumed as a run of the other), and with epochs left
    to train before ``max_epochs``: Lightning would resume a finished run to no training at all."""
    checkpoint = load_checkpoint(path)
    stored = stored_config(checkpoint, path)
    trained = (stored.get("trainer") or {}).get("steps_per_execution", 1)  # 1 for runs from before the key
    if (trained == 1) != (steps_per_execution == 1):
        raise VaeLabError(f"{path}: trained with trainer.steps_per_execution={trained}; resume it with "
                          f"trainer.steps_per_execution={trained}")
    done = epochs_done(checkpoint)
    if max_epochs is not None and max_epochs >= 0 and done >= max_epochs:
        raise VaeLabError(f"{path}: its run has trained {done} epochs, and epochs={max_epochs} leaves none to "
                          f"train; to go on, ask for more (epochs={done + 10}, say)")
    return checkpoint


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


