"""MNIST held in memory as tensors, batched by index.

Each split is decoded once into a float tensor (N, 1, 28, 28) with pixels in [0, 1] and int64
labels (N,). Batches are gathered with one index per batch, instead of one PIL image at a time
through ``ToTensor``, which on a small CPU costs several times the training step itself.
"""
import logging
import math
import os
import struct
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset
from torchvision.datasets import MNIST

from vae_lab.config import BINARIZE, check_choice
from vae_lab.errors import VaeLabError

log = logging.getLogger(__name__)
HOW_TO_POINT = "set data.root=... or VAE_LAB_DATA to a folder holding MNIST/raw/, or data.download=true"


def data_root(given: str | None = None, run_root: str | None = None) -> str:
    """Where a tool reads the data: ``given`` (its data_root option), else $VAE_LAB_DATA, else the
    run's own data.root, else ``data``. (Training reads ``data.root``, whose default is the same
    variable: conf/data/mnist.yaml.)"""
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

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
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
        return iter(shard.split(self.batch_size))


def _idx_header(path: Path, magic: int, ndim: int) -> tuple[int, ...]:
    """The dimensions (count, ...) declared by an IDX file, checked against its magic number and size."""
    header_bytes, size = 4 * (1 + ndim), path.stat().st_size
    if size < header_bytes:
        raise VaeLabError(f"{path}: truncated ({size} bytes, shorter than the IDX header)")
    with open(path, "rb") as f:
        found_magic, *dims = struct.unpack(f">{1 + ndim}i", f.read(header_bytes))  # big-endian int32s
    if found_magic != magic:
        raise VaeLabError(f"{path}: wrong magic number {found_magic} (expected {magic}); not an MNIST file of this kind")
    expected = header_bytes + math.prod(dims)  # one byte per pixel or label
    if size != expected:
        problem = "truncated" if size < expected else "has trailing bytes"
        raise VaeLabError(f"{path}: {problem}: header declares {'x'.join(map(str, dims))} bytes of data "
                          f"({expected} bytes in all), file has {size}")
    return tuple(dims)


def check_mnist_files(images: Path, labels: Path) -> None:
    """Raise VaeLabError naming the file unless images and labels are whole IDX files that agree.

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
        raise VaeLabError(f"{labels}: label {int(values[index])} at index {index} is not a digit 0..9")


def load_mnist(root: str | os.PathLike, train: bool, download: bool) -> TensorDataset:
    """One MNIST split as TensorDataset(images (N, 1, 28, 28) float in [0, 1], labels (N,) int64)."""
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise VaeLabError(f"data root {root} is a file, not a folder; {HOW_TO_POINT}")
    raw, split = root / "MNIST" / "raw", "train" if train else "t10k"
    images, labels = raw / f"{split}-images-idx3-ubyte", raw / f"{split}-labels-idx1-ubyte"
    if images.is_file() and labels.is_file():  # files torchvision downloads itself are checked by MD5
        check_mnist_files(images, labels)
    try:
        dataset = MNIST(root, train=train, download=download)
    except RuntimeError as error:  # torchvision: "Dataset not found" / failed download
        raise VaeLabError(
            f"MNIST not found in {root.resolve() / 'MNIST' / 'raw'} ({error}); {HOW_TO_POINT}"
        ) from None
    images = dataset.data.unsqueeze(1).float().div_(255)
    return TensorDataset(images, dataset.targets.long())


def bernoulli_draw(images: torch.Tensor, seed: int) -> torch.Tensor:
    """Binary images of the same shape: each pixel is 1 with its grey level as probability.

    The draw depends only on ``seed`` (uniforms from a CPU generator, so also on a GPU tensor).
    """
    uniform = torch.rand(images.shape, generator=torch.Generator().manual_seed(seed))
    return (uniform.to(images.device) < images).to(images.dtype)


def binarized_split(dataset: TensorDataset, binarize: str, seed: int, train: bool) -> TensorDataset:
    """The split as the model sees it outside training batches: grey levels for ``none``, else one
    fixed Bernoulli draw (the training split of ``dynamic`` stays grey; its batches are drawn anew)."""
    if binarize == "none" or (train and binarize == "dynamic"):
        return dataset
    images, labels = dataset.tensors
    return TensorDataset(bernoulli_draw(images, seed * 2 + train), labels)


class MNISTDataModule(L.LightningDataModule):
    """Train on the 60,000 training digits, validate on the 10,000 test digits.

    ``binarize``: ``none`` keeps grey levels in [0, 1]; ``static`` replaces both splits by one fixed
    Bernoulli draw; ``dynamic`` draws every training batch anew (from the seed and the global step,
    so a resumed run draws what an uninterrupted one would) and validates on one fixed draw.
    """

    def __init__(self, root: str, batch_size: int = 128, download: bool = True, seed: int = 0,
                 binarize: str = "none"):
        super().__init__()
        check_choice("data.binarize", binarize, BINARIZE)
        self.root, self.batch_size, self.download, self.seed = root, batch_size, download, seed
        self.binarize = binarize
        self.train_set = self.val_set = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set, self.val_set = (
                binarized_split(load_mnist(self.root, train, self.download), self.binarize, self.seed, train)
                for train in (True, False)
            )

    def on_after_batch_transfer(self, batch, dataloader_idx):
        if self.binarize == "dynamic" and self.trainer is not None and self.trainer.training:
            x, y = batch
            batch = bernoulli_draw(x, (self.seed * 1_000_003 + self.trainer.global_step) * 2 + 1), y
        return batch

    def _loader(self, dataset: TensorDataset, shuffle: bool, rank: int = 0, world_size: int = 1) -> DataLoader:
        sampler = EpochBatchSampler(len(dataset), self.batch_size, shuffle, self.seed, rank, world_size)
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
