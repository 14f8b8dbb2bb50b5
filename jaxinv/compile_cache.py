"""A persistent cache of compiled programs, so a second run does not compile again.

XLA compiles every solve and training step for its shapes and settings; on two CPU cores that
takes 5-20 s for a 48-filter 7x7 field of experts, often longer than the restoration itself.
JAX can keep the compiled executables on disk (``jax_compilation_cache_dir``) and reuse them in
later processes; the command line turns this on by default, in

* ``$JAXINV_COMPILATION_CACHE`` if set (``off``, ``0``, ``false`` or ``none`` disable it),
* else ``$XDG_CACHE_HOME/jaxinv/xla`` (``~/.cache/jaxinv/xla``).

In Python, call :func:`enable_compilation_cache` yourself (nothing is written unless you do).
The cache may be deleted at any time; it only holds programs at least
:data:`MIN_COMPILE_SECONDS` took to compile (or JAX's own
``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS``, when that is set).
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

#: The environment variable that chooses the command line's cache directory (or disables it).
ENV = "JAXINV_COMPILATION_CACHE"

#: Programs that compile faster than this are not written (JAX's own default is 1 s).
MIN_COMPILE_SECONDS = 1.0

_JAX_MIN_TIME = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"

_OFF = ("", "0", "off", "false", "none", "no")


def default_cache_dir() -> Path | None:
    """The command line's cache directory: ``$JAXINV_COMPILATION_CACHE``, else
    ``$XDG_CACHE_HOME/jaxinv/xla`` (``~/.cache/jaxinv/xla``); ``None`` when the variable
    disables it."""
    value = os.environ.get(ENV)
    if value is not None:
        return None if value.strip().lower() in _OFF else Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "jaxinv" / "xla"


def enable_compilation_cache(path: str | os.PathLike[str]) -> Path:
    """Keep compiled programs in ``path`` (created if missing) and reuse them in later
    processes. Returns the directory. Raises ``ValueError`` if it cannot be created or is not
    a directory."""
    directory = Path(path).expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(
            f"cannot use {str(directory)!r} as the compilation cache ({err.strerror}); choose "
            f"another directory, or disable the cache with {ENV}=off"
        ) from None
    jax.config.update("jax_compilation_cache_dir", str(directory))
    if _JAX_MIN_TIME not in os.environ:  # the user's own JAX setting wins
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return directory
