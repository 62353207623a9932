"""CIFAR data, one module per concept: cifar (the official folders read into uint8 tensors in memory), download
(the official archive with its checksum), batches (augmentation and batches, in one process on purpose), synthetic
(a small dataset in the official on-disk format) and source (a run's data: real or synthetic, and its subset).
Callers use the names below as `datamod.<name>`."""

from .batches import MEAN, STD, augment, batches, normalize, num_train_batches
from .cifar import DATASETS, DatasetSpec, Split, dataset_spec, find_folder, load_dataset, resolve_data_dir
from .download import download_archive, md5_of
from .source import load_data
from .synthetic import SYNTHETIC_TEST_IMAGES, synthetic_archive, write_synthetic

__all__ = [
    "DATASETS", "MEAN", "STD", "SYNTHETIC_TEST_IMAGES", "DatasetSpec", "Split", "augment", "batches", "dataset_spec",
    "download_archive", "find_folder", "load_data", "load_dataset", "md5_of", "normalize", "num_train_batches",
    "resolve_data_dir", "synthetic_archive", "write_synthetic",
]
