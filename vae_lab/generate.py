"""Draw pictures from a trained run.

    python -m vae_lab.generate run=outputs/<run folder> [n=64] [label=7] [between=[0,1]] [sampler=gmm] [out=DIR]
                               [plugins=[my_lab.models]]

Writes into ``out`` (default ``<run folder>/generated``; for a .ckpt outside a run's checkpoints/
folder, ``<file stem>-generated`` beside it):
  samples.png, samples.npy  n samples, array (n, H, W) (grey) or (n, H, W, 3) (colour) float32 in
                            [0, 1], their latents drawn by ``sampler`` (prior, gmm or vae2:
                            vae_lab.evaluation.samplers; a fitted one is fitted once and kept beside the
                            checkpoint), (cvae: of class ``label``, or classes in turn plus labels.npy)
  samples_drawn.png         for a likelihood that draws images of its own (loss=gaussian, logistic,
                            categorical): images drawn from p(x|z) at the same latents, not its means
  digits.png                cvae: one row per class (the prior: the same 10 z in every row; a fitted
                            sampler: 10 draws for that class)
  manifold.png              z_dim = 2: the 16x16 grid of decoded prior quantiles (cvae: needs label)
  interpolation.png         decoded from 10 points between the posterior means of two test images
                            (indices ``between``; cvae: conditioned on ``label`` or the first image)
``run`` may also be a .ckpt file; ``checkpoint`` picks ``last`` (default) or ``best`` of a run
folder; ``seed`` (default 0) fixes the samples; ``data_root`` overrides where a torchvision data set
is read (default: VAE_LAB_DATA when set, else the run's data.root); ``plugins`` names the modules
that registered a model, prior or likelihood of one's own (as when it was trained).
"""
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from torchvision.utils import save_image

from vae_lab.cli import exit_on_error, parse_options
from vae_lab.data.splits import test_images, training_images
from vae_lab.errors import VaeLabError
from vae_lab.evaluation import figures
from vae_lab.evaluation.inference import decode_images
from vae_lab.evaluation.samplers import build_sampler, fitted_sampler
from vae_lab.registry import load_plugins
from vae_lab.runs import load_model, result_path

DEFAULTS = {"run": None, "n": 64, "label": None, "between": [0, 1], "seed": 0, "checkpoint": "last",
            "sampler": {"name": "prior"}, "out": None, "data_root": None, "plugins": []}


def check_label(model, label) -> None:
    if label is None:
        return
    if not model.num_classes:
        raise VaeLabError(f"label={label}: this model is not conditional; labels need model=cvae")
    if not isinstance(label, int) or not 0 <= label < model.num_classes:
        raise VaeLabError(f"label={label} must be a class 0-{model.num_classes - 1}")


def generate(options) -> Path:
    """Writes the files described in the module docstring; returns the folder."""
    load_plugins(options.plugins)
    sampler = build_sampler(OmegaConf.to_container(options.sampler))
    model, config, checkpoint = load_model(options.run, options.checkpoint)
    check_label(model, options.label)
    test_digits, test_labels = test_images(config, options.data_root)[0].tensors
    between = list(options.between)
    if len(between) != 2 or not all(isinstance(i, int) and 0 <= i < len(test_digits) for i in between):
        raise VaeLabError(f"between={between} must be two test-set indices in 0-{len(test_digits) - 1}")

    out = Path(options.out) if options.out else result_path(checkpoint, "generated")
    out.mkdir(parents=True, exist_ok=True)
    sampler = fitted_sampler(sampler, model, *training_images(config, options.data_root).tensors, checkpoint,
                             options.seed)
    labels = None
    if model.num_classes:
        labels = (torch.full((options.n,), options.label) if options.label is not None
                  else torch.arange(options.n) % model.num_classes)
        np.save(out / "labels.npy", labels.numpy())
        rows = torch.arange(model.num_classes).repeat_interleave(figures.ROW_LENGTH)
        z_rows = sampler.sample(len(rows), model, rows, options.seed).view(model.num_classes, figures.ROW_LENGTH, -1)
        save_image(figures.digit_rows(model, z_rows if sampler.fitted else z_rows[0]), out / "digits.png")
    z = sampler.sample(options.n, model, labels, options.seed)
    images = decode_images(model, z, labels)
    # the layout data=images reads: N x H x W grey, N x H x W x C colour
    np.save(out / "samples.npy", (images[:, 0] if images.shape[1] == 1 else images.permute(0, 2, 3, 1)).numpy())
    save_image(figures.grid(images, nrow=int(options.n ** 0.5)), out / "samples.png")
    if figures.draws_differ(model):  # the same latents, images drawn from p(x|z)
        drawn = decode_images(model, z, labels, seed=options.seed)
        save_image(figures.grid(drawn, nrow=int(options.n ** 0.5)), out / "samples_drawn.png")
    if model.z_dim == 2 and (not model.num_classes or options.label is not None):
        save_image(figures.manifold(model, label=options.label), out / "manifold.png")
    save_image(figures.interpolation(model, test_digits[between], test_labels[between], label=options.label),
               out / "interpolation.png")
    return out


def main(argv: list[str] | None = None) -> None:
    def command():
        options = parse_options(argv, DEFAULTS, "python -m vae_lab.generate run=outputs/<run folder or .ckpt>",
                                at_least={"n": 1})
        out = generate(options)
        print(f"wrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out}")

    exit_on_error(command)


if __name__ == "__main__":
    main()
