"""Image data: readers (IDX, CIFAR, STL-10, image folders), a registry of data sets by name
with checksummed download, and class-balanced label subsets.

    from selfsup.data import load_dataset
    train = load_dataset("fashion-mnist-sample", split="train")   # ships with selfsup
    cifar = load_dataset("cifar10", "~/data/cifar10", download=True)
"""

from selfsup.data.download import download_file, extract_archive, verify_file
from selfsup.data.folder import read_image_folder
from selfsup.data.registry import DATASETS, DatasetInfo, FileInfo, default_cache_dir, load_dataset
from selfsup.data.sources import (
    ImageSet,
    read_cifar10,
    read_cifar100,
    read_idx,
    read_idx_pair,
    read_stl10,
)
from selfsup.data.subsets import class_balanced_subset, load_subset, save_subset

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "FileInfo",
    "ImageSet",
    "class_balanced_subset",
    "default_cache_dir",
    "download_file",
    "extract_archive",
    "load_dataset",
    "load_subset",
    "read_cifar10",
    "read_cifar100",
    "read_idx",
    "read_idx_pair",
    "read_image_folder",
    "read_stl10",
    "save_subset",
    "verify_file",
]
