"""Pretrained models that ship inside the package; loading never touches the network.

A model is a directory ``jaxinv/pretrained/<name>/`` holding a finished training run's
``config.json`` and ``checkpoint.eqx`` and its model card ``CARD.md`` (the data, the noise level,
the recipe, the measured PSNR and the command that trained it). Adding such a directory is all it
takes to add a model: :func:`names` lists every directory that holds the two run files, and
``pyproject.toml`` declares them as package data, so an installed wheel carries them.
:func:`export` writes the directory from a run made by ``jaxinv train``.

```python
from jaxinv import pretrained

pretrained.names()                                   # ['denoise-foe', ...]
config, model = pretrained.load("denoise-foe", image_shape=(256, 256))
print(pretrained.card("denoise-foe"))
```

The root directory is this package's folder; the environment variable
``JAXINV_PRETRAINED_ROOT`` (or the ``root=`` argument of every function) points elsewhere, for
testing an export before adding it to the package.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..runs import CHECKPOINT, CONFIG, load_run
from ..train import CheckpointError, TrainConfig, read_header

#: Environment variable that replaces :func:`root` (for testing exports).
ROOT_ENV = "JAXINV_PRETRAINED_ROOT"
#: The files of a model directory: the run's two files, then the model card.
RUN_FILES: tuple[str, ...] = (CONFIG, CHECKPOINT)
CARD_FILE = "CARD.md"
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")


def root() -> Path:
    """The directory holding the pretrained models: ``$JAXINV_PRETRAINED_ROOT`` if set, else
    this package's folder."""
    override = os.environ.get(ROOT_ENV)
    return Path(override) if override else Path(__file__).resolve().parent


def _root(given: str | os.PathLike[str] | None) -> Path:
    return root() if given is None else Path(given)


def names(*, root: str | os.PathLike[str] | None = None) -> list[str]:
    """The names of the pretrained models (sorted): the directories under the root that hold
    ``config.json`` and ``checkpoint.eqx``."""
    base = _root(root)
    if not base.is_dir():
        return []
    return sorted(
        p.name
        for p in base.iterdir()
        if p.is_dir() and _NAME.fullmatch(p.name) and all((p / f).is_file() for f in RUN_FILES)
    )


def path(name: str, *, root: str | os.PathLike[str] | None = None) -> Path:
    """The run directory of the pretrained model ``name``.

    Raises ``ValueError`` naming the available models if there is no such model.
    """
    if isinstance(name, str) and name in names(root=root):
        return _root(root) / name
    available = names(root=root)
    listing = ", ".join(available) if available else "none are installed"
    raise ValueError(f"unknown pretrained model {name!r}; available: {listing}")


def is_name(name: str, *, root: str | os.PathLike[str] | None = None) -> bool:
    """Whether ``name`` is a pretrained model."""
    return name in names(root=root)


def load(
    name: str,
    image_shape: tuple[int, int] | None = None,
    *,
    root: str | os.PathLike[str] | None = None,
) -> Any:
    """Load the pretrained model ``name``: what :func:`jaxinv.train.load_run` returns for its
    run directory (for ``image_shape`` images if given)."""

    return load_run(path(name, root=root), image_shape=image_shape)


def card(name: str, *, root: str | os.PathLike[str] | None = None) -> str:
    """The model card of ``name`` (the text of its ``CARD.md``; empty if it has none)."""
    card_path = path(name, root=root) / CARD_FILE
    return card_path.read_text(encoding="utf-8") if card_path.is_file() else ""


def export(
    run_dir: str | os.PathLike[str],
    name: str,
    card_text: str,
    *,
    root: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Copy a finished run into the pretrained layout: ``<root>/<name>/`` with the run's
    ``config.json`` and last ``checkpoint.eqx`` and ``card_text`` as ``CARD.md`` (nothing else:
    no metrics, no figures).

    The checkpoint is verified (size and SHA-256) and must be of a finished run with the
    configuration of ``config.json``. The directory is written under a temporary name and moved
    into place, so a failed export leaves no partial model. Returns the new directory.

    Raises:
        ValueError: ``name`` is not lower-case letters, digits, ``.``, ``_``, ``-`` (starting
            with a letter or digit); ``card_text`` is empty; the run is unfinished or its files
            disagree; or ``name`` exists and ``overwrite`` is false.
        jaxinv.train.CheckpointError: the run has no checkpoint or it is corrupt.
    """

    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"pretrained model name {name!r} must be lower-case letters, digits, '.', '_' or "
            "'-', starting with a letter or digit (e.g. 'denoise-foe-25')"
        )
    if not isinstance(card_text, str) or not card_text.strip():
        raise ValueError(
            "card_text is empty; write the model card: data, noise level, recipe, measured "
            "PSNR and the command that trained the model"
        )
    run = Path(run_dir)
    if not (run / CHECKPOINT).is_file():
        raise CheckpointError(f"no {CHECKPOINT} in {str(run)!r}: not a jaxinv run directory")
    header, _ = read_header(run / CHECKPOINT)
    config = TrainConfig.from_dict(header["config"])
    if not header.get("finished"):
        raise ValueError(
            f"{str(run)!r} is an unfinished run (step {header.get('step')} of {config.steps}); "
            "finish it (jaxinv train ... --resume) before exporting it"
        )
    if not (run / CONFIG).is_file():
        raise ValueError(f"{str(run)!r} has no {CONFIG}; export the directory 'jaxinv train' wrote")
    written = TrainConfig.from_json((run / CONFIG).read_text(encoding="utf-8"))
    if written.differences(config, semantic_only=False):
        raise ValueError(
            f"{str(run)!r}: {CONFIG} and {CHECKPOINT} describe different configurations "
            f"({', '.join(written.differences(config, semantic_only=False))}); export a run "
            "directory as 'jaxinv train' left it"
        )

    base = _root(root)
    target = base / name
    if target.exists() and not overwrite:
        raise ValueError(
            f"pretrained model {name!r} already exists at {str(target)!r}; pass overwrite=True "
            "to replace it or choose another name"
        )
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=base))
    try:
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)  # mkdtemp's 0700 -> the usual permissions
        for f in RUN_FILES:
            shutil.copyfile(run / f, tmp / f)
        (tmp / CARD_FILE).write_text(card_text.rstrip() + "\n", encoding="utf-8")
        read_header(tmp / CHECKPOINT)  # the copy is complete
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


__all__ = [
    "CARD_FILE",
    "ROOT_ENV",
    "RUN_FILES",
    "card",
    "export",
    "is_name",
    "load",
    "names",
    "path",
    "root",
]
