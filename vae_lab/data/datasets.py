"""The data sets, read into memory as tensors.

They are registered in ``vae_lab.registry.DATASETS`` and chosen by ``data.name``
(vae_lab/conf/data/*.yaml): ``mnist`` and ``fashion_mnist`` through torchvision's dataset classes
and folder layout (downloaded, or read from a local copy under ``data.root``), and ``images``, a
user's own arrays file (.npz or .npy of N x H x W or N x H x W x C images, C = 1 or 3, labels
optional). Each split is decoded once into a float tensor (N, C, H, W) with pixels in [0, 1] and
int64 labels (N,) (-1 when the file has none); the data module (``vae_lab.data.module``) says
what it serves (``image_shape``, ``num_classes``), and the models, metrics and pictures take it
from there.
"""
import hashlib
import math
import os
import struct
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset
from torchvision.datasets import MNIST, FashionMNIST

from vae_lab.errors import VaeLabError
from vae_lab.registry import DATASETS

MNIST_SHAPE = (1, 28, 28)  # MNIST and Fashion-MNIST: 28x28 grey images ...
MNIST_CLASSES = 10  # ... of ten classes, labelled 0..9
ARRAYS = "images"  # data.name of a user's own arrays file
NO_LABEL = -1  # the label of images from a file without labels
MIN_SIDE = 8  # pixels: the smallest height and width an arrays file may have
# What every data config holds beside its data set's own settings (ImageDataModule's arguments, and
# what the run records about what was read).
COMMON_KEYS = ("_target_", "name", "batch_size", "seed", "binarize", "image_shape", "num_classes")


def _idx_header(path: Path, magic: int, ndim: int) -> tuple[int, ...]:
    """The dimensions (count, ...) declared by an IDX file, checked against its magic number and size."""
    header_bytes, size = 4 * (1 + ndim), path.stat().st_size
    if size < header_bytes:
        raise VaeLabError(f"{path}: truncated ({size} bytes, shorter than the IDX header)")
    with open(path, "rb") as f:
        found_magic, *dims = struct.unpack(f">{1 + ndim}i", f.read(header_bytes))  # big-endian int32s
    if found_magic != magic:
        raise VaeLabError(f"{path}: wrong magic number {found_magic} (expected {magic}); not an IDX file of this kind")
    expected = header_bytes + math.prod(dims)  # one byte per pixel or label
    if size != expected:
        problem = "truncated" if size < expected else "has trailing bytes"
        raise VaeLabError(f"{path}: {problem}: header declares {'x'.join(map(str, dims))} bytes of data "
                          f"({expected} bytes in all), file has {size}")
    return tuple(dims)


def check_idx_files(images: Path, labels: Path) -> None:
    """Raise VaeLabError naming the file unless images and labels are whole IDX files that agree
    (MNIST's layout, which Fashion-MNIST shares).

    torchvision reads whatever the header says without these checks, so a bad file would otherwise
    crash with a shape error or, worse, load as a partial data set.
    """
    n_images, rows, cols = _idx_header(images, magic=2051, ndim=3)
    if (rows, cols) != (28, 28):
        raise VaeLabError(f"{images}: images of {rows}x{cols} pixels, expected 28x28")
    (n_labels,) = _idx_header(labels, magic=2049, ndim=1)
    if n_labels != n_images:
        raise VaeLabError(f"{labels}: {n_labels} labels, but {images.name} holds {n_images} images")
    values = torch.frombuffer(bytearray(labels.read_bytes()[8:]), dtype=torch.uint8)
    if values.max() > 9:
        index = int(values.argmax())
        raise VaeLabError(f"{labels}: label {int(values[index])} at index {index} is not a class 0..9")


def load_torchvision(name: str, root: str | os.PathLike, train: bool, download: bool) -> TensorDataset:
    """One split of ``mnist`` or ``fashion_mnist`` (``read_torchvision``)."""
    return read_torchvision(DATASETS.get(name).torchvision, root, train, download)


def read_torchvision(dataset_class: type, root: str | os.PathLike, train: bool, download: bool) -> TensorDataset:
    """One split of torchvision's MNIST or FashionMNIST as TensorDataset(images (N, 1, 28, 28) float
    in [0, 1], labels (N,) int64), read from ``<root>/<MNIST|FashionMNIST>/raw/`` or downloaded."""
    root = Path(root).expanduser()
    raw = root / dataset_class.__name__ / "raw"
    how_to_point = (f"set data.root=... or VAE_LAB_DATA to a folder holding {dataset_class.__name__}/raw/, "
                    "or data.download=true")
    if root.exists() and not root.is_dir():
        raise VaeLabError(f"data root {root} is a file, not a folder; {how_to_point}")
    split = "train" if train else "t10k"
    images, labels = raw / f"{split}-images-idx3-ubyte", raw / f"{split}-labels-idx1-ubyte"
    if images.is_file() and labels.is_file():  # files torchvision downloads itself are checked by MD5
        check_idx_files(images, labels)
    try:
        dataset = dataset_class(root, train=train, download=download)
    except RuntimeError as error:  # torchvision: "Dataset not found" / failed download
        raise VaeLabError(f"{dataset_class.__name__} not found in {raw.resolve()} ({error}); {how_to_point}") from None
    return TensorDataset(dataset.data.unsqueeze(1).float().div_(255), dataset.targets.long())


def load_mnist(root: str | os.PathLike, train: bool, download: bool) -> TensorDataset:
    """One MNIST split: ``load_torchvision("mnist", ...)``."""
    return load_torchvision("mnist", root, train, download)


def channels_first(images: np.ndarray, path: Path) -> np.ndarray:
    """N x H x W, N x H x W x C or N x C x H x W images (C = 1 or 3) as N x C x H x W."""
    if images.ndim == 3:
        return images[:, None]
    if images.ndim == 4 and images.shape[-1] in (1, 3):
        return images.transpose(0, 3, 1, 2)
    if images.ndim == 4 and images.shape[1] in (1, 3):
        return images
    raise VaeLabError(f"{path}: images of shape {images.shape}; expected N x H x W (grey) or N x H x W x C "
                      "(C = 1 grey or 3 colour)")


def read_arrays(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, C, H, W) float in [0, 1], labels (N,) int64, NO_LABEL without labels) from a
    .npy of images or an .npz holding ``images`` and optionally ``labels`` (integers >= 0); read
    with allow_pickle=False, every fault one VaeLabError line naming the file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise VaeLabError(f"{path}: no such file; data.path takes a .npz (images, labels) or .npy (images) file")
    with open(path, "rb") as f:
        magic = f.read(6)
    if not magic.startswith((b"\x93NUMPY", b"PK")):  # numpy < 1.25 would take any other bytes for a pickle
        raise VaeLabError(f"{path}: empty or not a .npy or .npz file (it starts with {magic!r})")
    try:
        loaded = np.load(path, allow_pickle=False)
        arrays = {"images": loaded} if isinstance(loaded, np.ndarray) else {key: loaded[key] for key in loaded.files}
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise VaeLabError(f"{path}: holds a pickled (object) array, which is never loaded; save numbers: "
                              "np.savez(path, images=uint8 or float array, labels=int array)") from None
        raise VaeLabError(f"{path}: not a .npy or .npz file ({' '.join(str(error).split())})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise VaeLabError(f"{path}: empty or not a .npy or .npz file ({error})") from None
    unknown = set(arrays) - {"images", "labels"}
    if "images" not in arrays or unknown:
        raise VaeLabError(f"{path}: an .npz must hold images (and optionally labels), not {', '.join(sorted(arrays))}")
    images, labels = channels_first(arrays["images"], path), arrays.get("labels")
    if min(images.shape[2:]) < MIN_SIDE:
        raise VaeLabError(f"{path}: images of {images.shape[2]}x{images.shape[3]} pixels; at least "
                          f"{MIN_SIDE}x{MIN_SIDE} are needed")
    if len(images) < 2:
        raise VaeLabError(f"{path}: {len(images)} images; at least 2 are needed (training and validation)")
    if images.dtype == np.uint8:
        pixels = torch.from_numpy(images.astype(np.float32) / 255)
    elif np.issubdtype(images.dtype, np.floating) and np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1:
        pixels = torch.from_numpy(images.astype(np.float32))
    else:
        raise VaeLabError(f"{path}: images of dtype {images.dtype}; expected uint8 (0-255) or float in [0, 1]")
    if labels is None:
        return pixels.contiguous(), torch.full((len(images),), NO_LABEL, dtype=torch.long)
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        raise VaeLabError(f"{path}: labels of shape {labels.shape} and dtype {labels.dtype}; expected {len(images)} integers")
    if (outside := np.flatnonzero(labels < 0)).size:
        index = int(outside[0])
        raise VaeLabError(f"{path}: label {labels[index]} at index {index} is negative; classes are 0, 1, 2, ...")
    return pixels.contiguous(), torch.from_numpy(labels.astype(np.int64))


class DataSet:
    """A registered data set: ``load(train)`` gives one split as TensorDataset(images (N, C, H, W)
    float in [0, 1], labels (N,) int64, NO_LABEL where there is none); ``source()`` its settings as
    plain values, as the run records them; ``num_classes`` (0 without labels) and ``cache_key``
    (what its classifier is cached as) are known once it is loaded."""

    num_classes = 0

    def load(self, train: bool) -> TensorDataset:
        raise NotImplementedError

    def source(self) -> dict:
        raise NotImplementedError

    def cache_key(self, name: str) -> str:
        return name


@DATASETS.register("mnist")
class MNISTDigits(DataSet):
    """MNIST through torchvision: 60,000 training and 10,000 test digits, 1 x 28 x 28."""

    torchvision = MNIST
    num_classes = MNIST_CLASSES

    def __init__(self, root: str = "data", download: bool = False):
        self.root, self.download = str(Path(root).expanduser().resolve()), download

    def load(self, train: bool) -> TensorDataset:
        return read_torchvision(self.torchvision, self.root, train, self.download)

    def source(self) -> dict:
        return {"root": self.root, "download": self.download}


@DATASETS.register("fashion_mnist")
class FashionMNISTImages(MNISTDigits):
    """Fashion-MNIST through torchvision: 60,000 training and 10,000 test images of 10 kinds of
    clothing, 1 x 28 x 28."""

    torchvision = FashionMNIST


@DATASETS.register(ARRAYS)
class ArraysFile(DataSet):
    """A user's own arrays file (``read_arrays``): a fixed shuffle (seed 0, whatever the run's
    seed, so every run validates on the same images) puts ``test_fraction`` of them in the test
    split, at least one; the classes are 0 .. the largest label."""

    def __init__(self, path: str, test_fraction: float = 0.1):
        if not 0 < test_fraction < 1:
            raise ValueError(f"data.test_fraction={test_fraction} must be between 0 and 1")
        self.path, self.test_fraction = str(Path(path).expanduser().resolve()), test_fraction

    def load(self, train: bool) -> TensorDataset:
        images, labels = read_arrays(self.path)
        self.num_classes = int(labels.max()) + 1 if (labels != NO_LABEL).all() else 0
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
        n_test = min(len(images) - 1, max(1, round(self.test_fraction * len(images))))
        index = order[n_test:] if train else order[:n_test]
        return TensorDataset(images[index], labels[index])

    def source(self) -> dict:
        return {"path": self.path, "test_fraction": self.test_fraction}

    def cache_key(self, name: str) -> str:
        return f"{name}-{hashlib.sha256(Path(self.path).read_bytes()).hexdigest()[:12]}"


def load_arrays(path: str | os.PathLike, train: bool, test_fraction: float = 0.1) -> TensorDataset:
    """One split of an arrays file (``ArraysFile``)."""
    return ArraysFile(str(path), test_fraction).load(train)


def dataset(data: dict, root: str | None = None) -> DataSet:
    """The data set a run's data config (plain values) names, with its settings of that config;
    ``root`` overrides where a data set with a ``root`` (torchvision's) is read."""
    settings = {key: value for key, value in data.items()
                if key in DATASETS.settings(data["name"]) and key not in COMMON_KEYS}
    if root is not None and "root" in DATASETS.settings(data["name"]):
        settings["root"] = root
    return DATASETS.build({"name": data["name"], **settings})


def load_split(data: dict, train: bool, root: str | None = None) -> TensorDataset:
    """The training or test split of the data set that a run's data config names (``dataset``)."""
    return dataset(data, root).load(train)


def has_labels(dataset: TensorDataset) -> bool:
    return bool((dataset.tensors[1] != NO_LABEL).all())
