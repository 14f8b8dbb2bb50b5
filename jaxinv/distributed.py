"""Data-parallel execution over a device mesh, with JAX's own SPMD machinery.

The batch is split along a one-dimensional mesh axis ``"data"``; parameters are replicated.
:func:`data_parallel` runs a per-shard value-and-gradient function under ``jax.shard_map`` and
averages the loss and the gradients with a collective (``pmean``) that XLA schedules. Because
each shard runs its *own* ``while_loop``, a slow example only makes its own shard iterate longer;
with plain ``jit`` sharding the loop condition of a batched solve would be reduced over every
device.

The same code serves 1 CPU, N CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=N``),
one or several GPUs, and several hosts (call :func:`initialize` first on every host; the mesh then
spans every process's devices and each process feeds its own slice of the batch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import PyTree

DATA_AXIS = "data"
# jaxlib ships no stubs: in an annotation, pyright takes jax.Device for a variable
_Devices = Sequence[jax.Device]


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Join a multi-host run (a thin wrapper of ``jax.distributed.initialize``).

    Call once per host before any other JAX call. With no arguments JAX detects the cluster
    (SLURM, Open MPI, Kubernetes/TPU pods); otherwise give the coordinator ``"host:port"``, the
    number of processes and this process's index.
    """
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
    )


def data_mesh(devices: int | _Devices | None = None) -> Mesh:
    """A one-axis mesh named ``"data"`` over ``devices`` (a count, a list, or all devices)."""
    available = jax.devices()
    if devices is None:
        chosen = available
    elif isinstance(devices, int):
        if not 1 <= devices <= len(available):
            raise ValueError(
                f"asked for {devices} devices but JAX sees {len(available)} "
                f"({available[0].platform}). On a CPU-only machine set "
                f"XLA_FLAGS=--xla_force_host_platform_device_count={devices} before starting "
                "Python; on several hosts call jaxinv.distributed.initialize() first."
            )
        chosen = available[:devices]
    else:
        chosen = list(devices)
    return Mesh(np.asarray(chosen), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over ``"data"``."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """The same value on every device."""
    return NamedSharding(mesh, PartitionSpec())


def shard_batch(batch: PyTree, mesh: Mesh) -> PyTree:
    """Place a batch with its leading axis split over the mesh.

    Single process: ``batch`` is the global batch. Several processes: ``batch`` is this process's
    slice, and the global array is assembled from every process's slice.
    """
    sharding = batch_sharding(mesh)
    n = mesh.devices.size

    def place(leaf):
        size = np.shape(leaf)[0] if np.ndim(leaf) else None
        if jax.process_count() > 1:
            return jax.make_array_from_process_local_data(sharding, np.asarray(leaf))
        if size is None or size % n:
            raise ValueError(
                f"the batch size ({size}) must be a multiple of the number of devices ({n}); "
                "change --batch or --devices"
            )
        return jax.device_put(leaf, sharding)

    return jax.tree.map(place, batch)


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Place every leaf of ``tree`` (parameters, optimiser state) on every device."""
    return jax.device_put(tree, replicated(mesh))


def data_parallel(
    value_and_grad: Callable[..., tuple[tuple[Any, Any], Any]], mesh: Mesh
) -> Callable[..., tuple[tuple[Any, Any], Any]]:
    """Run ``value_and_grad(params, batch) -> ((loss, aux), grads)`` on every shard of the batch.

    ``loss`` and ``grads`` must be *means* over the shard's examples; they are averaged over the
    shards (equal to the mean over the global batch, since shards have equal size). ``aux`` is a
    pytree of per-example arrays (leading axis = the shard's examples, e.g. solver statistics),
    gathered back along the batch axis.
    """
    data, rep = PartitionSpec(DATA_AXIS), PartitionSpec()

    def local(params, batch):
        (loss, aux), grads = value_and_grad(params, batch)
        loss = jax.lax.pmean(loss, DATA_AXIS)
        grads = jax.lax.pmean(grads, DATA_AXIS)
        return (loss, aux), grads

    # check_vma=False: the solvers' loop counters start as constants and become per-shard values;
    # the collectives above are explicit, so no automatic variance tracking is needed.
    return jax.shard_map(
        local, mesh=mesh, in_specs=(rep, data), out_specs=((rep, data), rep), check_vma=False
    )
