"""Micro-batching: the samples of many cells that arrive within a bounded wait go through one jitted,
vmapped step, padded to a fixed bucket size so that no batch size compiles twice.

A tick takes the queue's first sample, waits at most ``max_wait_s`` for more (or none, when more are
already queued), and steps up to ``buckets[-1]`` cells at once. Each sample is answered through its
own future, so the caller sees only its own cell's outputs and state.
"""

from __future__ import annotations

import asyncio

import jax
import numpy as np

from cellax.deploy.step import DeployedStep

BUCKETS = (1, 4, 16, 64, 256, 1024)


class Batcher:
    """One model's queue and its batched step ``(states (B, ...), inputs (B, n_in)) -> (outputs, states)``."""

    def __init__(self, step: DeployedStep, max_wait_s: float, buckets: tuple[int, ...] = BUCKETS):
        _, step_fn = step.flat()
        self.batched = jax.jit(jax.vmap(step_fn))
        self.step, self.max_wait_s, self.buckets = step, max_wait_s, buckets
        self.queue: asyncio.Queue = asyncio.Queue()
        self.ticks = 0
        self.samples = 0

    def warm_up(self) -> None:
        """Compile every bucket now, not at a cell's first sample."""
        init_fn, _ = self.step.flat()
        state = [np.asarray(a) for a in init_fn(np.zeros(self.step.task.n_outputs, np.float32))]
        for size in self.buckets:
            self._compute([state] * size, np.zeros((size, self.step.n_inputs), np.float32))

    def _compute(self, states, inputs):
        stacked = [np.stack(leaves) for leaves in zip(*states)]
        out = self.batched(inputs, *stacked)
        return [np.asarray(a) for a in out]

    async def submit(self, state: list[np.ndarray], inputs: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """One cell's sample through the next tick; returns ``(outputs, new state)``."""
        future = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((state, inputs, future))
        return await future

    async def run(self) -> None:
        while True:
            items = [await self.queue.get()]
            if self.queue.empty():
                await asyncio.sleep(self.max_wait_s)
            while not self.queue.empty() and len(items) < self.buckets[-1]:
                items.append(self.queue.get_nowait())
            size = next(b for b in self.buckets if b >= len(items))
            pad = size - len(items)
            states = [s for s, _, _ in items] + [items[0][0]] * pad
            inputs = np.stack([u for _, u, _ in items] + [items[0][1]] * pad).astype(np.float32)
            try:
                outputs, *new = await asyncio.to_thread(self._compute, states, inputs)
            except Exception as err:  # a failed tick fails its samples, not the service
                for _, _, future in items:
                    if not future.done():
                        future.set_exception(err)
                continue
            self.ticks += 1
            self.samples += len(items)
            for i, (_, _, future) in enumerate(items):
                if not future.cancelled():
                    future.set_result((outputs[i], [leaf[i] for leaf in new]))
