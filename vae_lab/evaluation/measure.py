"""Everything ``python -m vae_lab.evaluate`` (and ``callbacks=evaluate``) measures of a trained
model on its run's test images, in one dict (``measure_run``; what each number means: the
evaluate command's docstring and docs/metrics.md)."""
import math
from pathlib import Path

import torch

from vae_lab.data.splits import test_images
from vae_lab.errors import VaeLabError
from vae_lab.evaluation import metrics
from vae_lab.evaluation.disentanglement import MIN_IMAGES, disentanglement_scores
from vae_lab.evaluation.figures import factor_traversal
from vae_lab.evaluation.inference import ACTIVE_UNIT_VARIANCE, dimension_information, posterior
from vae_lab.evaluation.morphometrics import morphometrics_for
from vae_lab.evaluation.samplers import FromPrior
from vae_lab.registry import name_of

TRAVERSAL_FILE = "traversal_factors.png"


def factor_metrics(source: dict, grey: torch.Tensor, codes: torch.Tensor, labels: torch.Tensor, seed: int = 0) -> dict:
    """``vae_lab.evaluation.disentanglement.disentanglement_scores`` of the codes (n, z_dim), posterior means, of the first n
    test images against their factors: the morphometrics of the grey test images (N, 1, H, W) of
    the data set ``source`` names (cached: ``morphometrics_for``) and the
    labels (n,). Inactive dimensions (``metrics.active_units``) count as constant: their
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
        return disentanglement_scores((codes * active).numpy(), measured, labels.numpy(), seed)
    except VaeLabError as error:
        return {"disentanglement": f"not measured: {error}"}


def measure_run(model, config: dict, k: int = 1000, n_images: int = 10_000, n_samples: int = 0,
            classifier: tuple | None = None, seed: int = 0, root: str | None = None, sampler=None,
            disentanglement: bool = True, traversal_path: Path | None = None) -> dict:
    """The metrics of the module docstring for a model in eval mode (see docs/metrics.md).

    ``classifier`` is what ``vae_lab.evaluation.classifier.classifier_for`` returns; the sample metrics need it
    and n_samples > 0, and draw their latents from ``sampler`` (a ready ``vae_lab.evaluation.samplers`` one;
    default the prior). With ``disentanglement``, the metrics of ``factor_metrics`` and, for a
    model that draws without a label, the labelled traversal (``vae_lab.evaluation.figures.factor_traversal``)
    in ``traversal_path``.
    """
    grey, seen = test_images(config, root)
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
    if model.likelihood.discrete_8bit:  # a probability over the 256 levels: the papers' unit too
        result["test_bits_per_dim"] = nll / (model.pixels * math.log(2))
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
