"""Fixed training and validation sets, and a data order that is a pure function of (seed, step)."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from ..data import (
    folder_fingerprint,
    list_image_files,
    load_image_file,
    load_images,
    load_mnist,
    sample_patches,
    split_by_image,
)
from ..tasks import Task
from ._config import TrainConfig

#: Seed of the validation set and its noise: the same for every run, so runs are comparable.
VAL_SEED = 20240611


@dataclasses.dataclass(frozen=True, eq=False)
class Examples:
    """Clean images ``x`` and measurements ``y`` (numpy, ``(n, H, W)``, default float dtype)."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.x)

    def batch(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        """``{"x", "y", "ids"}`` for the example indices ``ids``."""
        ids = np.asarray(ids, dtype=np.int32)
        return {"x": self.x[ids], "y": self.y[ids], "ids": ids}


@functools.lru_cache(maxsize=4)
def _natural(split: str, max_size: int) -> tuple[np.ndarray, ...]:
    """The natural images of a split (cached: decoding and downscaling takes seconds)."""
    images = tuple(load_images(split, max_size=max_size))
    for im in images:
        im.flags.writeable = False
    return images


@functools.lru_cache(maxsize=4)
def _folder(folder: str, fingerprint: str, min_size: int) -> tuple[np.ndarray, ...]:
    """The images of a user folder (cached by its fingerprint: decoding takes seconds)."""
    images = tuple(load_image_file(p, min_size=min_size) for p in list_image_files(folder))
    for im in images:
        im.flags.writeable = False
    return images


def _folder_images(config: TrainConfig, split: str) -> tuple[np.ndarray, ...] | None:
    """The folder images of ``split``, or ``None`` where the bundled split is used."""
    size = config.data.patch_size
    if split == "val" and config.data.val_images:
        return _folder(config.data.val_images, folder_fingerprint(config.data.val_images), size)
    if not config.data.train_images:
        return None
    images = _folder(config.data.train_images, folder_fingerprint(config.data.train_images), size)
    if config.data.val_images:  # the whole folder trains
        return images if split == "train" else None
    train_ids, val_ids = split_by_image(len(images))
    return tuple(images[i] for i in (train_ids if split == "train" else val_ids))


def data_fingerprints(config: TrainConfig) -> dict[str, str]:
    """Fingerprints of the image folders a configuration reads (empty for the bundled data)."""
    return {
        name: folder_fingerprint(getattr(config.data, name))
        for name in ("train_images", "val_images")
        if getattr(config.data, name)
    }


def _clean(config: TrainConfig, split: str, count: int, seed: int) -> np.ndarray:
    folder = _folder_images(config, split)
    if folder is not None:
        return sample_patches(
            folder,
            config.data.patch_size,
            count,
            seed=seed,
            augment=split == "train" and config.augments,
        )
    if config.data.dataset == "mnist":
        images = load_mnist(split).images
        if count > len(images):
            raise ValueError(
                f"MNIST {split} split has {len(images)} digits, fewer than the {count} requested"
            )
        return images[:count]
    images = _natural(split, config.data.max_image_size)
    augment = split == "train" and config.augments
    return sample_patches(images, config.data.patch_size, count, seed=seed, augment=augment)


def _degrade(task: Task, x: np.ndarray, seed: int) -> Examples:
    dtype = jnp.result_type(float)
    xj = jnp.asarray(x, dtype=dtype)
    y = task.degrade(xj, jax.random.PRNGKey(seed))
    return Examples(np.asarray(xj), np.asarray(y))


@dataclasses.dataclass(frozen=True, eq=False)
class NoisyParts:
    """A set's clean images ``x``, noiseless measurements ``ax = A x`` and standard-normal noise
    ``noise`` (numpy, ``(n, H, W)``): its measurements at any noise level ``σ`` are
    ``ax + σ·noise``, element for element what :meth:`jaxinv.tasks.Task.degrade` computes for a
    task with that ``σ`` and the same key (one product, one sum, each correctly rounded)."""

    x: np.ndarray
    ax: np.ndarray
    noise: np.ndarray

    def __len__(self) -> int:
        return len(self.x)

    def measurements(self, sigma: float, ids: np.ndarray | None = None) -> np.ndarray:
        """``y = A x + σ n`` of every example, or of the examples ``ids``."""
        ax, noise = (self.ax, self.noise) if ids is None else (self.ax[ids], self.noise[ids])
        return ax + np.asarray(sigma, ax.dtype) * noise


def _noisy_parts(task: Task, x: np.ndarray, seed: int) -> NoisyParts:
    dtype = jnp.result_type(float)
    xj = jnp.asarray(x, dtype=dtype)
    ax = task.operator((xj.shape[-2], xj.shape[-1]))(xj)
    noise = jax.random.normal(jax.random.PRNGKey(seed), ax.shape, ax.dtype)
    return NoisyParts(np.asarray(xj), np.asarray(ax), np.asarray(noise))


def make_dataset_parts(
    config: TrainConfig, task: Task | None = None
) -> tuple[NoisyParts, NoisyParts]:
    """:func:`make_datasets` split into clean images, ``A x`` and noise, so that one set serves
    every noise level: ``parts.measurements(σ)`` equals ``make_datasets`` of the configuration
    with ``task_options["sigma"] = σ`` exactly."""
    task = config.make_task() if task is None else task
    train = _noisy_parts(
        task, _clean(config, "train", config.data.num_train, config.seed), config.seed
    )
    val = _noisy_parts(task, _clean(config, "val", config.data.num_val, VAL_SEED), VAL_SEED)
    return train, val


def make_datasets(config: TrainConfig, task: Task | None = None) -> tuple[Examples, Examples]:
    """The fixed training set (``num_train`` examples, patches and noise drawn from ``seed``)
    and validation set (``num_val`` examples from the ``val`` split, drawn from
    :data:`VAL_SEED`). With ``config.data.train_images`` / ``val_images`` the patches come from
    those folders (see :class:`TrainConfig`)."""
    task = config.make_task() if task is None else task
    train = _degrade(task, _clean(config, "train", config.data.num_train, config.seed), config.seed)
    val = _degrade(task, _clean(config, "val", config.data.num_val, VAL_SEED), VAL_SEED)
    return train, val


def batch_indices(seed: int, step: int, num: int, batch: int) -> np.ndarray:
    """Example indices of step ``step``: epochs are seeded permutations of ``range(num)``
    (epoch ``e`` uses ``default_rng([seed, e])``) read ``batch`` at a time, so the order is a pure
    function of ``(seed, step)`` and a resumed run sees exactly the same batches."""
    pos = step * batch + np.arange(batch)
    epochs, within = np.divmod(pos, num)
    out = np.empty(batch, dtype=np.int32)
    for e in np.unique(epochs):
        perm = np.random.default_rng([seed, int(e)]).permutation(num)
        sel = epochs == e
        out[sel] = perm[within[sel]]
    return out
