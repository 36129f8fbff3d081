"""A small classifier per data set that judges generated images: its features give the Fréchet
distance, its predictions the class histogram and, for a cvae, whether a sample shows the class
asked for.

    python -m vae_lab.classifier [data=mnist|fashion_mnist|images] [path=FILE] [epochs=N] [out=FILE] [data_root=DIR]

trains it on the data set's training split (about a minute per epoch on one CPU core; 3 epochs, 10
for Fashion-MNIST, whose classes are harder to tell apart), measures its
accuracy on the test split and caches the weights with that accuracy in ``out`` (default
``$VAE_LAB_CACHE/<data set>_classifier.pt``, the cache folder ``~/.cache/vae_lab`` unless
``VAE_LAB_CACHE`` says otherwise; an arrays file's classifier is named after its content's hash,
and needs labels). The weights are never committed nor downloaded: every machine trains its own.
"""
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vae_lab.io import safe_load
from vae_lab.cli import exit_on_error, parse_options
from vae_lab.data import ARRAYS, MNIST_CLASSES, MNIST_SHAPE, EpochBatchSampler, data_root, dataset, has_labels
from vae_lab.errors import VaeLabError
from vae_lab.io import cache_folder, write_atomically
from vae_lab.registry import DATASETS

DEFAULTS = {"data": "mnist", "path": None, "epochs": None, "out": None, "data_root": None, "seed": 0}
EPOCHS = {"fashion_mnist": 10}  # and 3 for any other data set: MNIST's classifier reaches 99% in 3


def data_key(source: dict) -> str:
    """The data set's name in the cache: mnist, fashion_mnist, or images-<hash of the file>."""
    return dataset(source).cache_key(source["name"])


def default_path(source: dict | None = None) -> Path:
    """Where the classifier of a data set (a run's data config; MNIST when None) is cached."""
    return cache_folder() / f"{data_key(source or {'name': 'mnist'})}_classifier.pt"


def source_of(options) -> dict:
    """The data config (plain values) a tool's ``data``, ``path`` and ``data_root`` options name."""
    if options.data == ARRAYS:
        if not options.path:
            raise VaeLabError(f"data={ARRAYS} needs the file: path=my_images.npz")
        return {"name": ARRAYS, "path": str(Path(options.path).expanduser().resolve())}
    DATASETS.get(options.data)
    return {"name": options.data, "root": data_root(options.data_root), "download": False}


def train_command(source: dict) -> str:
    if source["name"] == ARRAYS:
        return f"python -m vae_lab.classifier data={ARRAYS} path={source['path']}"
    return f"python -m vae_lab.classifier data={source['name']}"


class Classifier(nn.Module):
    """(N, C, H, W) images in [0, 1] -> (N, num_classes) class logits; ``features`` gives the (N, 128)
    layer before them. Two 5x5 convolutions, each halving the image by max-pooling."""

    num_features = 128  # read by torchmetrics' FrechetInceptionDistance

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        colours, height, width = image_shape
        self.image_shape, self.num_classes = tuple(image_shape), num_classes
        self.body = nn.Sequential(
            nn.Conv2d(colours, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),  # 32 x H/2 x W/2
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),       # 64 x H/4 x W/4
            nn.Flatten(), nn.Linear(64 * (height // 4) * (width // 4), self.num_features), nn.ReLU(),
        )
        self.head = nn.Linear(self.num_features, num_classes)

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
    """Class probabilities (N, num_classes) of images (N, C, H, W) in [0, 1]."""
    return torch.cat([F.softmax(classifier(x), 1) for x in images.split(batch_size)])


def accuracy(classifier: Classifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of the images whose most probable class is their label."""
    return (predict(classifier, images).argmax(1) == labels).float().mean().item()


def train_classifier(source: dict, epochs: int | None = None, seed: int = 0) -> tuple[Classifier, float]:
    """Adam (batches of 128; lr 1e-3, multiplied after each epoch by 0.3^(3/epochs): 0.3 when
    epochs=3, the same fall over the run whatever its length) on the training split of the data set ``source`` names (a run's data config), for
    ``epochs`` (default: ``EPOCHS`` of the data set, else 3); returns (classifier in eval mode, its
    test accuracy)."""
    epochs = epochs or EPOCHS.get(source["name"], 3)
    data = dataset(source)
    train_set, test_set = data.load(train=True), data.load(train=False)
    if not (has_labels(train_set) and has_labels(test_set)):
        raise VaeLabError(f"{source.get('path', source['name'])}: has no labels, so no classifier can be trained for it")
    torch.manual_seed(seed)
    images, labels = train_set.tensors
    classifier = Classifier(tuple(images.shape[1:]), data.num_classes)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.3 ** (3 / epochs))
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
    return classifier, accuracy(classifier, *test_set.tensors)


def save_classifier(classifier: Classifier, test_accuracy: float, path: str | os.PathLike) -> None:
    """Weights and measured test accuracy, in the file ``load_classifier`` reads."""
    saved = {"state_dict": classifier.state_dict(), "test_accuracy": test_accuracy,
             "image_shape": list(classifier.image_shape), "num_classes": classifier.num_classes}
    write_atomically(Path(path).expanduser(), lambda f: torch.save(saved, f))


def load_classifier(path: str | os.PathLike) -> tuple[Classifier, float]:
    """The classifier cached in ``path`` (eval mode) and its measured test accuracy, or VaeLabError."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise VaeLabError(f"no classifier at {path}: train it once with python -m vae_lab.classifier")
    saved = safe_load(path, what="classifier file")
    accuracy = saved.get("test_accuracy") if isinstance(saved, dict) else None
    try:  # files from before the shape was stored are MNIST's (or Fashion-MNIST's)
        shape, classes = saved.get("image_shape", MNIST_SHAPE), saved.get("num_classes", MNIST_CLASSES)
        if not (isinstance(classes, int) and len(shape) == 3 and all(isinstance(n, int) for n in shape)):
            raise TypeError
        classifier = Classifier(tuple(shape), classes)
        classifier.load_state_dict(saved["state_dict"])
    except (TypeError, KeyError, RuntimeError, ValueError, AttributeError):
        accuracy = None
    if not isinstance(accuracy, float):
        raise VaeLabError(f"{path}: not a vae_lab classifier file; train it again with python -m vae_lab.classifier")
    return classifier.eval(), accuracy


def classifier_for(source: dict) -> tuple[Classifier, float]:
    """The cached classifier of the data set ``source`` names (a run's data config), or
    VaeLabError saying how to train it."""
    if not (path := default_path(source)).is_file():
        raise VaeLabError(f"no classifier for {source['name']} at {path}: train it once with {train_command(source)}")
    return load_classifier(path)


def main(argv: list[str] | None = None) -> None:
    def command():
        options = parse_options(argv, DEFAULTS, "python -m vae_lab.classifier", at_least={"epochs": 1, "seed": 0})  # epochs=None: the data set's default
        source = source_of(options)
        out = Path(options.out).expanduser() if options.out else default_path(source)
        classifier, test_accuracy = train_classifier(source, options.epochs, options.seed)
        save_classifier(classifier, test_accuracy, out)
        print(f"test accuracy {test_accuracy:.4f}; wrote {out}")

    exit_on_error(command)


if __name__ == "__main__":
    main()
