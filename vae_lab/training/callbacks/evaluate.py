"""``callbacks.evaluate`` (``callbacks=evaluate``): at the end of training, what
``python -m vae_lab.evaluate`` measures, into the run folder and its summary."""
from pathlib import Path

from vae_lab.arguments import NonNegativeInt, PositiveInt
from vae_lab.evaluation.classifier import classifier_for
from vae_lab.evaluation.measure import TRAVERSAL_FILE, measure_run
from vae_lab.evaluation.samplers import fitted_sampler
from vae_lab.io import write_json
from vae_lab.registry import CALLBACKS
from vae_lab.training.callbacks.base import Recording


@CALLBACKS.register("evaluate")
class EvaluateAtEnd(Recording):
    """At the end of training, ``measure_run`` the model into ``<run folder>/metrics.json`` and the
    run's summary (and so the HPARAMS table), and with ``disentanglement`` the labelled traversal
    into ``traversal_factors.png``. ``n_samples > 0`` needs the cached classifier of the run's data
    (``data``: what the data module served), found when the callback is built, before training."""

    def __init__(self, k: PositiveInt = 1000, n_images: PositiveInt = 10_000, n_samples: NonNegativeInt = 0,
                 disentanglement: bool = True, *, data: dict | None = None):
        self.k, self.n_images, self.n_samples, self.disentanglement = k, n_images, n_samples, disentanglement
        self.classifier = classifier_for(data) if n_samples and data is not None else None
        self.result = {}

    def on_train_end(self, trainer, pl_module):
        # on the training device still (Lightning moves the model to the CPU before on_fit_end)
        if not trainer.is_global_zero:  # with DDP, the first process measures
            return
        model, seed = pl_module.model.eval(), pl_module.seed  # training is over
        sampler = pl_module.sampler
        if self.n_samples:
            sampler = fitted_sampler(sampler, model, *trainer.datamodule.fit_set.tensors,
                                     Path(trainer.checkpoint_callback.last_model_path), seed)
        folder = Path(trainer.default_root_dir)
        self.result = measure_run(model, pl_module.config, self.k, self.n_images, self.n_samples, self.classifier,
                                  seed, sampler=sampler, disentanglement=self.disentanglement,
                                  traversal_path=folder / TRAVERSAL_FILE)
        write_json(self.result, folder / "metrics.json")

    def record(self) -> dict:
        return {"metrics": self.result}


