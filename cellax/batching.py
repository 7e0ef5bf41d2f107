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
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def blocked_vmap(fn: Callable, block: int, groups: int = 1) -> Callable:
    """``jax.vmap(fn)`` over the leading axis of every argument, in blocks of ``block`` elements.

    The batch ``n`` is split into ``groups`` contiguous lanes (vmapped: shard the batch over ``groups``
    devices and each device takes one lane), each lane into blocks of ``block`` run one after another. A
    batch that is not a multiple of ``groups * block`` is padded with copies of its last element, and the
    padding dropped from the results.
    """
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise ValueError(f"block must be a positive integer, got {block!r}")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be a positive integer, got {groups!r}")
    inner = jax.vmap(fn)

    def blocked(*args):
        n = jax.tree_util.tree_leaves(args)[0].shape[0]
        per_lane = -(-n // (groups * block)) * block
        total = groups * per_lane

        def split(x):
            x = jnp.concatenate([x, jnp.repeat(x[-1:], total - n, axis=0)]) if total > n else x
            return x.reshape(groups, per_lane // block, block, *x.shape[1:])

        lanes = jax.tree_util.tree_map(split, args)
        out = jax.vmap(lambda lane: jax.lax.map(lambda blk: inner(*blk), lane))(lanes)
        return jax.tree_util.tree_map(lambda y: y.reshape(total, *y.shape[3:])[:n], out)

    return blocked
