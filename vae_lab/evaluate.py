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
  sampler                          how the samples' latents were drawn (vae_lab.evaluation.samplers; ``sampler=gmm``
                                   fits a mixture to the training images' posterior means, once, and
                                   keeps it beside the checkpoint; ``sampler.components=20`` its size)
  classifier_test_accuracy         that classifier's measured accuracy on the test digits
  mig, dci_disentanglement, dci_completeness, dci_informativeness, sap
                                   whether single latent dimensions follow single factors of the test
                                   digits (their morphometrics, vae_lab.morphometrics, and the class):
                                   vae_lab.evaluation.disentanglement, with factors, factor_mi (z_dim x factors)
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

from omegaconf import OmegaConf

from vae_lab.cli import exit_on_error, parse_options
from vae_lab.data.splits import training_images
from vae_lab.errors import VaeLabError
from vae_lab.evaluation.classifier import classifier_for, load_classifier
from vae_lab.evaluation.measure import TRAVERSAL_FILE, measure_run
from vae_lab.evaluation.samplers import build_sampler, fitted_sampler
from vae_lab.io import write_json
from vae_lab.registry import load_plugins
from vae_lab.runs import load_model, result_path

DEFAULTS = {"run": None, "k": 1000, "n_images": 10_000, "n_samples": 10_000, "seed": 0, "checkpoint": "last",
            "sampler": {"name": "prior"}, "out": None, "classifier": None, "data_root": None, "plugins": [],
            "disentanglement": True, "overwrite": False}


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
    result = measure_run(model, config, options.k, options.n_images, options.n_samples, classifier,
                         options.seed, options.data_root, sampler, options.disentanglement,
                         out.with_name(f"{out.stem}-{TRAVERSAL_FILE}") if options.out else result_path(checkpoint, TRAVERSAL_FILE))
    write_json(result, out)
    return out


def main(argv: list[str] | None = None) -> None:
    def command():
        options = parse_options(argv, DEFAULTS, "python -m vae_lab.evaluate run=outputs/<run folder or .ckpt>",
                                at_least={"k": 1, "n_images": 1, "n_samples": 0})
        print(f"wrote {evaluate(options)}")

    exit_on_error(command)


if __name__ == "__main__":
    main()
