import pytest
import torch

from vae_lab.data import EpochBatchSampler, MNISTDataModule, load_mnist
from vae_lab.errors import VaeLabError


def test_mnist_splits_are_in_memory_tensors(data_root):
    train, test = load_mnist(data_root, train=True, download=False), load_mnist(data_root, train=False, download=False)
    images, labels = train.tensors
    assert images.shape == (60_000, 1, 28, 28) and images.dtype == torch.float32
    assert images.min() == 0 and images.max() == 1
    assert labels.dtype == torch.int64 and labels.bincount().tolist()[1] == 6742  # digit 1 is the most common
    assert test.tensors[0].shape == (10_000, 1, 28, 28)


def test_sampler_covers_every_item_once_per_epoch():
    sampler = EpochBatchSampler(1000, batch_size=128, shuffle=True, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 8 and len(batches[-1]) == 1000 - 7 * 128
    assert torch.cat(batches).sort().values.equal(torch.arange(1000))


def test_shuffle_depends_only_on_seed_and_epoch():
    def order(seed, epoch):
        sampler = EpochBatchSampler(500, 100, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        return torch.cat(list(sampler))

    assert order(0, 4).equal(order(0, 4))
    assert not order(0, 4).equal(order(0, 5))
    assert not order(0, 4).equal(order(1, 4))
    assert torch.cat(list(EpochBatchSampler(500, 100, shuffle=False))).equal(torch.arange(500))


def test_loader_yields_image_label_batches(data_root):
    datamodule = MNISTDataModule(str(data_root), batch_size=64, download=False)
    datamodule.setup("fit")
    x, y = next(iter(datamodule.train_dataloader()))
    assert x.shape == (64, 1, 28, 28) and y.shape == (64,)
    assert len(datamodule.val_dataloader()) == -(-10_000 // 64)


def test_missing_data_says_where_it_looked_and_how_to_fix(tmp_path):
    with pytest.raises(VaeLabError, match=r"MNIST not found in .*MNIST/raw.*VAE_LAB_DATA"):
        load_mnist(tmp_path / "nowhere", train=True, download=False)
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(VaeLabError, match="is a file"):
        load_mnist(tmp_path / "file", train=True, download=False)
