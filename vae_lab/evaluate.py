"""Measure a trained run on the test digits and write ``metrics.json`` into its folder.

    python -m vae_lab.evaluate run=outputs/<run folder> [k=1000] [n_images=10000] [n_samples=10000]
                               [seed=0] [checkpoint=last] [sampler=prior|gmm|vae2] [out=FILE]
                               [classifier=FILE] [data_root=DIR] [plugins=[my_lab.models]] [disentanglement=true]
                               [overwrite=false]

Writes (per test sample; what each means: docs/metrics.md):
  test_elbo, test_recon, test_kl   the loss terms with one z ~ q(z|x) each (units of val/…)
  test_nll_<likelihood>            −L_k, the importance-weighted bound with k samples, e.g. test_nll_bce
                                   (nats; for mse the Gaussian density of σ² = 1/2: likelihoods never
                                   share a key)
  iwae_k, n_images                 how it was measured
  active_units, kl_per_dim         latent dimensions in use (Burda et al.), the KL of each (nats)
  test_kl_z1, test_kl_z2, active_units_z2
                                   model=hvae: each stochastic layer's KL (nats) and the top's active units
  likelihood, binarize             the run's loss and data.binarize (the test digits are binarized alike)
  fid, class_entropy, mean_max_prob, conditional_accuracy (cvae)
                                   what the classifier of vae_lab.classifier makes of n_samples samples
                                   (n_samples=0 skips them; the classifier must be trained once first)
  sampler                          how the samples' latents were drawn (vae_lab.samplers; ``sampler=gmm``
                                   fits a mixture to the training images' posterior means, once, and
                                   keeps it beside the checkpoint; ``sampler.components=20`` its size)
  classifier_test_accuracy         that classifier's measured accuracy on the test digits
  mig, dci_disentanglement, dci_completeness, dci_informativeness, sap
                                   whether single latent dimensions follow single factors of the test
                                   digits (their morphometrics, vae_lab.morphometrics, and the class):
                                   vae_lab.disentanglement, with factors, factor_mi (z_dim x factors)
                                   and factor_per_dim; ``disentanglement=false`` skips them (seconds; the
                                   morphometrics are measured once per data set and cached). Colour
                                   images, or fewer than 1,000 images, leave a one-line reason under
                                   ``disentanglement`` instead; ``traversal_factors.png`` beside
                                   metrics.json (``<out stem>-traversal_factors.png`` with ``out``)
                                   labels each traversal row with its dimension's factors
``run`` may also be a .ckpt file; ``checkpoint`` picks ``last`` (the state after the last epoch) or
``best`` (lowest val/loss) of a run folder; ``out`` defaults to ``<run folder>/metrics.json`` (for a
.ckpt outside a run's checkpoints/ folder, ``<file stem>-metrics.json`` beside it); ``plugins`` names
the modules that registered a model, prior or likelihood of one's own (as when it was trained);
``classifier`` to the cached classifier of the run's data set (vae_lab.classifier); ``data_root``
overrides where a torchvision data set is read (default: VAE_LAB_DATA when set, else the run's data.root).
A metrics file is a result: one that exists is refused before anything is measured, unless
``overwrite=true`` (``out`` writes another beside it).
On a CPU, k=1000 over all 10,000 test digits takes minutes to tens of minutes; k=100 is a quick look.
"""
import json
from pathlib import Path

import torch
from omegaconf import OmegaConf

from vae_lab import metrics
from vae_lab.checkpoint import load_model, result_path
from vae_lab.classifier import classifier_for, load_classifier
from vae_lab.cli import exit_on_error, parse_options
from vae_lab.data import binarized_split, data_root, load_split, seen_training_split
from vae_lab.disentanglement import MIN_IMAGES, measure as disentanglement_metrics
from vae_lab.figures import factor_traversal
from vae_lab.inference import ACTIVE_UNIT_VARIANCE, dimension_information, posterior
from vae_lab.morphometrics import morphometrics_for
from vae_lab.registry import load_plugins, name_of
from vae_lab.samplers import FromPrior, build_sampler, fitted_sampler
from vae_lab.errors import VaeLabError
from vae_lab.io import write_json
from vae_lab.summary import Recording

DEFAULTS = {"run": None, "k": 1000, "n_images": 10_000, "n_samples": 10_000, "seed": 0, "checkpoint": "last",
            "sampler": {"name": "prior"}, "out": None, "classifier": None, "data_root": None, "plugins": [],
            "disentanglement": True, "overwrite": False}
TRAVERSAL_FILE = "traversal_factors.png"


def root_of(data: dict, given: str | None) -> str | None:
    """Where a data set with a ``root`` (torchvision's) is read by the tools (``vae_lab.data.data_root``)."""
    return data_root(given, data["root"]) if "root" in data else None


def training_images(config: dict, root: str | None = None):
    """The run's training images as its model sees them outside training batches
    (``vae_lab.data.seen_training_split``): what a sampler is fitted on."""
    data = config["data"]
    train = load_split(data, train=True, root=root_of(data, root))
    return seen_training_split(train, data.get("binarize", "none"), data["seed"])


def load_test_images(config: dict, root: str | None = None):
    """(the run's grey test images, the same binarized as its data.binarize says); TensorDatasets.
    ``root`` overrides where a torchvision data set is read (else VAE_LAB_DATA, else the run's)."""
    data = config["data"]
    grey = load_split(data, train=False, root=root_of(data, root))
    return grey, binarized_split(grey, data.get("binarize", "none"), data["seed"], train=False)


def factor_metrics(source: dict, grey: torch.Tensor, codes: torch.Tensor, labels: torch.Tensor, seed: int = 0) -> dict:
    """``vae_lab.disentanglement.measure`` of the codes (n, z_dim), posterior means, of the first n
    test images against their factors: the morphometrics of the grey test images (N, 1, H, W) of
    the data set ``source`` names (cached: ``vae_lab.morphometrics.morphometrics_for``) and the
    labels (n,). Inactive dimensions (``vae_lab.metrics.active_units``) count as constant: their
    means vary by less than a tenth of the prior's spread, under the posterior's noise, so the
    decoder cannot read them, though the metrics, blind to scale, would. Where the metrics cannot be
    measured (colour images, too few), {'disentanglement': 'not measured: <why>'}."""
    if grey.shape[1] != 1:
        return {"disentanglement": "not measured: colour images (the morphometrics measure grey ones)"}
    if len(codes) < MIN_IMAGES:
        return {"disentanglement": f"not measured: at least {MIN_IMAGES} images are needed, {len(codes)} given"}
    measured = {name: values[:len(codes)] for name, values in morphometrics_for(source, grey).items()}
    active = codes.var(0) > ACTIVE_UNIT_VARIANCE
    try:
        return disentanglement_metrics((codes * active).numpy(), measured, labels.numpy(), seed)
    except VaeLabError as error:
        return {"disentanglement": f"not measured: {error}"}


def measure(model, config: dict, k: int = 1000, n_images: int = 10_000, n_samples: int = 0,
            classifier: tuple | None = None, seed: int = 0, root: str | None = None, sampler=None,
            disentanglement: bool = True, traversal_path: Path | None = None) -> dict:
    """The metrics of the module docstring for a model in eval mode (see docs/metrics.md).

    ``classifier`` is what ``vae_lab.classifier.classifier_for`` returns; the sample metrics need it
    and n_samples > 0, and draw their latents from ``sampler`` (a ready ``vae_lab.samplers`` one;
    default the prior). With ``disentanglement``, the metrics of ``factor_metrics`` and, for a
    model that draws without a label, the labelled traversal (``vae_lab.figures.factor_traversal``)
    in ``traversal_path``.
    """
    grey, seen = load_test_images(config, root)
    images, labels = (t[:n_images] for t in seen.tensors)
    likelihood = name_of(config["loss"]["likelihood"])
    terms = metrics.elbo_terms(model, images, labels, seed=seed)
    nll = -metrics.iwae_bound(model, images, labels, k=k, seed=seed).mean().item()
    mu, logvar = posterior(model, images, labels)
    result = {
        **{f"test_{name}": value for name, value in terms.items()},
        f"test_nll_{likelihood}": nll, "iwae_k": k, "n_images": len(images),
        **metrics.latent_metrics(model, mu, logvar),
        "likelihood": likelihood, "binarize": config["data"].get("binarize", "none"),
    }
    if disentanglement:
        result.update(factor_metrics(config["data"], grey.tensors[0], mu, labels, seed))
        if "factor_mi" in result and not model.num_classes and traversal_path is not None:
            from matplotlib import pyplot

            figure = factor_traversal(model, dimension_information(model, mu, logvar), result["factor_mi"], result["factors"])
            figure.savefig(traversal_path)
            pyplot.close(figure)
    if n_samples and classifier:
        if classifier[0].image_shape != tuple(images.shape[1:]):
            raise VaeLabError(f"the classifier judges images of {classifier[0].image_shape}, this run's are "
                              f"{tuple(images.shape[1:])}; train one for its data (python -m vae_lab.classifier)")
        # FID against the grey digits: samples are pixel probabilities, the mean of a binarized draw
        sampler = sampler or FromPrior()
        result.update(metrics.sample_quality(model, classifier[0], grey.tensors[0], n_samples, seed, sampler=sampler),
                      n_samples=n_samples, sampler=sampler.tag(), classifier_test_accuracy=classifier[1])
    return result


def held_in(path: Path) -> str:
    """What an existing metrics file holds, in words, for the line that refuses to replace it."""
    try:
        found = json.loads(path.read_text())
        k, n_images = found["iwae_k"], found["n_images"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        k = n_images = None
    if type(k) is int and type(n_images) is int:
        return f"the metrics of k={k} over {n_images:,} test images"
    return "a file"


def evaluate(options) -> Path:
    """Measures the run and writes the JSON file; returns its path."""
    # a classifier file given is checked first; the default one is the run's data set's
    load_plugins(options.plugins)
    given = load_classifier(options.classifier) if options.n_samples and options.classifier else None
    sampler = build_sampler(OmegaConf.to_container(options.sampler))
    model, config, checkpoint = load_model(options.run, options.checkpoint)
    out = Path(options.out) if options.out else result_path(checkpoint, "metrics.json")
    if out.exists() and not options.overwrite:  # before anything is measured: k=5000 takes tens of minutes
        raise VaeLabError(f"{out} already holds {held_in(out)}; write these elsewhere with out=FILE, "
                          "or replace it with overwrite=true")
    classifier = given or (classifier_for(config["data"]) if options.n_samples else None)
    if options.n_samples:
        sampler = fitted_sampler(sampler, model, *training_images(config, options.data_root).tensors, checkpoint,
                                 options.seed)
    result = measure(model, config, options.k, options.n_images, options.n_samples, classifier,
                     options.seed, options.data_root, sampler, options.disentanglement,
                     out.with_name(f"{out.stem}-{TRAVERSAL_FILE}") if options.out else result_path(checkpoint, TRAVERSAL_FILE))
    write_json(result, out)
    return out


class EvaluateAtEnd(Recording):
    """At the end of training, ``measure`` the model into ``<run folder>/metrics.json`` and the
    run's summary (and so the HPARAMS table), and with ``disentanglement`` the labelled traversal
    into ``traversal_factors.png``. ``n_samples > 0`` needs the cached classifier."""

    def __init__(self, k: int = 1000, n_images: int = 10_000, n_samples: int = 0, disentanglement: bool = True):
        if min(k - 1, n_images - 1, n_samples) < 0:
            raise ValueError(f"k={k}, n_images={n_images}, n_samples={n_samples}: k and n_images must be >= 1, "
                             "n_samples >= 0")
        self.k, self.n_images, self.n_samples, self.disentanglement = k, n_images, n_samples, disentanglement
        self.classifier, self.result = None, {}

    def check(self, datamodule) -> None:
        # a missing classifier fails the run before training, not after it
        if self.n_samples:
            self.classifier = classifier_for(datamodule.source)

    def on_train_end(self, trainer, pl_module):
        # on the training device still (Lightning moves the model to the CPU before on_fit_end)
        if not trainer.is_global_zero:  # with DDP, the first process measures
            return
        model, seed = pl_module.model.eval(), pl_module.seed  # training is over
        sampler = build_sampler(pl_module.config["sampler"])
        if self.n_samples:
            sampler = fitted_sampler(sampler, model, *trainer.datamodule.fit_set.tensors,
                                     Path(trainer.checkpoint_callback.last_model_path), seed)
        folder = Path(trainer.default_root_dir)
        self.result = measure(model, pl_module.config, self.k, self.n_images, self.n_samples, self.classifier,
                              seed, sampler=sampler, disentanglement=self.disentanglement,
                              traversal_path=folder / TRAVERSAL_FILE)
        write_json(self.result, folder / "metrics.json")

    def record(self) -> dict:
        return {"metrics": self.result}


def main(argv: list[str] | None = None) -> None:
    def command():
        options = parse_options(argv, DEFAULTS, "python -m vae_lab.evaluate run=outputs/<run folder or .ckpt>",
                                at_least={"k": 1, "n_images": 1, "n_samples": 0})
        print(f"wrote {evaluate(options)}")

    exit_on_error(command)


if __name__ == "__main__":
    main()
