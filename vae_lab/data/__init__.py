"""The data: registered data sets read into memory (``datasets.py``: ``data.name=mnist|fashion_mnist|images``),
the LightningDataModule every run trains with (``module.py``), and a data set's splits as a model
sees them, grey or binarized, as runs and tools read them (``splits.py``)."""
from vae_lab.data.datasets import (ARRAYS, MNIST_CLASSES, MNIST_SHAPE, NO_LABEL, DataSet, dataset, has_labels,
                                   load_arrays, load_mnist, load_split, load_torchvision)
from vae_lab.data.module import EpochBatchSampler, ImageDataModule
from vae_lab.data.splits import BINARIZE, data_root, seen_training_split, test_images, training_images

__all__ = ["ARRAYS", "MNIST_CLASSES", "MNIST_SHAPE", "NO_LABEL", "DataSet", "dataset", "has_labels", "load_arrays",
           "load_mnist", "load_split", "load_torchvision", "EpochBatchSampler", "ImageDataModule", "BINARIZE",
           "data_root", "seen_training_split", "test_images", "training_images"]
