"""A small MNIST classifier that judges generated digits: its features give the Fréchet distance,
its predictions the class histogram and, for a cvae, whether a sample shows the digit asked for.

    python -m vae_lab.classifier [epochs=3] [out=~/.cache/vae_lab/mnist_classifier.pt] [data_root=...]

trains it on the 60,000 training digits (about a minute per epoch on one CPU core), measures its
accuracy on the 10,000 test digits and caches the weights with that accuracy in ``out`` (default
``$VAE_LAB_CLASSIFIER`` or ``~/.cache/vae_lab/mnist_classifier.pt``). The weights are never
committed nor downloaded: every machine trains its own.
"""
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vae_lab.checkpoint import safe_load
from vae_lab.cli import exit_on_error, parse_options
from vae_lab.data import EpochBatchSampler, data_root, load_mnist
from vae_lab.errors import VaeLabError

DEFAULTS = {"epochs": 3, "out": None, "data_root": None, "seed": 0}


def default_path() -> Path:
    return Path(os.environ.get("VAE_LAB_CLASSIFIER", "~/.cache/vae_lab/mnist_classifier.pt")).expanduser()


class Classifier(nn.Module):
    """(N, 1, 28, 28) images in [0, 1] -> (N, 10) logits; ``features`` gives the (N, 128) layer before them."""

    num_features = 128  # read by torchmetrics' FrechetInceptionDistance

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),   # 32 x 14 x 14
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),  # 64 x 7 x 7
            nn.Flatten(), nn.Linear(64 * 7 * 7, self.num_features), nn.ReLU(),
        )
        self.head = nn.Linear(self.num_features, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Features(nn.Module):
    """The classifier's feature layer as a module of its own, the form torchmetrics' FID takes."""

    num_features = Classifier.num_features

    def __init__(self, classifier: Classifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(x)


@torch.no_grad()
def predict(classifier: Classifier, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Class probabilities (N, 10) of images (N, 1, 28, 28) in [0, 1]."""
    return torch.cat([F.softmax(classifier(x), 1) for x in images.split(batch_size)])


def accuracy(classifier: Classifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of the images whose most probable class is their label."""
    return (predict(classifier, images).argmax(1) == labels).float().mean().item()


def train_classifier(data_root: str, epochs: int = 3, seed: int = 0) -> tuple[Classifier, float]:
    """Adam (lr 1e-3, × 0.3 after each epoch; batches of 128) on the training digits; returns
    (classifier in eval mode, its accuracy on the test digits)."""
    torch.manual_seed(seed)
    images, labels = load_mnist(data_root, train=True, download=False).tensors
    classifier = Classifier()
    optimizer = torch.optim.Adam(classifier.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.3)
    sampler = EpochBatchSampler(len(images), 128, shuffle=True, seed=seed)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for index in sampler:
            loss = F.cross_entropy(classifier(images[index]), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()
    classifier.eval()
    return classifier, accuracy(classifier, *load_mnist(data_root, train=False, download=False).tensors)


def save_classifier(classifier: Classifier, test_accuracy: float, path: str | os.PathLike) -> None:
    """Weights and measured test accuracy, in the file ``load_classifier`` reads."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": classifier.state_dict(), "test_accuracy": test_accuracy}, path)


def load_classifier(path: str | os.PathLike | None = None) -> tuple[Classifier, float]:
    """The cached classifier (eval mode) and its measured test accuracy, or VaeLabError saying how to train it."""
    path = Path(path).expanduser() if path else default_path()
    if not path.is_file():
        raise VaeLabError(f"no classifier at {path}: train it once with python -m vae_lab.classifier")
    saved = safe_load(path, what="classifier file")
    classifier = Classifier()
    accuracy = saved.get("test_accuracy") if isinstance(saved, dict) else None
    try:
        classifier.load_state_dict(saved["state_dict"])
    except (TypeError, KeyError, RuntimeError):
        accuracy = None
    if not isinstance(accuracy, float):
        raise VaeLabError(f"{path}: not a vae_lab classifier file; train it again with python -m vae_lab.classifier")
    return classifier.eval(), accuracy


def main(argv: list[str] | None = None) -> None:
    def command():
        options = parse_options(argv, DEFAULTS, "python -m vae_lab.classifier", at_least={"epochs": 1, "seed": 0})
        out = Path(options.out).expanduser() if options.out else default_path()
        classifier, test_accuracy = train_classifier(data_root(options.data_root), options.epochs, options.seed)
        save_classifier(classifier, test_accuracy, out)
        print(f"test accuracy {test_accuracy:.4f}; wrote {out}")

    exit_on_error(command)


if __name__ == "__main__":
    main()
