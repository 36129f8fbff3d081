"""The progress bar of a run: one bar per training epoch, with the last validation losses."""
from lightning.pytorch.callbacks import TQDMProgressBar
from tqdm.auto import tqdm


class TrainingBar(TQDMProgressBar):
    """Lightning's TQDM bar without the bars of the validation passes (at initialisation and
    after every epoch), which in a log or a notebook add lines of their own; the epoch's bar
    still shows val/loss when validation ends."""

    def init_validation_tqdm(self):
        return tqdm(disable=True)  # what Lightning updates during validation, drawn nowhere
