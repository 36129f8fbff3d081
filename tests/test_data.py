import re

import numpy as np
import pytest
import torch

from conftest import DATA_ROOT
from vae_lab.data import EpochBatchSampler, ImageDataModule, has_labels, load_arrays, load_mnist, load_torchvision
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
    datamodule = ImageDataModule(root=str(data_root), batch_size=64)
    datamodule.setup("fit")
    x, y = next(iter(datamodule.train_dataloader()))
    assert x.shape == (64, 1, 28, 28) and y.shape == (64,)
    assert len(datamodule.val_dataloader()) == -(-10_000 // 64)


def test_binarization_draws_pixels_by_their_grey_level(data_root):
    grey = load_mnist(data_root, train=False, download=False).tensors[0]
    modules = {}
    for binarize in ("none", "static", "dynamic"):
        modules[binarize] = ImageDataModule(root=str(data_root), seed=1, binarize=binarize)
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
    "wrong magic": ("images", r"wrong magic number 2049 \(expected 2051\); not an IDX file of this kind"),
    "counts disagree": ("labels", r"9999 labels, but t10k-images-idx3-ubyte holds 10000 images"),
    "label out of range": ("labels", r"label 10 at index 92 is not a class 0..9"),
}


@pytest.mark.parametrize("how", BAD_DATA)
def test_bad_mnist_file_gives_one_line_naming_the_file_and_the_fault(how, tmp_path, data_root):
    images, labels = write_bad_copy(tmp_path / "MNIST" / "raw", how)
    which, fault = BAD_DATA[how]
    bad_file = images if which == "images" else labels
    with pytest.raises(VaeLabError, match=rf"^{re.escape(str(bad_file))}: {fault}$"):
        load_mnist(tmp_path, train=False, download=False)


FASHION = DATA_ROOT / "FashionMNIST" / "raw"


def test_fashion_mnist_comes_through_torchvision_from_the_local_copy(data_root):
    train, test = (load_torchvision("fashion_mnist", data_root, train=split, download=False) for split in (True, False))
    images, labels = train.tensors
    assert images.shape == (60_000, 1, 28, 28) and test.tensors[0].shape == (10_000, 1, 28, 28)
    assert labels.bincount().tolist() == [6000] * 10 and test.tensors[1].bincount().tolist() == [1000] * 10
    assert images.mean().item() == pytest.approx(0.2860, abs=5e-5)  # the published mean pixel


def test_bad_fashion_mnist_file_is_one_line_naming_it(tmp_path, data_root):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes((FASHION / name).read_bytes())
    (raw / "t10k-images-idx3-ubyte").write_bytes((FASHION / "t10k-images-idx3-ubyte").read_bytes()[:-784])
    with pytest.raises(VaeLabError, match=rf"^{re.escape(str(raw / 't10k-images-idx3-ubyte'))}: truncated"):
        load_torchvision("fashion_mnist", tmp_path, train=False, download=False)
    with pytest.raises(VaeLabError, match=r"FashionMNIST not found in .*FashionMNIST/raw"):
        load_torchvision("fashion_mnist", tmp_path / "nowhere", train=False, download=False)


def write_arrays(path, n=50, labels=True, dtype=np.uint8, **extra):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
    images = images if dtype == np.uint8 else (images / 255).astype(dtype)
    arrays = {"images": images, **({"labels": rng.integers(0, 10, n)} if labels else {}), **extra}
    np.savez(path, **arrays)
    return images, arrays.get("labels")


def test_an_arrays_file_splits_into_training_and_test_images(tmp_path):
    images, labels = write_arrays(tmp_path / "mine.npz", n=50)
    train, test = (load_arrays(tmp_path / "mine.npz", train=split, test_fraction=0.2) for split in (True, False))
    assert len(train) == 40 and len(test) == 10
    both = torch.cat([train.tensors[0], test.tensors[0]])
    assert sorted(map(bytes, (both * 255).round().byte().numpy())) == sorted(map(bytes, images[:, None]))
    assert train.tensors[0].dtype == torch.float32 and 0 <= both.min() and both.max() <= 1
    np.save(tmp_path / "floats.npy", (images / 255).astype(np.float32))  # a .npy of floats, no labels
    unlabelled = load_arrays(tmp_path / "floats.npy", train=True)
    assert (unlabelled.tensors[1] == -1).all() and not has_labels(unlabelled)


BAD_ARRAYS = {
    "wrong shape": (lambda p: np.save(p, np.zeros((5, 32, 32, 2), np.uint8)), "images of shape (5, 32, 32, 2); expected N x H x W"),
    "too small": (lambda p: np.save(p, np.zeros((5, 6, 32), np.uint8)), "images of 6x32 pixels; at least 8x8 are needed"),
    "wrong dtype": (lambda p: np.save(p, np.zeros((5, 28, 28), np.int64)), "images of dtype int64; expected uint8 (0-255) or float in [0, 1]"),
    "floats beyond 1": (lambda p: np.save(p, np.full((5, 28, 28), 2.0)), "images of dtype float64; expected uint8"),
    "negative label": (lambda p: np.savez(p, images=np.zeros((5, 28, 28), np.uint8), labels=np.array([0, 1, -2, 3, 4])),
                       "label -2 at index 2 is negative"),
    "labels of another length": (lambda p: np.savez(p, images=np.zeros((5, 28, 28), np.uint8), labels=np.arange(4)),
                                 "labels of shape (4,) and dtype int64; expected 5 integers"),
    "a pickled array": (lambda p: np.save(p, np.array([{"x": 1}], dtype=object), allow_pickle=True),
                        "holds a pickled (object) array, which is never loaded"),
    "an empty file": (lambda p: p.write_bytes(b""), "empty or not a .npy or .npz file"),
    "other keys": (lambda p: np.savez(p, pixels=np.zeros((5, 28, 28), np.uint8)), "an .npz must hold images (and optionally labels), not pixels"),
    "one image": (lambda p: np.save(p, np.zeros((1, 28, 28), np.uint8)), "1 images; at least 2 are needed"),
}


@pytest.mark.parametrize("case", BAD_ARRAYS)
def test_a_bad_arrays_file_is_one_line_naming_the_file_and_the_fault(case, tmp_path):
    write, fault = BAD_ARRAYS[case]
    path = tmp_path / ("bad.npz" if "keys" in case or "label" in case else "bad.npy")
    write(path)
    with pytest.raises(VaeLabError) as error:
        load_arrays(path, train=True)
    assert str(error.value).startswith(f"{path}: {fault}") and "\n" not in str(error.value)
