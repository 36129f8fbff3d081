"""What a model learned, as pictures: image grids (3, H, W) in [0, 1], and for z_dim = 2 a
matplotlib scatter plot (matplotlib is imported only then: it takes a second to load).

Every function takes a ``vae_lab.models`` model and returns tensors on the CPU; none of them
changes the model or draws from the global random generator, so the same inputs always give
the same picture.
"""
import torch
import torch.nn.functional as F
from torchvision.utils import make_grid

from vae_lab.evaluation.inference import decode_images, posterior
from vae_lab.likelihoods.base import Likelihood

GRID_SIDE = 16  # tiles per side of the manifold and per row of a traversal
ROW_LENGTH = 10  # tiles per class in the rows of a conditional model's picture, and of an interpolation


def grid(images: torch.Tensor, nrow: int) -> torch.Tensor:
    """(N, C, h, w) images in [0, 1] (C = 1 or 3) -> (3, H, W) grid, nrow tiles per row, 2 px padding."""
    return make_grid(images.detach().float().cpu(), nrow=nrow, padding=2, pad_value=1.0)


def prior_quantiles(model, n: int = GRID_SIDE) -> torch.Tensor:
    """(n, z_dim): per latent dimension, the points of the model's prior at equally spaced marginal
    probabilities 0.05 ... 0.95 (for N(0, I), the normal quantiles)."""
    return model.prior.quantiles(torch.linspace(0.05, 0.95, n, dtype=torch.float64)).detach().cpu()


def draws_differ(model) -> bool:
    """Whether the model's likelihood draws images of its own (``Likelihood.sample``) rather than
    giving its mean: the pictures then show a draw beside the mean (a grey level's Bernoulli draw,
    black or white, would show nothing the mean does not)."""
    return type(model.likelihood).sample is not Likelihood.sample


def reconstructions(model, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Originals (first row) over their reconstructions from the posterior mean (second row: the
    likelihood's mean; third, for a likelihood that draws, a draw from it, seed 0)."""
    mu, _ = posterior(model, images, labels)
    rows = [images, decode_images(model, mu, labels)]
    if draws_differ(model):
        rows.append(decode_images(model, mu, labels, seed=0))
    return grid(torch.cat(rows), nrow=len(images))


def samples(model, z: torch.Tensor, seed: int | None = None) -> torch.Tensor:
    """Grid of decoded latents z (N, z_dim), e.g. draws from the prior: the same z, the same tiles;
    the likelihood's means, or with a ``seed`` draws from it."""
    return grid(decode_images(model, z, seed=seed), nrow=int(len(z) ** 0.5))


def digit_rows(model, z: torch.Tensor, seed: int | None = None) -> torch.Tensor:
    """Conditional models: one row per class (0 at the top). z (n, z_dim): column j decodes
    z[j] in every row; z (classes, n, z_dim): row c decodes z[c] (a sampler's draws for class c);
    the likelihood's means, or with a ``seed`` draws from it."""
    classes = model.num_classes
    z = z.expand(classes, *z.shape) if z.dim() == 2 else z
    labels = torch.arange(classes).repeat_interleave(z.shape[1])
    return grid(decode_images(model, z.flatten(0, 1), labels, seed=seed), nrow=z.shape[1])


def manifold_latents(model, n: int = GRID_SIDE) -> torch.Tensor:
    """z_dim = 2: (n*n, 2) latents on the grid of the prior's quantiles; z1 grows rightwards, z2 upwards."""
    q = prior_quantiles(model, n)
    z2, z1 = torch.meshgrid(q[:, 1].flip(0), q[:, 0], indexing="ij")
    return torch.stack([z1.flatten(), z2.flatten()], dim=1)


def manifold(model, n: int = GRID_SIDE, label: int | None = None) -> torch.Tensor:
    """z_dim = 2: the n x n grid of decoded manifold_latents() (a conditional model needs a label)."""
    latents = manifold_latents(model, n)
    labels = None if label is None else torch.full((len(latents),), label)
    return grid(decode_images(model, latents, labels), nrow=n)


def traversal_dims(information: torch.Tensor, max_dims: int = ROW_LENGTH) -> torch.Tensor:
    """The latent dimensions a traversal shows, one per row: the ``max_dims`` most informative
    (largest ``information`` (z_dim,): its KL, or the variance of its posterior mean) first."""
    return information.argsort(descending=True)[:max_dims]


def traversal(model, information: torch.Tensor, max_dims: int = ROW_LENGTH, n: int = GRID_SIDE) -> torch.Tensor:
    """One row per latent dimension of ``traversal_dims``: that dimension sweeps the prior's
    quantiles while all others stay at the prior's median."""
    dims = traversal_dims(information, max_dims)
    q = prior_quantiles(model, n)
    median = model.prior.quantiles(torch.tensor([0.5], dtype=torch.float64)).detach().cpu()  # (1, z_dim)
    z = median.repeat(len(dims), n, 1)
    for row, d in enumerate(dims):
        z[row, :, d] = q[:, d]
    return grid(decode_images(model, z.flatten(0, 1)), nrow=n)


def interpolation(model, images: torch.Tensor, labels: torch.Tensor, steps: int = ROW_LENGTH,
                  label: int | None = None) -> torch.Tensor:
    """One row decoded from ``steps`` points on the line between the posterior means of two images
    (2, C, H, W); a conditional model draws ``label``, or the first image's label."""
    mu, _ = posterior(model, images, labels)
    weights = torch.linspace(0, 1, steps).unsqueeze(1)
    condition = torch.full((steps,), int(labels[0]) if label is None else label)
    return grid(decode_images(model, (1 - weights) * mu[0] + weights * mu[1], condition), nrow=steps)


def factor_traversal(model, information: torch.Tensor, factor_mi, factors: list[str]):
    """The ``traversal``, each row labelled with its latent dimension and the two factors that
    dimension carries most of, with their shares of the factor's entropy (``factor_mi`` (z_dim, K)
    and the K ``factors`` of ``vae_lab.evaluation.disentanglement.disentanglement_scores``); a matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    dims = traversal_dims(information)
    picture = traversal(model, information)
    tile = model.image_shape[1] + 2  # each row: an image and the grid's padding of 2 pixels
    labels = []
    for d in dims.tolist():
        first, second = sorted(range(len(factors)), key=lambda k: -factor_mi[d][k])[:2]
        labels.append(f"z{d}: {factors[first]} {factor_mi[d][first]:.2f}, {factors[second]} {factor_mi[d][second]:.2f}"
                      if factor_mi[d][first] > 0 else f"z{d}: nothing")
    figure, axes = plt.subplots(figsize=(8, 0.45 * len(dims) + 0.9), dpi=100)
    axes.imshow(picture.permute(1, 2, 0).numpy())
    axes.set_yticks([2 + tile * row + tile / 2 - 1 for row in range(len(dims))], labels, fontsize=9)
    axes.set_xticks([])
    axes.set_title("each row sweeps one latent dimension; label: the factors it carries most of,\n"
                   "as shares of their entropy, I(z; factor) / H(factor) (docs/metrics.md)", fontsize=9)
    figure.tight_layout()
    return figure


def latent_scatter(mu: torch.Tensor, labels: torch.Tensor):
    """z_dim = 2: the posterior means (N, 2) of a set of images, coloured by class (one colour
    when the images have no labels); a matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")  # files and TensorBoard only, never a window
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 5), dpi=100)
    if (labels >= 0).all():
        classes = int(labels.max()) + 1
        few = classes <= len(matplotlib.colormaps["tab10"].colors)  # a colour each, or a continuous map
        points = axes.scatter(mu[:, 0], mu[:, 1], c=labels, cmap="tab10" if few else "viridis", s=2,
                              vmin=-0.5, vmax=classes - 0.5)
        figure.colorbar(points, ax=axes, ticks=range(classes), label="class")
    else:
        axes.scatter(mu[:, 0], mu[:, 1], s=2)
    axes.set(xlabel="$z_1$", ylabel="$z_2$", title="posterior means of the test images")
    figure.tight_layout()
    return figure


def kl_heatmap(history: list[torch.Tensor], cell: int = 6) -> torch.Tensor:
    """The mean KL of each latent dimension (rows, dimension 0 on top) at each logged validation
    (columns, oldest on the left) as grey levels, white the largest KL seen: units switching on
    show as rows turning bright, collapsed ones stay black. (3, H, W) in [0, 1]."""
    kl = torch.stack(history, dim=1)  # (z_dim, points)
    image = (kl / kl.max().clamp(min=1e-12)).clamp(0, 1)
    return F.interpolate(image[None, None], scale_factor=cell, mode="nearest")[0].expand(3, -1, -1)
