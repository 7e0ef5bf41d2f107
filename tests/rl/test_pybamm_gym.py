"""The benchmark's anchor (benchmarks/pybamm_gym.py) is the same environment as FastCharge on PyBaMM."""

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cellax.physics.spme import SPMe
from tests.rl.conftest import COARSE_MESH

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "pybamm_gym.py"


@pytest.fixture(scope="module")
def pybamm_gym():
    spec = importlib.util.spec_from_file_location("pybamm_gym", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pybamm_env_matches_fastcharge(pybamm_gym, env, params):
    """Same observations, rewards and flags step by step; the physics within the time-stepping error of
    the default one ETD2 step per 30 s interval after current steps (a few mV, 0.1 K; 1 s steps agree to
    0.1 mV)."""
    reference = pybamm_gym.PybammFastCharge(params, var_pts=SPMe(*COARSE_MESH).pybamm_var_pts)
    assert reference.observation_space.shape == (7,) and reference.action_space.shape == (1,)
    obs_ref, _ = reference.reset(seed=0)
    obs, state = env.reset(jax.random.key(0), params)
    np.testing.assert_allclose(obs_ref, np.asarray(obs), atol=2e-4)
    for c_rate in [1.0] * 6 + [1.5] * 3 + [0.5] * 3 + [0.0] * 2 + [float("nan")]:
        action = np.array([c_rate], np.float32)
        obs_ref, reward_ref, terminated_ref, truncated_ref, info_ref = reference.step(action)
        obs, state, reward, terminated, truncated, info = env.step(jax.random.key(1), state, jnp.asarray(action), params)
        assert info_ref["c_rate"] == pytest.approx(float(info["c_rate"]))
        assert info_ref["soc"] == pytest.approx(float(info["soc"]), abs=1e-5)
        assert info_ref["voltage_v"] == pytest.approx(float(info["voltage_v"]), abs=5e-3)
        assert info_ref["anode_potential_v"] == pytest.approx(float(info["anode_potential_v"]), abs=3e-3)
        assert info_ref["surface_temp_degc"] == pytest.approx(float(info["surface_temp_degc"]), abs=0.1)
        assert info_ref["core_temp_degc"] == pytest.approx(float(info["core_temp_degc"]), abs=0.2)
        assert reward_ref == pytest.approx(float(reward), abs=0.05)
        assert (terminated_ref, truncated_ref) == (bool(terminated), bool(truncated))
        np.testing.assert_allclose(obs_ref, np.asarray(obs), atol=0.05)
