"""The LightningDataModule of every run: a data set's splits held in memory as tensors and batched
by index, one index tensor per batch."""
import logging

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset

from vae_lab.arguments import NonNegativeInt, PositiveInt, check_settings
from vae_lab.data.datasets import has_labels
from vae_lab.data.splits import Binarize, bernoulli_draw, binarized_split, seen_training_split
from vae_lab.registry import DATASETS

log = logging.getLogger(__name__)


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


class ImageDataModule(L.LightningDataModule):
    """Train on a data set's training split, validate on its test split (MNIST and Fashion-MNIST:
    60,000 and 10,000 images; an arrays file: its own split, ``load_arrays``).

    ``binarize``: ``none`` keeps grey levels in [0, 1]; ``static`` replaces both splits by one fixed
    Bernoulli draw; ``dynamic`` draws every training batch anew (from the seed and the global step,
    so a resumed run draws what an uninterrupted one would) and validates on one fixed draw.
    ``source`` says, as plain values, what was read: the run's config records it, so that
    ``evaluate`` and ``generate`` read the same data later.
    """

    def __init__(self, name: str = "mnist", batch_size: PositiveInt = 128, seed: NonNegativeInt = 0,
                 binarize: Binarize = "none", **settings):
        super().__init__()
        check_settings(ImageDataModule, {"batch_size": batch_size, "seed": seed, "binarize": binarize}, "data", "data")
        self.name, self.dataset = name, DATASETS.build({"name": name, **settings})  # the data set's settings checked
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
