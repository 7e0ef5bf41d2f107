"""``vmap`` in cache-sized blocks: the same results as ``jax.vmap``, computed block after block.

A ``vmap`` of a time-stepping function over a large batch runs every step on the
whole batch: each of the step's intermediate arrays (a few tens of kB per cell
for the SPMe) is written and read back for all cells before the next operation,
so a batch of hundreds streams them through main memory at every step.
:func:`blocked_vmap` runs the batch as ``groups`` independent lanes (one per
device when the batch is sharded over devices), each working through its share
``block`` elements at a time (``lax.map``): one block's state and temporaries
stay in cache for the whole scan. The work and the results are those of the
plain ``vmap``; only the order differs.

When the elements' work differs (a ``lax.while_loop`` inside ``fn`` runs, under
``vmap``, as long as the longest element of its block), ``cost`` sorts the batch
so that each block, and the blocks the lanes run side by side, hold elements of
similar cost.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec


def blocked_vmap(fn: Callable, block: int, groups: int = 1, cost: Callable | None = None,
                 devices: Sequence[jax.Device] | None = None) -> Callable:
    """``jax.vmap(fn)`` over the leading axis of every argument, in blocks of ``block`` elements.

    The batch ``n`` is split into ``groups`` contiguous lanes (vmapped: shard the batch over ``groups``
    devices and each device takes one lane), each lane into blocks of ``block`` run one after another. A
    batch that is not a multiple of ``groups * block`` is padded with copies of its last element, and the
    padding dropped from the results. ``cost`` (a function of one element's arguments, giving a scalar)
    orders the batch by it before the split, lane by lane (the ``g``-th cheapest elements of each
    round of ``groups * block`` go to lane ``g``), and the results come back in the batch's order.
    ``devices`` (``groups`` of them) runs each lane on its own device under ``shard_map``, with no
    communication between them; otherwise the lanes are one ``vmap``, which a sharded batch spreads over
    the devices it is sharded on (fine for fixed work, but a ``while_loop`` then steps all lanes together).
    """
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise ValueError(f"block must be a positive integer, got {block!r}")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be a positive integer, got {groups!r}")
    if devices is not None and len(devices) != groups:
        raise ValueError(f"devices must hold one device per group ({groups}), got {len(devices)}")
    inner = jax.vmap(fn)

    def run_lanes(lanes):
        return jax.vmap(lambda lane: jax.lax.map(lambda blk: inner(*blk), lane))(lanes)

    if devices is not None:
        run_lanes = jax.shard_map(run_lanes, mesh=Mesh(np.asarray(devices), ("lanes",)), in_specs=PartitionSpec("lanes"),
                                  out_specs=PartitionSpec("lanes"), check_vma=False)

    def blocked(*args):
        n = jax.tree_util.tree_leaves(args)[0].shape[0]
        per_lane = -(-n // (groups * block)) * block
        total = groups * per_lane

        def split(x):
            x = jnp.concatenate([x, jnp.repeat(x[-1:], total - x.shape[0], axis=0)]) if total > x.shape[0] else x
            return x.reshape(groups, per_lane // block, block, *x.shape[1:])

        order = None
        if cost is not None:
            ranked = jnp.argsort(jax.vmap(cost)(*args))
            ranked = jnp.concatenate([ranked, jnp.repeat(ranked[-1:], total - n)]) if total > n else ranked
            order = ranked.reshape(per_lane // block, groups, block).transpose(1, 0, 2).reshape(total)
            args = jax.tree_util.tree_map(lambda x: x[order], args)
        lanes = jax.tree_util.tree_map(split, args)
        out = run_lanes(lanes)
        out = jax.tree_util.tree_map(lambda y: y.reshape(total, *y.shape[3:]), out)
        if order is not None:
            out = jax.tree_util.tree_map(lambda y: jnp.zeros_like(y[:n]).at[order].set(y), out)
        return jax.tree_util.tree_map(lambda y: y[:n], out)

    return blocked
