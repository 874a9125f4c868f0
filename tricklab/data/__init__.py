"""Data: MNIST, Fashion-MNIST, MNIST-1D and the user's .npz and CSV files; validation splits,
minibatches, standardization, augmentation."""

from .augment import (Augmentation, Compose, ElasticDistortion, GaussianNoise, RandomRotation,
                      RandomStretch, RandomTranslation, affine, elastic, elastic_fields, rotate,
                      stretch, translate, warp)
from .files import DataFileError, FileData, check_targets, describe_targets, load_csv, load_npz
from .loader import DataLoader
from .mnist import (ChecksumError, IDXError, cache_dir, download_file, fetch_mnist, load_mnist,
                    parse_idx, read_idx, search_roots)
from .mnist1d import get_templates, load_mnist1d, make_mnist1d
from .normalize import Standardizer
from .split import split_indices, train_val_split

__all__ = [
    "Augmentation", "ChecksumError", "Compose", "DataLoader", "ElasticDistortion",
    "GaussianNoise", "IDXError", "RandomRotation", "RandomStretch", "RandomTranslation",
    "Standardizer", "affine", "cache_dir", "download_file", "elastic", "elastic_fields",
    "fetch_mnist", "get_templates", "load_mnist", "load_mnist1d", "make_mnist1d", "parse_idx",
    "read_idx", "rotate", "search_roots", "split_indices", "stretch", "train_val_split",
    "translate", "warp",
    "DataFileError", "FileData", "check_targets", "describe_targets", "load_csv", "load_npz",
]
