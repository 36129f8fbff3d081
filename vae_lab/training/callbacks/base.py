"""What callbacks that add to a run's record share."""
from lightning.pytorch.callbacks import Callback


class Recording(Callback):
    """A callback whose end-of-training results join the run's summary (``summary.RunSummary``):
    ``record()`` -> dict, read in ``on_fit_end``. A callback that cannot do its work on the run's
    data says so when it is built (the registry gives it ``data``, what the data module served)."""

    def record(self) -> dict:
        return {}
