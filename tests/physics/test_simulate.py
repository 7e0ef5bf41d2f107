"""simulate: bad input is refused before any solve; jit, vmap and grad work through it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cellax.physics import load_parameter_set
from cellax.physics.simulate import simulate
from cellax.physics.spm import SPM


@pytest.fixture(scope="module")
def params():
    return load_parameter_set("Chen2020")


@pytest.mark.parametrize(
    "current_a, dt_s, message",
    [
        (np.array([1.0, np.nan, 1.0]), 1.0, "NaN or infinite"),
        (np.array([1.0, np.inf, 1.0]), 1.0, "NaN or infinite"),
        (np.ones((3, 2)), 1.0, "1-D"),
        (np.ones(1), 1.0, "at least 2 samples"),
        (np.ones(5), 0.0, "dt_s must be positive"),
        (np.ones(5), -1.0, "dt_s must be positive"),
    ],
)
def test_bad_profiles_are_refused_before_solving(params, current_a, dt_s, message):
    with pytest.raises(ValueError, match=message):
        simulate(SPM(), params, current_a, dt_s, 0.5, 298.15)


def test_soc_outside_0_1_is_refused(params):
    with pytest.raises(ValueError, match="soc must lie in"):
        simulate(SPM(), params, np.ones(5), 1.0, 1.2, 298.15)


def test_vmap_over_profiles_and_grad_through_the_solver(params):
    model = SPM(10)
    currents = jnp.stack([jnp.full(30, 5.0), jnp.full(30, 10.0)])
    run = jax.jit(jax.vmap(lambda i: simulate(model, params, i, 1.0, 0.5, 298.15).signals["voltage_v"][-1]))
    v_end = run(currents)
    assert v_end.shape == (2,) and v_end[1] < v_end[0]

    def final_voltage(scale):
        p = jax.tree_util.tree_map(lambda x: x, params)
        p.scalars["neg_diffusivity_scale"] = scale
        return simulate(model, p, jnp.full(30, 5.0), 1.0, 0.5, 298.15).signals["voltage_v"][-1]

    scale = jnp.asarray(1.0, dtype=jnp.float64)
    gradient = jax.jit(jax.grad(final_voltage))(scale)
    voltage, step = jax.jit(final_voltage), 1e-3
    finite_difference = (voltage(scale + step) - voltage(scale - step)) / (2 * step)
    assert np.isfinite(float(gradient)) and float(gradient) > 0  # faster diffusion, less polarisation
    np.testing.assert_allclose(float(gradient), float(finite_difference), rtol=1e-3)
