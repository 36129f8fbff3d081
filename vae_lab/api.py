"""vae_lab from Python, for notebooks: train a run with the command line's overrides, open any run.

    import vae_lab
    run = vae_lab.train_run("model=conv", "loss=mse", beta=8, epochs=5)   # as python train.py ...
    run.summary["final"]["val_loss"], run.samples(), run.reconstructions()
    old = vae_lab.load_run("outputs/mnist-dense-bce-beta1.0-z20/2026-01-31_14-05-09-123456")
    old.manifold(), old.interpolation(3, 8), old.evaluate(k=100)

Pictures come back as PIL images, which a notebook shows inline. Bad input raises VaeLabError,
which a notebook shows as its one line, as the command line prints it.
"""
import json
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms.functional import to_pil_image

from vae_lab.cli import start_process
from vae_lab.config import CONF, check_config
from vae_lab.errors import VaeLabError
from vae_lab.evaluation import figures
from vae_lab.registry import load_plugins
from vae_lab.runs import SUMMARY_FILE, find_checkpoint, load_model, result_path, run_folder


def compose_config(*overrides: str, **settings):
    """The config ``python train.py <overrides>`` would get (keyword arguments are overrides too:
    epochs=5 is "epochs=5"), with the run folder chosen as train.py chooses it unless
    ``output_dir`` is given; VaeLabError for an unknown key, group or option."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    overrides = [*overrides, *(f"{key}={value}" for key, value in settings.items())]
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("config", overrides=overrides, return_hydra_config=True)
    except Exception as error:  # Hydra's composition errors are of many kinds; each says what is wrong
        raise VaeLabError(" ".join(str(error).split())) from None
    if not any(o.startswith("output_dir=") for o in overrides):
        HydraConfig.instance().set_config(cfg)  # resolves ${hydra:runtime.choices...} in the folder name
        cfg.output_dir = str(Path(cfg.hydra.run.dir).resolve())
    del cfg.hydra
    return cfg


def train_run(*overrides: str, **settings) -> "Run":
    """Train one run, exactly as ``python train.py <overrides>`` would, and return it:
    ``train_run("model=cvae", "trainer.limit_train_batches=50", epochs=2)``."""
    from vae_lab.training import train

    cfg = compose_config(*overrides, **settings)
    check_config(cfg)
    train(cfg)
    return Run(cfg.output_dir)


def load_run(path: str | Path, checkpoint: str = "last", plugins: list[str] | tuple[str, ...] = ()) -> "Run":
    """A finished (or failed) run from its folder, or any .ckpt file (in a run's checkpoints/ or
    anywhere else); ``checkpoint`` is ``last`` or ``best`` (the lowest val/loss) for the model of a
    folder. ``plugins``: the modules that registered the run's own components, as when it trained
    (``plugins=["my_lab.models"]``)."""
    start_process()
    load_plugins(plugins)
    path = Path(path).expanduser()
    if path.is_file():
        return Run(run_folder(path) or path.parent, path, checkpoint)
    if not (path / SUMMARY_FILE).is_file() and not (path / "checkpoints").is_dir():
        raise VaeLabError(f"{path}: not a run folder (no {SUMMARY_FILE}, no checkpoints/) nor a checkpoint file")
    return Run(path, None, checkpoint)


def picture(grid: torch.Tensor) -> Image.Image:
    return to_pil_image(grid)


class Run:
    """One run folder: its ``config``, ``summary`` and ``metrics`` (dicts), its ``model`` (rebuilt
    from the checkpoint alone, on first use), and pictures of what it learned."""

    def __init__(self, folder: str | Path, checkpoint_file: Path | None = None, which: str = "last"):
        self.folder = Path(folder)
        self.checkpoint = checkpoint_file or find_checkpoint(self.folder, which)
        self._model = self._config = None

    def __repr__(self) -> str:
        final = self.summary.get("final", {})
        loss = f", val loss {final['val_loss']:.2f}" if "val_loss" in final else ""
        return f"Run({str(self.folder)!r}: {self.summary.get('status', 'no summary')}{loss})"

    def _load(self):
        if self._model is None:
            self._model, self._config, _ = load_model(self.checkpoint)
        return self._model, self._config

    @property
    def model(self):
        return self._load()[0]

    @property
    def config(self) -> dict:
        return self._load()[1]

    def _json(self, name: str) -> dict:
        path = self.folder / name
        return json.loads(path.read_text()) if path.is_file() else {}

    @property
    def summary(self) -> dict:
        return self._json(SUMMARY_FILE)

    @property
    def metrics(self) -> dict:
        """What ``evaluate`` wrote for this run's checkpoint."""
        path = result_path(self.checkpoint, "metrics.json")
        return json.loads(path.read_text()) if path.is_file() else {}

    def _test_images(self):
        from vae_lab.data.splits import test_images

        return test_images(self.config)[0].tensors

    def samples(self, n: int = 64, sampler: str | dict = "prior", label: int | None = None, seed: int = 0) -> Image.Image:
        """n decoded samples (a conditional model: of class ``label``, or each class in turn), their
        latents drawn by ``sampler`` (``"gmm"``, ``{"name": "gmm", "components": 20}``, …)."""
        from vae_lab.data.splits import training_images
        from vae_lab.evaluation.inference import decode_images
        from vae_lab.evaluation.samplers import build_sampler, fitted_sampler
        from vae_lab.generate import check_label

        model = self.model
        check_label(model, label)
        chosen = fitted_sampler(build_sampler(sampler), model, *training_images(self.config).tensors, self.checkpoint, seed)
        labels = None
        if model.num_classes:
            labels = torch.full((n,), label) if label is not None else torch.arange(n) % model.num_classes
        images = decode_images(model, chosen.sample(n, model, labels, seed), labels)
        return picture(figures.grid(images, nrow=int(n ** 0.5)))

    def reconstructions(self, n: int = 16) -> Image.Image:
        """The first n test images (top) over their reconstructions from the posterior mean."""
        images, labels = self._test_images()
        return picture(figures.reconstructions(self.model, images[:n], labels[:n]))

    def manifold(self, label: int | None = None) -> Image.Image:
        """z_dim = 2: the 16x16 grid of decoded prior quantiles (a conditional model: of ``label``)."""
        if self.model.z_dim != 2:
            raise VaeLabError(f"manifold: this run has z_dim={self.model.z_dim}; the manifold needs z_dim=2")
        if self.model.num_classes and label is None:
            raise VaeLabError(f"manifold: this model is conditional; give label=0..{self.model.num_classes - 1}")
        return picture(figures.manifold(self.model, label=label))

    def traversal(self) -> Image.Image:
        """One row per latent dimension, most informative first, swept over the prior's quantiles."""
        from vae_lab.evaluation.inference import dimension_information, posterior

        images, labels = self._test_images()
        mu, logvar = posterior(self.model, images[:2000], labels[:2000])
        return picture(figures.traversal(self.model, dimension_information(self.model, mu, logvar)))

    def interpolation(self, first: int = 0, second: int = 1, steps: int = figures.ROW_LENGTH) -> Image.Image:
        """Decoded points between the posterior means of two test images (their indices)."""
        images, labels = self._test_images()
        if not all(isinstance(i, int) and 0 <= i < len(images) for i in (first, second)):
            raise VaeLabError(f"interpolation: indices must be test images 0-{len(images) - 1}")
        index = [first, second]
        return picture(figures.interpolation(self.model, images[index], labels[index], steps))

    def evaluate(self, **options) -> dict:
        """``python -m vae_lab.evaluate run=<this run> ...``: the metrics, also written to metrics.json
        (or ``out``); an existing file is replaced only with ``overwrite=True``."""
        from vae_lab.evaluate import evaluate, DEFAULTS
        from vae_lab.cli import parse_options

        argv = [f"run={self.checkpoint}", *(f"{key}={value}" for key, value in options.items())]
        written = evaluate(parse_options(argv, DEFAULTS, "run.evaluate(k=..., n_samples=...)",
                                         at_least={"k": 1, "n_images": 1, "n_samples": 0}))
        return json.loads(written.read_text())

