"""ONNX export of the deployed step with ``jax2onnx``, checked with ``onnx.checker``.

Two graphs: ``init.onnx`` (``initial_outputs`` → state tensors) and ``step.onnx`` (``inputs``
and the state tensors → ``outputs`` and the next state tensors, named ``next.<state name>``).
The weights are initializers of the graph; one sample per call, float32 (indices int32).
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import onnx

from cellax.deploy.step import DeployedStep


def export_onnx(step: DeployedStep, out: Path) -> dict[str, dict]:
    """Write ``init.onnx`` and ``step.onnx`` under ``out``; returns their input/output names."""
    from jax2onnx import to_onnx

    init_fn, step_fn = step.flat()
    spec = step.state_spec()
    names = [name for name, _, _ in spec]
    state = [jax.ShapeDtypeStruct(shape, jnp.dtype(dtype)) for _, shape, dtype in spec]
    graphs = {
        "init": (init_fn, [jax.ShapeDtypeStruct((step.task.n_outputs,), jnp.float32)], ["initial_outputs"], names),
        "step": (step_fn, [jax.ShapeDtypeStruct((step.n_inputs,), jnp.float32), *state], ["inputs", *names],
                 ["outputs", *(f"next.{n}" for n in names)]),
    }
    files = {}
    for name, (fn, inputs, input_names, output_names) in graphs.items():
        model = to_onnx(fn, inputs, model_name=f"cellax_{name}", input_names=input_names, output_names=output_names)
        onnx.checker.check_model(model, full_check=True)
        path = Path(out) / f"{name}.onnx"
        onnx.save(model, path)
        files[name] = {"file": path.name, "inputs": input_names, "outputs": output_names,
                       "opset": max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                       "converter": "jax2onnx"}
    return files
