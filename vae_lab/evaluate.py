"""Measure a trained run on the test digits and write ``metrics.json`` into its folder.

    python -m vae_lab.evaluate run=outputs/<run folder> [k=1000] [n_images=10000] [seed=0] [out=FILE]

Writes (per test sample; what each means: docs/metrics.md):
  test_elbo, test_recon, test_kl   the loss terms with one z ~ q(z|x) each (units of val/…)
  test_nll_bce | test_nll_mse      −L_k, the importance-weighted bound with k samples (nats; for mse
                                   the Gaussian density of σ² = 1/2, so the two never share a key)
  iwae_k, n_images                 how it was measured
  active_units, kl_per_dim         latent dimensions in use (Burda et al.), the KL of each (nats)
  likelihood, binarize             the run's loss and data.binarize (the test digits are binarized alike)
``run`` may also be a .ckpt file; ``out`` defaults to ``<run folder>/metrics.json``; ``data_root``
overrides where the test digits are read (default: VAE_LAB_DATA when set, else the run's data.root).
On a CPU, k=1000 over all 10,000 test digits takes minutes to tens of minutes; k=100 is a quick look.
"""
import json
import os
import sys
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vae_lab import metrics
from vae_lab.checkpoint import load_model
from vae_lab.data import binarized_split, load_mnist
from vae_lab.errors import VaeLabError

DEFAULTS = {"run": None, "k": 1000, "n_images": 10_000, "seed": 0, "out": None, "data_root": None}


def parse(argv: list[str]):
    """key=value arguments over DEFAULTS; unknown keys, a missing run and bad numbers are errors."""
    options = OmegaConf.create(DEFAULTS)
    OmegaConf.set_struct(options, True)
    try:
        options = OmegaConf.merge(options, OmegaConf.from_dotlist(argv))
    except OmegaConfBaseException as error:
        raise VaeLabError(f"{str(error).splitlines()[0]}; options are {', '.join(DEFAULTS)}") from None
    if options.run is None:
        raise VaeLabError("give the run: python -m vae_lab.evaluate run=outputs/<run folder or .ckpt>")
    for key in ("k", "n_images"):
        if not isinstance(options[key], int) or isinstance(options[key], bool) or options[key] < 1:
            raise VaeLabError(f"{key}={options[key]} must be an integer >= 1")
    return options


def load_test_digits(config: dict, data_root: str | None = None):
    """The test images (binarized as the run's data.binarize says) and labels."""
    data = config["data"]
    root = data_root or os.environ.get("VAE_LAB_DATA") or data["root"]
    split = binarized_split(load_mnist(root, train=False, download=False), data.get("binarize", "none"),
                            data.get("seed", config.get("seed", 0)), train=False)
    return split.tensors


def measure(model, config: dict, images, labels, k: int, seed: int = 0) -> dict:
    """The metrics of the module docstring for a model on the given images (see docs/metrics.md)."""
    likelihood = config["loss"]["likelihood"]
    terms = metrics.elbo_terms(model, images, labels, likelihood, seed=seed)
    nll = -metrics.iwae_bound(model, images, labels, likelihood, k=k, seed=seed).mean().item()
    return {
        "test_elbo": terms["elbo"], "test_recon": terms["recon"], "test_kl": terms["kl"],
        f"test_nll_{likelihood}": nll, "iwae_k": k, "n_images": len(images),
        **metrics.latent_metrics(model, images, labels),
        "likelihood": likelihood, "binarize": config["data"].get("binarize", "none"),
    }


def evaluate(options) -> Path:
    """Measures the run and writes the JSON file; returns its path."""
    model, config, checkpoint = load_model(options.run)
    images, labels = load_test_digits(config, options.data_root)
    images, labels = images[:options.n_images], labels[:options.n_images]
    result = measure(model, config, images, labels, options.k, options.seed)
    out = Path(options.out) if options.out else checkpoint.parent.parent / "metrics.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> None:
    try:
        out = evaluate(parse(sys.argv[1:] if argv is None else argv))
    except VaeLabError as error:
        sys.exit(f"error: {error}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
