import re

import pytest
import torch

from conftest import DATA_ROOT
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


@pytest.mark.parametrize("world_size", [2, 3])
def test_ddp_shards_are_disjoint_and_equal(world_size):
    def shards(epoch):
        samplers = [EpochBatchSampler(1000, 64, shuffle=True, seed=3, rank=rank, world_size=world_size)
                    for rank in range(world_size)]
        for sampler in samplers:
            sampler.set_epoch(epoch)
        return [torch.cat(list(sampler)) for sampler in samplers]

    epoch0 = shards(0)
    assert {len(shard) for shard in epoch0} == {1000 // world_size}
    assert len(torch.cat(epoch0).unique()) == 1000 // world_size * world_size  # disjoint
    assert {len(list(EpochBatchSampler(1000, 64, True, rank=r, world_size=world_size))) for r in range(world_size)} \
        == {len(EpochBatchSampler(1000, 64, True, world_size=world_size))}  # the same number of steps
    assert not epoch0[0].equal(shards(1)[0])  # reshuffled every epoch


def test_loader_yields_image_label_batches(data_root):
    datamodule = MNISTDataModule(str(data_root), batch_size=64, download=False)
    datamodule.setup("fit")
    x, y = next(iter(datamodule.train_dataloader()))
    assert x.shape == (64, 1, 28, 28) and y.shape == (64,)
    assert len(datamodule.val_dataloader()) == -(-10_000 // 64)


def test_binarization_draws_pixels_by_their_grey_level(data_root):
    grey = load_mnist(data_root, train=False, download=False).tensors[0]
    modules = {}
    for binarize in ("none", "static", "dynamic"):
        modules[binarize] = MNISTDataModule(str(data_root), download=False, seed=1, binarize=binarize)
        modules[binarize].setup("fit")
    assert modules["none"].val_set.tensors[0].equal(grey)
    static, dynamic = modules["static"], modules["dynamic"]
    assert dynamic.val_set.tensors[0].equal(static.val_set.tensors[0])  # one fixed draw of the test digits
    binary = static.val_set.tensors[0]
    assert set(binary.unique().tolist()) == {0.0, 1.0}
    assert abs(binary.mean() - grey.mean()) < 1e-3  # E[draw] = grey level
    train = dynamic.train_set.tensors[0]
    assert ((train > 0) & (train < 1)).any()  # dynamic: the training split stays grey, batches are drawn

    class Trainer:  # what on_after_batch_transfer reads of a Lightning Trainer
        training, global_step = True, 0

    dynamic.trainer = Trainer()
    batch = dynamic.train_set.tensors[0][:64], dynamic.train_set.tensors[1][:64]
    first, again = (dynamic.on_after_batch_transfer(batch, 0)[0] for _ in range(2))
    Trainer.global_step = 1
    second = dynamic.on_after_batch_transfer(batch, 0)[0]
    assert first.equal(again) and not first.equal(second)  # depends on the step alone: resumes exactly
    assert set(second.unique().tolist()) == {0.0, 1.0}
    Trainer.training = False
    assert dynamic.on_after_batch_transfer(batch, 0)[0].equal(batch[0])  # validation batches are left alone


def test_missing_data_says_where_it_looked_and_how_to_fix(tmp_path):
    with pytest.raises(VaeLabError, match=r"MNIST not found in .*MNIST/raw.*VAE_LAB_DATA"):
        load_mnist(tmp_path / "nowhere", train=True, download=False)
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(VaeLabError, match="is a file"):
        load_mnist(tmp_path / "file", train=True, download=False)


def write_bad_copy(raw, how):
    """Copies the real t10k images and labels into raw/, then damages one of them as ``how`` says."""
    raw.mkdir(parents=True)
    images, labels = (raw / name for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))
    source = DATA_ROOT / "MNIST" / "raw"
    image_bytes, label_bytes = (source / images.name).read_bytes(), (source / labels.name).read_bytes()
    if how == "truncated images":
        image_bytes = image_bytes[: len(image_bytes) // 2]
    elif how == "images shorter than their header":
        image_bytes = image_bytes[:10]
    elif how == "trailing bytes":
        image_bytes += bytes(784)
    elif how == "wrong magic":  # a label file where the images should be
        image_bytes = label_bytes
    elif how == "counts disagree":  # the header and size of 9,999 labels for 10,000 images
        label_bytes = label_bytes[:4] + (9_999).to_bytes(4, "big") + label_bytes[8:-1]
    elif how == "label out of range":
        label_bytes = label_bytes[:100] + bytes([10]) + label_bytes[101:]
    images.write_bytes(image_bytes)
    labels.write_bytes(label_bytes)
    return images, labels


BAD_DATA = {
    "truncated images": ("images", r"truncated: header declares 10000x28x28 bytes of data \(7840016 bytes in all\), file has 3920008"),
    "images shorter than their header": ("images", r"truncated \(10 bytes, shorter than the IDX header\)"),
    "trailing bytes": ("images", r"has trailing bytes: header declares 10000x28x28 bytes .* file has 7840800"),
    "wrong magic": ("images", r"wrong magic number 2049 \(expected 2051\); not an MNIST file of this kind"),
    "counts disagree": ("labels", r"9999 labels, but t10k-images-idx3-ubyte holds 10000 images"),
    "label out of range": ("labels", r"label 10 at index 92 is not a digit 0..9"),
}


@pytest.mark.parametrize("how", BAD_DATA)
def test_bad_mnist_file_gives_one_line_naming_the_file_and_the_fault(how, tmp_path, data_root):
    images, labels = write_bad_copy(tmp_path / "MNIST" / "raw", how)
    which, fault = BAD_DATA[how]
    bad_file = images if which == "images" else labels
    with pytest.raises(VaeLabError, match=rf"^{re.escape(str(bad_file))}: {fault}$"):
        load_mnist(tmp_path, train=False, download=False)
