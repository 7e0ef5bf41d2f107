"""StableHLO export of the deployed step through ``jax.export``: serialized modules that a process
with only ``jax`` installed deserializes and calls (``jax.export.deserialize(data).call(*arrays)``).

Two files: ``init.stablehlo`` (initial outputs → state arrays) and ``step.stablehlo``
(inputs, state arrays → outputs, state arrays), float32 (the index arrays int32), CPU.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp

from cellax.deploy.step import DeployedStep


def export_stablehlo(step: DeployedStep, out: Path) -> dict[str, dict]:
    """Write ``init.stablehlo`` and ``step.stablehlo`` under ``out``; returns their calling conventions."""
    init_fn, step_fn = step.flat()
    n_out = step.task.n_outputs
    state = [jax.ShapeDtypeStruct(shape, jnp.dtype(dtype)) for _, shape, dtype in step.state_spec()]
    files = {
        "init": jax.export.export(jax.jit(init_fn))(jax.ShapeDtypeStruct((n_out,), jnp.float32)),
        "step": jax.export.export(jax.jit(step_fn))(jax.ShapeDtypeStruct((step.n_inputs,), jnp.float32), *state),
    }
    conventions = {}
    for name, exported in files.items():
        path = Path(out) / f"{name}.stablehlo"
        path.write_bytes(exported.serialize())
        conventions[name] = {
            "file": path.name,
            "calling_convention_version": exported.calling_convention_version,
            "platforms": list(exported.platforms),
            "call": "jax.export.deserialize(bytes).call(*arrays) -> tuple of arrays",
        }
    return conventions
