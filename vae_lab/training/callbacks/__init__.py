"""The callbacks a run may have, one per file, registered in ``vae_lab.registry.CALLBACKS`` under the
key that switches each on in ``callbacks:`` (vae_lab/conf/callbacks/*.yaml; ``callbacks.figures=null``
switches one off). ``build_callbacks`` makes a run's, in the config's order."""
from collections.abc import Iterable, Mapping

from vae_lab.registry import CALLBACKS
from vae_lab.training.callbacks.base import Recording
from vae_lab.training.callbacks.checkpoints import AtomicCheckpointIO, RunCheckpoints
from vae_lab.training.callbacks.finite_guard import FiniteGuard
from vae_lab.training.callbacks.figures import FigureLogger
from vae_lab.training.callbacks.progress_bar import TrainingBar
from vae_lab.training.callbacks.summary import RunSummary
from vae_lab.training.callbacks.evaluate import EvaluateAtEnd

__all__ = ["Recording", "AtomicCheckpointIO", "RunCheckpoints", "FiniteGuard", "FigureLogger", "TrainingBar",
           "RunSummary", "EvaluateAtEnd", "build_callbacks"]


def build_callbacks(config: Mapping, data: dict, plugins: Iterable[str] = ()) -> list:
    """``{key: settings or None}`` -> the callbacks that are switched on, each the one registered
    under its key; ``data``, what the data module served, is given to those that take it."""
    return [CALLBACKS.build({"name": key, **(settings or {})}, plugins, key=f"callbacks.{key}", data=data)
            for key, settings in config.items() if settings is not None]
