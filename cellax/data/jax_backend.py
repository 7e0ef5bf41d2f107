"""Simulation backend "jax": cellax's own SPM/SPMe/DFN, many profiles per compiled call.

The same cell as the "pybamm" backend (PyBaMM's parameter set with the config's
thermal settings and overrides, the datasheet's voltage window as cut-offs, the
same two-node thermal model; the same mesh for the SPM and SPMe, while the DFN runs on
:class:`~cellax.physics.dfn.DFN`'s coarse default mesh of 6/3/6 cells, within ~1 mV of
PyBaMM's DFN on its 20-cell mesh, docs/physics.md), integrated by
:func:`cellax.physics.simulate.simulate` and ``vmap`` over a batch of profiles (a step per sample, or steps chosen from the
current with ``simulation.max_samples_per_step``).
Profiles are padded to a common length (rounded up to ``LENGTH_BUCKET_S``
seconds, so one compile serves many lengths) by holding the last current sample;
signals beyond a profile's own length are dropped. Statuses are :mod:`cellax.status`'s
vocabulary, as the PyBaMM backend's, so datasets from both backends read alike.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from cellax.data.config import SimulationConfig
from cellax.data.datasheet import Datasheet
from cellax.data.backend import SimulationResult, enforce_temperature_limits
from cellax.data.cell import cell_parameters
from cellax.signals import KELVIN, SIGNALS
from cellax.status import OK, STATUS, group_of, stopped

LENGTH_BUCKET_S = 600.0
ADAPTIVE_BLOCK = 16


class JaxBackend:
    """Simulates batches of current profiles of one cell with the JAX cell model (float64)."""

    version = 1

    def __init__(self, config: SimulationConfig, datasheet: Datasheet):
        from cellax.physics import cell_model

        self.config = config
        self.datasheet = datasheet
        self.params = cell_parameters(config, datasheet)
        self.model = cell_model(config.model)
        self._run = jax.jit(self._batch, static_argnums=1)

    def _batch(self, current_a, dt_s, ambient_temp_k, heat_transfer_coeff, initial_soc):
        """``_one`` over the batch: one ``vmap``, or, with steps chosen from the input, blocks of profiles of
        similar step counts (a block runs as long as its slowest profile)."""
        one = lambda i, a, h, s: self._one(i, dt_s, a, h, s)  # noqa: E731
        m = self.config.max_samples_per_step
        if m is None:
            return jax.vmap(one)(current_a, ambient_temp_k, heat_transfer_coeff, initial_soc)
        from cellax.batching import blocked_vmap
        from cellax.physics.simulate import adaptive_step_count

        cost = lambda i, a, h, s: adaptive_step_count(i, m)  # noqa: E731
        return blocked_vmap(one, ADAPTIVE_BLOCK, cost=cost)(current_a, ambient_temp_k, heat_transfer_coeff, initial_soc)

    def _one(self, current_a, dt_s, ambient_temp_k, heat_transfer_coeff, initial_soc):
        from cellax.physics.simulate import simulate

        params = self.params.with_values({"heat_transfer_coeff_w_m2k": heat_transfer_coeff})
        solution = simulate(self.model, params, current_a, dt_s, initial_soc, ambient_temp_k,
                            max_samples_per_step=self.config.max_samples_per_step)
        return solution.signals, solution.status, solution.stop_index, solution.event_time_s

    def simulate(self, current_a, dt_s, ambient_temp_degc, heat_transfer_coeff, initial_soc) -> SimulationResult:
        """One profile (the PyBaMM backend's interface)."""
        return self.simulate_batch([current_a], dt_s, [ambient_temp_degc], [heat_transfer_coeff], [initial_soc])[0]

    def simulate_batch(self, currents, dt_s, ambient_temp_degc, heat_transfer_coeff, initial_soc) -> list[SimulationResult]:
        """Profiles of possibly different lengths in one vmapped solve; never raises for a failing solve."""
        lengths = [len(c) for c in currents]
        bucket = max(2, int(round(LENGTH_BUCKET_S / dt_s)))
        padded = bucket * math.ceil(max(lengths) / bucket)
        batch = np.stack([np.concatenate([c, np.full(padded - len(c), c[-1])]) for c in currents])
        signals, status, stop, event_time = jax.device_get(
            self._run(
                jnp.asarray(batch, dtype=jnp.float64),
                float(dt_s),
                jnp.asarray(ambient_temp_degc, dtype=jnp.float64) + KELVIN,
                jnp.asarray(heat_transfer_coeff, dtype=jnp.float64),
                jnp.asarray(initial_soc, dtype=jnp.float64),
            )
        )
        results = []
        for k, n in enumerate(lengths):
            code, last = int(status[k]), int(stop[k])
            ended = code != 0 and last < n - 1
            keep = last + 1 if ended else n
            profile = {name: np.asarray(signals[name][k, :keep], dtype=np.float64) for name in SIGNALS}
            text = OK
            if ended:
                reason = STATUS[code]
                text = stopped(group_of(reason), reason, float(event_time[k]))
            profile, text = enforce_temperature_limits(profile, text, self.datasheet)
            results.append(SimulationResult(profile, text))
        return results
