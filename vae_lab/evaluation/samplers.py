"""How latents are drawn for samples: from the prior, or from a density fitted to where the
training images sit in latent space.

    prior  z ~ p(z), the model's own prior (``vae_lab.priors``), at temperature τ
    gmm    a Gaussian mixture fitted to the training images' posterior means (Ghosh et al. 2020),
           by scikit-learn's EM
    vae2   a second-stage VAE trained on those means, decoded from u ~ N(0, I) (Dai & Wipf 2019)

A sampler is chosen by name from ``vae_lab.registry.SAMPLERS`` (``build_sampler``) and,
for a conditional model, fitted per class, so that asking for a 7 draws from where the 7s sit. A
fitted sampler is saved as plain arrays (.npz, read with allow_pickle=False) beside the checkpoint
it was fitted for, and reused: ``fitted_sampler``. ``sample(n, model, labels, seed)`` gives (n, z_dim)
float latents on the CPU; every draw comes from a generator seeded by ``seed``.
"""
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vae_lab.arguments import PositiveFloat, PositiveInt
from vae_lab.errors import VaeLabError
from vae_lab.io import write_atomically
from vae_lab.evaluation.inference import posterior
from vae_lab.models.base import mlp
from vae_lab.priors import StandardNormal
from vae_lab.registry import SAMPLERS


@SAMPLERS.register("prior")
class FromPrior:
    """z ~ p(z), the model's prior, at temperature τ (for N(0, I): N(0, τ² I)); τ < 1 trades variety
    for typical samples."""

    fitted = False

    def __init__(self, temperature: PositiveFloat = 1.0):
        self.temperature = temperature

    def tag(self) -> str:
        return f"prior-t{self.temperature:g}"

    def sample(self, n: int, model, labels: torch.Tensor | None = None, seed: int = 0) -> torch.Tensor:
        return model.prior.sample(n, torch.Generator().manual_seed(seed), self.temperature).detach().cpu()


def per_class(labels: torch.Tensor | None, n: int) -> dict[int, torch.Tensor]:
    """{class: indices of the n draws asked for it}; all draws under class -1 without labels."""
    if labels is None:
        return {-1: torch.arange(n)}
    return {int(c): (labels == c).nonzero().flatten() for c in labels.unique()}


class Fitted:
    """A density fitted to posterior means, one per class (key -1 when it is not conditional).
    Subclasses implement ``fit_one(mu, seed) -> dict of arrays`` and ``sample_one(arrays, n, generator)``."""

    fitted = True

    def fit(self, mu: torch.Tensor, labels: torch.Tensor | None, seed: int = 0) -> None:
        """mu (N, z_dim) posterior means of the training images; labels (N,) for a conditional model."""
        groups = {-1: mu} if labels is None else {int(c): mu[labels == c] for c in labels.unique()}
        self.arrays = {}
        for key, points in groups.items():
            for name, array in self.fit_one(points, seed).items():
                self.arrays[f"{key}/{name}"] = array

    def classes(self) -> list[int]:
        return sorted({int(name.split("/")[0]) for name in self.arrays})

    def part(self, key: int) -> dict[str, np.ndarray]:
        return {name.split("/")[1]: a for name, a in self.arrays.items() if int(name.split("/")[0]) == key}

    def sample(self, n: int, model, labels: torch.Tensor | None = None, seed: int = 0) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        z = torch.empty(n, model.z_dim)
        for key, index in per_class(labels, n).items():
            if key not in self.classes():
                raise VaeLabError(f"the sampler was fitted without class {key}; it knows {self.classes()}")
            z[index] = self.sample_one(self.part(key), len(index), generator)
        return z

    def save(self, path: Path) -> None:
        write_atomically(path, lambda f: np.savez(f, **self.arrays))

    def load(self, path: Path) -> None:
        """The arrays of ``path``, checked against what ``fit`` writes; VaeLabError naming the file."""
        try:
            with np.load(path, allow_pickle=False) as saved:
                arrays = {name: saved[name] for name in saved.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            raise VaeLabError(f"{path}: not a readable sampler file ({' '.join(str(error).split())}); "
                              "delete it to fit the sampler again") from None
        if not arrays or not all(name.partition("/")[0].lstrip("-").isdigit() for name in arrays):
            raise VaeLabError(f"{path}: not a {self.tag()} sampler file (arrays {', '.join(sorted(arrays))}); "
                              "delete it to fit the sampler again")
        self.arrays = arrays
        try:  # a draw of each class proves the arrays fit together
            for key in self.classes():
                self.sample_one(self.part(key), 2, torch.Generator().manual_seed(0))
        except (KeyError, ValueError, RuntimeError, IndexError) as error:
            raise VaeLabError(f"{path}: not a {self.tag()} sampler file ({' '.join(str(error).split())}); "
                              "delete it to fit the sampler again") from None


@SAMPLERS.register("gmm")
class GaussianMixture(Fitted):
    """A mixture of ``components`` full-covariance Gaussians, fitted by scikit-learn's EM
    (k-means initialisation, seeded) to the posterior means."""

    def __init__(self, components: PositiveInt = 10):
        self.components = components

    def tag(self) -> str:
        return f"gmm-{self.components}"

    def fit_one(self, mu: torch.Tensor, seed: int) -> dict[str, np.ndarray]:
        from sklearn.mixture import GaussianMixture as SklearnMixture  # scikit-learn loads slowly

        if len(mu) < self.components:
            raise VaeLabError(f"sampler.components={self.components}, but only {len(mu)} images to fit them to")
        mixture = SklearnMixture(self.components, covariance_type="full", random_state=seed, reg_covar=1e-5)
        mixture.fit(mu.double().numpy())
        return {"weights": mixture.weights_, "means": mixture.means_, "cholesky": np.linalg.cholesky(mixture.covariances_)}

    def sample_one(self, arrays: dict, n: int, generator: torch.Generator) -> torch.Tensor:
        weights, means, cholesky = (torch.from_numpy(arrays[k]).double() for k in ("weights", "means", "cholesky"))
        component = torch.multinomial(weights / weights.sum(), n, replacement=True, generator=generator)
        eps = torch.randn(n, means.shape[1], generator=generator, dtype=torch.double)
        return (means[component] + (cholesky[component] @ eps.unsqueeze(-1)).squeeze(-1)).float()


class StageTwo(nn.Module):
    """The second-stage VAE: z (z_dim) -> hidden -> u (z_dim) and back, Gaussian decoder with a
    learned scalar variance, as in Dai & Wipf (2019)."""

    def __init__(self, z_dim: int, hidden: int):
        super().__init__()
        self.encoder = mlp([z_dim, hidden, hidden], relu_last=True)
        self.mu, self.logvar = nn.Linear(hidden, z_dim), nn.Linear(hidden, z_dim)
        self.decoder = mlp([z_dim, hidden, hidden, z_dim])
        self.log_gamma = nn.Parameter(torch.zeros(()))
        self.prior = StandardNormal(z_dim)  # p(u) = N(0, I): the second stage's own prior

    def loss(self, z: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        h = self.encoder(z)
        mu, logvar = self.mu(h), self.logvar(h)
        mean = self.decoder(mu + torch.exp(0.5 * logvar) * eps)
        nll = 0.5 * ((z - mean).pow(2) / self.log_gamma.exp() + self.log_gamma).sum(1)
        return (nll + self.prior.kl(mu, logvar, None)).mean()


@SAMPLERS.register("vae2")
class SecondStage(Fitted):
    """A small VAE trained for ``epochs`` on the posterior means (Adam, lr 1e-3, batches of 256);
    a draw decodes u ~ N(0, I) to z (Dai & Wipf 2019, "Diagnosing and Enhancing VAE Models")."""

    def __init__(self, hidden: PositiveInt = 512, epochs: PositiveInt = 30):
        self.hidden, self.epochs = hidden, epochs

    def tag(self) -> str:
        return f"vae2-{self.hidden}-{self.epochs}"

    def fit_one(self, mu: torch.Tensor, seed: int) -> dict[str, np.ndarray]:
        generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        stage = StageTwo(mu.shape[1], self.hidden)
        optimizer = torch.optim.Adam(stage.parameters(), lr=1e-3)
        for _ in range(self.epochs):
            for index in torch.randperm(len(mu), generator=generator).split(256):
                loss = stage.loss(mu[index], torch.randn(len(index), mu.shape[1], generator=generator))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        return {name: t.detach().numpy() for name, t in stage.state_dict().items()}

    def sample_one(self, arrays: dict, n: int, generator: torch.Generator) -> torch.Tensor:
        z_dim = arrays["mu.weight"].shape[0]
        stage = StageTwo(z_dim, arrays["mu.weight"].shape[1])
        stage.load_state_dict({name: torch.from_numpy(a) for name, a in arrays.items()})
        with torch.no_grad():
            return stage.decoder(stage.prior.sample(n, generator))


def build_sampler(config: Mapping | str):
    """``{"name": a registered sampler, setting: value, ...}`` (or just the name) -> the sampler, with
    its settings checked against the class's signature; VaeLabError naming the first bad one."""
    return SAMPLERS.build(config)


def fitted_sampler(sampler, model, train_images: torch.Tensor, train_labels: torch.Tensor, checkpoint: Path,
                   seed: int = 0):
    """The sampler ready to draw for ``model``: the prior as it is; a fitted one loaded from beside
    ``checkpoint`` (``<checkpoint stem>.<tag>-seed<seed>.npz``) when it was fitted before, else
    fitted on the training images' posterior means (per class for a conditional model) and saved
    there."""
    if not sampler.fitted:
        return sampler
    path = sampler_file(checkpoint, sampler, seed)
    if path.is_file():
        sampler.load(path)
        return sampler
    mu, _ = posterior(model, train_images, train_labels)
    sampler.fit(mu, train_labels if model.num_classes else None, seed)
    sampler.save(path)
    return sampler


def sampler_file(checkpoint: Path, sampler, seed: int) -> Path:
    return Path(checkpoint).with_name(f"{Path(checkpoint).stem}.{sampler.tag()}-seed{seed}.npz")
