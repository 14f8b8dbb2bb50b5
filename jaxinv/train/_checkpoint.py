"""Checkpoints: one self-describing file, written atomically, verified on load.

Layout of ``checkpoint.eqx``::

    b"JAXINV-CHECKPOINT\\n"            magic line
    8 bytes, big-endian               length of the header
    header (UTF-8 JSON)               format, step, finished, config, sha256 and size of the payload
    payload                           equinox.tree_serialise_leaves of the TrainState

The file is written to a temporary name in the same directory, flushed and fsync'ed, then moved
over the old checkpoint with ``os.replace`` (atomic on POSIX and Windows): a reader sees either the
previous complete checkpoint or the new one, never a mixture. A truncated or altered file fails the
size/hash check with :class:`CheckpointError`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import equinox as eqx
import jax

# The files of a run directory, written here and by the loop (jaxinv.runs documents the layout
# and is where everything above the training code takes them from).
CHECKPOINT = "checkpoint.eqx"
CONFIG = "config.json"
METRICS = "metrics.jsonl"
FIGURES = "figures"
TMP_PREFIX = ".tmp-"
_MAGIC = b"JAXINV-CHECKPOINT\n"
FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, corrupt or belongs to another configuration."""


class RunExistsError(FileExistsError):
    """``out_dir`` already holds a run that would be overwritten."""


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temporary file in the same directory, fsync,
    ``os.replace``. The temporary file is removed if anything fails (including Ctrl-C)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + path.name + ".", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 -> the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # persist the rename itself
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def leftover_temp_files(out_dir: str | os.PathLike) -> list[Path]:
    """Temporary files left behind by an interrupted write (the process was killed mid-write)."""
    out = Path(out_dir)
    if not out.is_dir():
        return []
    return sorted(p for p in out.iterdir() if p.name.startswith(TMP_PREFIX))


def remove_leftover_temp_files(out_dir: str | os.PathLike, stacklevel: int = 2) -> None:
    """Delete :func:`leftover_temp_files`, with a warning for each (the last complete
    checkpoint is unaffected)."""
    for tmp in leftover_temp_files(out_dir):
        warnings.warn(
            f"removing {tmp}: a temporary file left by a write that was interrupted (the process "
            "was killed mid-write); the last complete checkpoint is unaffected",
            stacklevel=stacklevel + 1,
        )
        tmp.unlink(missing_ok=True)


def save_checkpoint(
    path: str | os.PathLike, state: Any, *, step: int, finished: bool, meta: dict[str, Any]
) -> None:
    """Serialise ``state`` (any pytree of arrays, e.g. a ``TrainState``) with
    ``equinox.tree_serialise_leaves`` and write it with a header atomically."""
    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, state)
    payload = buf.getvalue()
    header = {
        "format": FORMAT,
        "step": int(step),
        "finished": bool(finished),
        "payload_bytes": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "x64": bool(jax.config.read("jax_enable_x64")),
        **meta,
    }
    head = json.dumps(header, sort_keys=True).encode("utf-8")
    atomic_write_bytes(path, _MAGIC + len(head).to_bytes(8, "big") + head + payload)


def _corrupt(path: Path, why: str) -> CheckpointError:
    return CheckpointError(
        f"checkpoint {path} is unreadable: {why}. It was not written by jaxinv or was truncated "
        "or altered after writing (jaxinv writes atomically, so a killed run leaves the previous "
        "checkpoint intact). Delete it (or pass overwrite=True) to start the run afresh, or "
        "restore it from a backup."
    )


def read_header(path: str | os.PathLike) -> tuple[dict[str, Any], bytes]:
    """The header and the verified payload of a checkpoint file (``CheckpointError`` if the file
    is not a complete jaxinv checkpoint)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    if not data.startswith(_MAGIC):
        raise _corrupt(path, "it does not start with the jaxinv checkpoint marker")
    pos = len(_MAGIC)
    if len(data) < pos + 8:
        raise _corrupt(path, "the file ends inside the header")
    n = int.from_bytes(data[pos : pos + 8], "big")
    pos += 8
    try:
        header = json.loads(data[pos : pos + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _corrupt(path, "the header is not valid JSON (truncated?)") from None
    payload = data[pos + n :]
    expected = header.get("payload_bytes")
    if len(payload) != expected:
        raise _corrupt(path, f"the payload has {len(payload)} bytes, the header says {expected}")
    if hashlib.sha256(payload).hexdigest() != header.get("payload_sha256"):
        raise _corrupt(path, "the payload's SHA-256 does not match the header")
    if header.get("format") != FORMAT:
        raise CheckpointError(
            f"checkpoint {path} has format {header.get('format')}, this jaxinv reads {FORMAT}"
        )
    return header, payload


def load_checkpoint(path: str | os.PathLike, like: Any) -> tuple[dict[str, Any], Any]:
    """Read a checkpoint into the structure of ``like`` (a freshly initialised state of the same
    configuration). Returns ``(header, state)``; raises :class:`CheckpointError` if the file is
    corrupt or its arrays do not fit ``like`` (another model or configuration)."""
    header, payload = read_header(path)
    x64 = bool(jax.config.read("jax_enable_x64"))
    if header.get("x64", x64) != x64:
        raise CheckpointError(
            f"checkpoint {path} was written with jax_enable_x64={header['x64']}, but it is "
            f"{x64} now; set jax.config.update('jax_enable_x64', {header['x64']}) before loading"
        )
    try:
        state = eqx.tree_deserialise_leaves(io.BytesIO(payload), like)
    except Exception as err:  # shapes/dtypes/structure differ
        raise CheckpointError(
            f"checkpoint {path} does not match this model/configuration ({err}). It was written "
            "by another architecture or configuration: use another out_dir, or pass "
            "overwrite=True to replace it."
        ) from err
    return header, state
