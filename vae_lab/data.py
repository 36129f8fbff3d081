"""The images, held in memory as tensors and batched by index.

The data sets are registered in ``vae_lab.registry.DATASETS`` and chosen by ``data.name``
(vae_lab/conf/data/*.yaml): ``mnist`` and ``fashion_mnist`` through torchvision's dataset classes
and folder layout (downloaded, or read from a local copy under ``data.root``), and ``images``, a
user's own arrays file (.npz or .npy of N x H x W or N x H x W x C images, C = 1 or 3, labels
optional). Each split is decoded once into a float tensor (N, C, H, W) with pixels in [0, 1] and
int64 labels (N,) (-1 when the file has none); the data module says what it serves
(``image_shape``, ``num_classes``), and the models, metrics and pictures take it from there.
Batches are gathered with one index per batch, instead of one PIL image at a time through
``ToTensor``, which on a small CPU costs several times the training step itself.
"""
import hashlib
import logging
import math
import os
import struct
import zipfile
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset
from torchvision.datasets import MNIST, FashionMNIST

from vae_lab.config import BINARIZE, check_choice
from vae_lab.errors import VaeLabError
from vae_lab.registry import DATASETS

log = logging.getLogger(__name__)
MNIST_SHAPE = (1, 28, 28)  # MNIST and Fashion-MNIST: 28x28 grey images ...
MNIST_CLASSES = 10  # ... of ten classes, labelled 0..9
ARRAYS = "images"  # data.name of a user's own arrays file
NO_LABEL = -1  # the label of images from a file without labels
MIN_SIDE = 8  # pixels: the smallest height and width an arrays file may have
# What every data config holds beside its data set's own settings (ImageDataModule's arguments, and
# what the run records about what was read).
COMMON_KEYS = ("_target_", "name", "batch_size", "seed", "binarize", "image_shape", "num_classes")


def data_root(given: str | None = None, run_root: str | None = None) -> str:
    """Where a tool reads a torchvision data set: ``given`` (its data_root option), else
    $VAE_LAB_DATA, else the run's own data.root, else ``data``. (Training reads ``data.root``,
    whose default is the same variable: vae_lab/conf/data/mnist.yaml.)"""
    return given or os.environ.get("VAE_LAB_DATA") or run_root or "data"


class EpochBatchSampler(Sampler):
    """Yields index batches (LongTensor) over n items; the order depends only on (seed, epoch).

    Deriving the permutation from the epoch number, rather than from a generator's running state,
    makes the order of any epoch reproducible, also after resuming from a checkpoint.
    Lightning calls ``set_epoch`` at the start of every training epoch.

    With ``world_size`` > 1 (DDP), process ``rank`` takes every world_size-th item of the epoch's
    permutation: the shards are disjoint, and equal in size (the last n % world_size items of each
    permutation are left out), so every process takes the same number of steps.
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1,
                 device: torch.device | str = "cpu"):
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.rank, self.world_size, self.device = rank, world_size, torch.device(device)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-(self.n // self.world_size) // self.batch_size)

    def __iter__(self):
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=generator)
        else:
            order = torch.arange(self.n)
        shard = order[self.rank::self.world_size][:self.n // self.world_size]
        # the epoch's order goes to the device of the images once, not an index batch at a time
        return iter(shard.to(self.device).split(self.batch_size))


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


def bernoulli_draw(images: torch.Tensor, seed: int) -> torch.Tensor:
    """Binary images of the same shape: each pixel is 1 with its grey level as probability.

    The draw depends only on ``seed`` and the images' device: the uniforms come from a generator
    on that device, so that a GPU never waits for the host (the same seed draws differently on a
    GPU than on the CPU).
    """
    generator = torch.Generator(device=images.device).manual_seed(seed)
    uniform = torch.rand(images.shape, generator=generator, device=images.device)
    return (uniform < images).to(images.dtype)


def binarized_split(dataset: TensorDataset, binarize: str, seed: int, train: bool) -> TensorDataset:
    """The split as the model sees it outside training batches: grey levels for ``none``, else one
    fixed Bernoulli draw (the training split of ``dynamic`` stays grey; its batches are drawn anew)."""
    if binarize == "none" or (train and binarize == "dynamic"):
        return dataset
    images, labels = dataset.tensors
    return TensorDataset(bernoulli_draw(images, seed * 2 + train), labels)


def seen_training_split(dataset: TensorDataset, binarize: str, seed: int) -> TensorDataset:
    """The training split as the model sees it outside training batches: grey, or binarized as
    ``static`` does (for ``dynamic`` too, one fixed draw; a draw of binary images is themselves).
    What a sampler is fitted on."""
    return binarized_split(dataset, "static" if binarize == "dynamic" else binarize, seed, train=True)


class ImageDataModule(L.LightningDataModule):
    """Train on a data set's training split, validate on its test split (MNIST and Fashion-MNIST:
    60,000 and 10,000 images; an arrays file: its own split, ``load_arrays``).

    ``binarize``: ``none`` keeps grey levels in [0, 1]; ``static`` replaces both splits by one fixed
    Bernoulli draw; ``dynamic`` draws every training batch anew (from the seed and the global step,
    so a resumed run draws what an uninterrupted one would) and validates on one fixed draw.
    ``source`` says, as plain values, what was read: the run's config records it, so that
    ``evaluate`` and ``generate`` read the same data later.
    """

    def __init__(self, name: str = "mnist", batch_size: int = 128, seed: int = 0, binarize: str = "none",
                 **settings):
        super().__init__()
        check_choice("data.binarize", binarize, BINARIZE)
        self.name, self.dataset = name, DATASETS.build({"name": name, **settings})  # its settings checked
        self.batch_size, self.seed, self.binarize = batch_size, seed, binarize
        self.train_set = self.val_set = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set, self.val_set = (binarized_split(self.dataset.load(train), self.binarize, self.seed, train)
                                            for train in (True, False))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images served (after ``setup``)."""
        return tuple(self.train_set.tensors[0].shape[1:])

    @property
    def num_classes(self) -> int:
        """How many classes the labels name (0 when the images have none; after ``setup``)."""
        return self.dataset.num_classes

    @property
    def source(self) -> dict:
        """What was read, as plain values: the data set's name and settings and, after ``setup``, the
        image shape and number of classes."""
        served = {"image_shape": list(self.image_shape), "num_classes": self.num_classes} if self.train_set else {}
        return {"name": self.name, **self.dataset.source(), **served}

    @property
    def fit_set(self) -> TensorDataset:
        return seen_training_split(self.train_set, self.binarize, self.seed)

    @property
    def labelled(self) -> bool:
        """Whether every image has a class label (a conditional model needs them)."""
        return has_labels(self.train_set)

    def on_after_batch_transfer(self, batch, dataloader_idx):
        if self.binarize == "dynamic" and self.trainer is not None and self.trainer.training:
            x, y = batch
            batch = bernoulli_draw(x, (self.seed * 1_000_003 + self.trainer.global_step) * 2 + 1), y
        return batch

    def _loader(self, dataset: TensorDataset, shuffle: bool, rank: int = 0, world_size: int = 1) -> DataLoader:
        # On a GPU the images go to its memory once (a split is at most a few hundred MB), so no
        # batch is copied from the host; on the CPU this changes nothing.
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        dataset = TensorDataset(*(t.to(device) for t in dataset.tensors))
        sampler = EpochBatchSampler(len(dataset), self.batch_size, shuffle, self.seed, rank, world_size, device)
        # batch_size=None: the sampler already yields whole batches of indices, which
        # TensorDataset gathers in one indexing operation per tensor.
        return DataLoader(dataset, sampler=sampler, batch_size=None)

    def train_dataloader(self) -> DataLoader:
        if self.trainer is None:
            return self._loader(self.train_set, shuffle=True)
        # With DDP each process trains on its own shard (the trainer keeps Lightning's
        # DistributedSampler out: use_distributed_sampler=false); batch_size is per process.
        rank, world_size = self.trainer.global_rank, self.trainer.world_size
        loader = self._loader(self.train_set, shuffle=True, rank=rank, world_size=world_size)
        if world_size > 1:
            log.info("process %d of %d trains on %d of the %d training digits each epoch, batches of %d",
                     rank, world_size, len(self.train_set) // world_size, len(self.train_set), self.batch_size)
        # Lightning draws the first batch before its own set_epoch call, so a resumed run
        # would begin with epoch 0's order; start at the epoch Lightning is about to run.
        loader.sampler.set_epoch(self.trainer.fit_loop.epoch_progress.current.processed)
        return loader

    def val_dataloader(self) -> DataLoader:
        # every process validates on the whole test set: the same val/* as a single process
        return self._loader(self.val_set, shuffle=False)
