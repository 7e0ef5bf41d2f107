"""FastCharge-v0: charge a lithium-ion cell to a target SOC as fast as its limits allow (gymnax API).

The cell is any :class:`~cellax.physics.model.AbstractCellModel` (default
:mod:`cellax.physics`' SPMe with the two-node lumped thermal model; also the SPM
or a hybrid model built on the contract), advanced by
:func:`cellax.physics.simulate.advance` (by default one ETD2 step per control
interval: exact in the linear diffusion, and more accurate than three ROS2 steps;
see ``docs/rl.md``). One step holds the chosen charging current for
``control_interval_s`` seconds.

* **Action**: charging current as a C-rate, ``Box(0, max_c_rate, (1,))``; the
  applied current is ``current_a = -c_rate * nominal_capacity_ah`` (negative =
  charge). Out-of-range actions are clipped, NaN/inf actions apply no current.
* **Observation** (float32, 7 entries, each 0 at its limit where it has one)::

      0  soc                                             state of charge, 0..1
      1  (voltage_v - voltage_max_v) / 0.1 V             > 0: above the voltage limit
      2  (surface_temp_degc - surface_temp_max_degc) / 10 K
      3  (core_temp_degc - surface_temp_max_degc) / 10 K
      4  (anode_potential_v - anode_potential_min_v) / 0.1 V   < 0: lithium plating
      5  previous c_rate / max_c_rate                    0..1
      6  step / max_steps_in_episode                     0..1

* **Reward** per step, with ``Δsoc`` the progress toward the target
  (``min(soc', target) - min(soc, target)``) and ``[x]_+ = max(x, 0)``::

      r = soc_reward · Δsoc − time_penalty
          − voltage_penalty     · (1[V > V_max]      + [V − V_max]_+ / 10 mV)
          − temperature_penalty · (1[T_s > T_max]    + [T_s − T_max]_+ / 1 K)
          − plating_penalty     · (1[φ_a < φ_min]    + [φ_min − φ_a]_+ / 10 mV)
          − invalid_penalty     · 1[invalid]

  The limits are checked at the end of each interval (where, under a constant
  charging current, voltage and temperature peak and the anode potential dips).
* **Termination**: the target SOC is reached, or the step leaves the model's
  valid region (electrolyte depleted, a stoichiometry outside (0, 1), non-finite
  values: :func:`cellax.physics.simulate.check_state`). An invalid step is
  discarded: the state stays at the last valid one, so observations never carry
  NaN. **Truncation** after ``max_steps_in_episode`` steps (gymnax's
  ``is_truncated``).
* **Invalid parameters** (:data:`PARAM_RULES`: NaN, SOC outside ``[0, 1]``, a C-rate or
  control interval ``<= 0``, ...): concrete ``EnvParams`` raise ``ValueError`` in
  :func:`check_params`, which ``reset`` and ``step`` call before they jit; traced ones cannot raise, so
  the episode starts and ends at once with ``invalid``, status ``invalid_input``, a zero
  observation and reward and no current applied.

Transition gradients (gymnax's :meth:`with_transition_gradients`): by default
observation and state are detached; on the configured copy, gradients of
observation, state and reward flow through the cell model to the action, the
previous state and the continuous ``EnvParams``. To keep them finite on an
invalid step the model is then evaluated twice: once, undifferentiated, to find
out whether the step is valid, and once with a sanitised current (0 A on an
invalid step), so that NaN never enters the differentiated computation.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces

from cellax.physics import load_parameter_set
from cellax.physics.model import AbstractCellModel
from cellax.physics.simulate import advance, check_state, status_code
from cellax.physics.spme import SPMe
from cellax.physics.stepping import stepper
from cellax.signals import KELVIN
from cellax.status import INVALID, STATUS

OBS_SIZE = 7
VOLTAGE_SCALE_V = 0.1
TEMP_SCALE_K = 10.0
ANODE_SCALE_V = 0.1
VOLTAGE_EXCESS_V = 0.01  # penalty scales: one penalty weight per this much excess
TEMP_EXCESS_K = 1.0
PLATING_EXCESS_V = 0.01
FIRST_INVALID = STATUS.index(INVALID[0])  # codes from here on: the model is invalid
INVALID_INPUT = STATUS.index("invalid_input")


@struct.dataclass
class EnvState(environment.EnvState):
    """Cell state, its signals at the end of the last interval, and episode bookkeeping."""

    cell: Any  # the cell model's state (an ``SPMeState`` for the SPMe and hybrids built on it)
    soc: jax.Array
    voltage_v: jax.Array
    surface_temp_degc: jax.Array
    core_temp_degc: jax.Array
    anode_potential_v: jax.Array
    current_a: jax.Array  # applied over the last interval (negative = charge)
    charge_time_s: jax.Array
    n_voltage_violations: jax.Array
    n_temperature_violations: jax.Array
    n_plating_violations: jax.Array
    invalid: jax.Array  # the episode ended on an invalid step
    time: jax.Array


@struct.dataclass
class EnvParams(environment.EnvParams):
    """Per-episode conditions, limits and reward weights (all may be traced)."""

    ambient_temp_degc: float = 25.0
    initial_soc_min: float = 0.1
    initial_soc_max: float = 0.3
    initial_temp_min_degc: float = 20.0
    initial_temp_max_degc: float = 30.0
    target_soc: float = 0.8
    max_c_rate: float = 3.0
    voltage_max_v: float = 4.2
    surface_temp_max_degc: float = 45.0
    anode_potential_min_v: float = 0.0
    control_interval_s: float = 30.0
    soc_reward: float = 100.0
    time_penalty: float = 0.1
    voltage_penalty: float = 1.0
    temperature_penalty: float = 1.0
    plating_penalty: float = 1.0
    invalid_penalty: float = 100.0
    max_steps_in_episode: int = 240


def _weight(name):
    return name, ">= 0", lambda p: getattr(p, name) >= 0


PARAM_RULES = (
    ("ambient_temp_degc", "above -273.15 degC", lambda p: p.ambient_temp_degc > -KELVIN),
    ("initial_soc_min", "in [0, initial_soc_max]",
     lambda p: (p.initial_soc_min >= 0) & (p.initial_soc_min <= p.initial_soc_max)),
    ("initial_soc_max", "at most 1", lambda p: p.initial_soc_max <= 1),
    ("initial_temp_min_degc", "above -273.15 degC and at most initial_temp_max_degc",
     lambda p: (p.initial_temp_min_degc > -KELVIN) & (p.initial_temp_min_degc <= p.initial_temp_max_degc)),
    ("initial_temp_max_degc", "", lambda p: True),
    ("target_soc", "in (0, 1]", lambda p: (p.target_soc > 0) & (p.target_soc <= 1)),
    ("max_c_rate", "> 0", lambda p: p.max_c_rate > 0),
    ("voltage_max_v", "> 0", lambda p: p.voltage_max_v > 0),
    ("surface_temp_max_degc", "", lambda p: True),
    ("anode_potential_min_v", "", lambda p: True),
    ("control_interval_s", "> 0", lambda p: p.control_interval_s > 0),
    *(_weight(name) for name in ("soc_reward", "time_penalty", "voltage_penalty", "temperature_penalty",
                                 "plating_penalty", "invalid_penalty")),
    ("max_steps_in_episode", ">= 1", lambda p: p.max_steps_in_episode >= 1),
)
"""``(field, wanted, predicate)`` per :class:`EnvParams` field; every field must also be finite."""


def check_params(params: EnvParams) -> EnvParams:
    """``params``, or ``ValueError`` naming the first concrete field that breaks :data:`PARAM_RULES`
    (traced fields are skipped: :func:`params_valid` checks them inside ``jit``)."""
    concrete = params.replace(**{
        f.name: np.asarray(getattr(params, f.name)) for f in dataclasses.fields(params)
        if not isinstance(getattr(params, f.name), jax.core.Tracer)
    })
    for name, wanted, rule in PARAM_RULES:
        value = getattr(concrete, name)
        if isinstance(value, jax.core.Tracer):
            continue
        ok = np.isfinite(value) & rule(concrete)
        if not isinstance(ok, jax.core.Tracer) and not np.all(ok):
            wanted = f"finite and {wanted}" if wanted else "finite"
            raise ValueError(f"EnvParams.{name} must be {wanted}, got {getattr(params, name)}")
    return params


def params_valid(params: EnvParams) -> jax.Array:
    """Whether ``params`` meet :data:`PARAM_RULES` (traceable; :func:`check_params` raises instead)."""
    return jnp.all(jnp.stack([
        jnp.all(jnp.isfinite(jnp.asarray(getattr(params, name))) & jnp.asarray(rule(params)))
        for name, _, rule in PARAM_RULES
    ]))


class FastCharge(environment.Environment[EnvState, EnvParams]):
    """Fast charging of one cell (a cell model + two-node thermal) under voltage, temperature and plating limits.

    ``parameter_set``: a PyBaMM set name or a loaded :class:`~cellax.physics.ParameterSet`;
    ``mesh``: ``(n_shells, x_counts)`` of the default SPMe (default: PyBaMM's reference mesh,
    20 / (20, 20, 20)), or a cell model; ``model``: the cell model, any
    :class:`~cellax.physics.model.AbstractCellModel` (SPM, SPMe, a hybrid; not with ``mesh``);
    ``solver``, ``substeps``: the one-step method (``"etd2"`` or ``"ros2"``, :mod:`cellax.physics.stepping`) and
    its steps per control interval; ``dtype``: the model's float type (float64
    as validated; float32 is faster). The parameter set and its stiff operators are computed
    once here and are constants of the environment. The model's ``outputs`` must include
    ``soc``, ``voltage_v``, ``surface_temp_degc``, ``core_temp_degc`` and ``anode_potential_v``.
    """

    _supports_transition_gradients = True

    def __init__(self, parameter_set="Chen2020", mesh=None, substeps: int = 1, dtype=jnp.float64,
                 model: AbstractCellModel | None = None, solver: str = "etd2"):
        super().__init__()
        params = load_parameter_set(parameter_set) if isinstance(parameter_set, str) else parameter_set
        if isinstance(mesh, AbstractCellModel) and model is None:
            mesh, model = None, mesh
        if model is not None and mesh is not None:
            raise ValueError("give either mesh (for the default SPMe) or model, not both")
        if model is not None and not isinstance(model, AbstractCellModel):
            raise TypeError(f"model must be a cellax.physics.model.AbstractCellModel, got {type(model).__name__}")
        if model is None:
            model = SPMe() if mesh is None else SPMe(*mesh)
        if isinstance(substeps, bool) or not isinstance(substeps, int) or substeps < 1:
            raise ValueError(f"substeps must be a positive integer, got {substeps!r}")
        stepper(solver)  # refused here, not at the first traced step
        operators = model.stiff_operators(params)  # eigendecompositions in float64, then cast
        self.model = model
        self.parameter_set = params.astype(dtype)
        self.operators = jax.tree_util.tree_map(lambda x: x.astype(dtype), operators)
        self.substeps = substeps
        self.solver = solver
        self.dtype = jnp.dtype(dtype)
        self.capacity_ah = float(params.scalars["nominal_capacity_ah"])
        self.obs_shape = (OBS_SIZE,)

    def reset(self, key: jax.Array, params: EnvParams | None = None) -> tuple[jax.Array, EnvState]:
        """gymnax's ``reset`` (jitted); concrete ``params`` are checked first (:func:`check_params`)."""
        return super().reset(key, None if params is None else check_params(params))

    def step(self, key: jax.Array, state: EnvState, action, params: EnvParams | None = None):
        """gymnax's ``step`` (jitted, auto-reset); concrete ``params`` are checked first (:func:`check_params`)."""
        return super().step(key, state, action, None if params is None else check_params(params))

    @property
    def default_params(self) -> EnvParams:
        """Defaults, with the voltage limit from the parameter set."""
        return EnvParams(voltage_max_v=float(self.parameter_set.scalars["voltage_max_v"]))

    def step_env(
        self, key: jax.Array, state: EnvState, action: int | float | jax.Array, params: EnvParams
    ) -> tuple[jax.Array, EnvState, jax.Array, jax.Array, dict[str, Any]]:
        """Hold the action's charging current for one control interval."""
        check_params(params)
        valid_params = params_valid(params)
        dt_s = jnp.where(valid_params, jnp.asarray(params.control_interval_s, self.dtype), 0.0)
        ambient_k = self._ambient_k(params, valid_params)
        c_rate = jnp.where(valid_params, action_to_c_rate(action, params), 0.0)
        current_a = (-c_rate * self.capacity_ah).astype(self.dtype)

        if self.transition_gradients_enabled:
            _, _, code = self._advance(state.cell, jax.lax.stop_gradient(current_a), dt_s, ambient_k)
            invalid = code >= FIRST_INVALID
            current_safe = jnp.where(invalid, jnp.zeros_like(current_a), current_a)
            new_cell, signals, _ = self._advance(state.cell, current_safe, dt_s, ambient_k)
        else:
            new_cell, signals, code = self._advance(state.cell, current_a, dt_s, ambient_k)
            invalid = code >= FIRST_INVALID
        code = jnp.where(valid_params, code, INVALID_INPUT)
        invalid = invalid | ~valid_params

        def keep(new, old):  # the last valid state on an invalid step
            return jnp.where(invalid, old, new)

        cell = jax.tree_util.tree_map(keep, new_cell, state.cell)
        soc = keep(signals["soc"], state.soc)
        voltage = keep(signals["voltage_v"], state.voltage_v)
        surface = keep(signals["surface_temp_degc"], state.surface_temp_degc)
        core = keep(signals["core_temp_degc"], state.core_temp_degc)
        anode = keep(signals["anode_potential_v"], state.anode_potential_v)

        # a discarded step checks no limits (the kept state's were counted already)
        voltage_excess, temp_excess, plating_excess = limit_excess(voltage, surface, anode, params, valid=~invalid)
        over_voltage, over_temp, plating = voltage_excess > 0, temp_excess > 0, plating_excess > 0
        progress = jnp.minimum(soc, params.target_soc) - jnp.minimum(state.soc, params.target_soc)
        reward = (
            params.soc_reward * progress
            - params.time_penalty
            - params.voltage_penalty * (over_voltage + jnp.maximum(voltage_excess, 0) / VOLTAGE_EXCESS_V)
            - params.temperature_penalty * (over_temp + jnp.maximum(temp_excess, 0) / TEMP_EXCESS_K)
            - params.plating_penalty * (plating + jnp.maximum(plating_excess, 0) / PLATING_EXCESS_V)
            - params.invalid_penalty * invalid
        )
        reward = jnp.where(valid_params, reward, 0.0)
        reached = soc >= params.target_soc
        terminated = reached | invalid

        state = EnvState(
            cell=cell,
            soc=soc,
            voltage_v=voltage,
            surface_temp_degc=surface,
            core_temp_degc=core,
            anode_potential_v=anode,
            current_a=jnp.where(invalid, jnp.zeros_like(current_a), current_a),
            charge_time_s=state.charge_time_s + dt_s,
            n_voltage_violations=state.n_voltage_violations + over_voltage.astype(jnp.int32),
            n_temperature_violations=state.n_temperature_violations + over_temp.astype(jnp.int32),
            n_plating_violations=state.n_plating_violations + plating.astype(jnp.int32),
            invalid=invalid,
            time=state.time + 1,
        )
        info = {
            "charge_time_s": state.charge_time_s,
            "soc": soc,
            "voltage_v": voltage,
            "surface_temp_degc": surface,
            "core_temp_degc": core,
            "anode_potential_v": anode,
            "current_a": current_a,
            "c_rate": c_rate,
            "voltage_violation": over_voltage,
            "temperature_violation": over_temp,
            "plating_violation": plating,
            "n_voltage_violations": state.n_voltage_violations,
            "n_temperature_violations": state.n_temperature_violations,
            "n_plating_violations": state.n_plating_violations,
            "reached_target": reached,
            "invalid": invalid,
            "status": code.astype(jnp.int32),
            "discount": 1.0 - terminated.astype(jnp.float32),
        }
        obs, state = self._apply_transition_gradient_policy(self.get_obs(state, params), state)
        return obs, state, reward.astype(jnp.float32), terminated, info

    def reset_env(self, key: jax.Array, params: EnvParams) -> tuple[jax.Array, EnvState]:
        """A cell at rest with SOC and temperature drawn uniformly from their ranges (invalid ``params``:
        a cell at 50 % and 25 degC, ``invalid`` set)."""
        check_params(params)
        valid_params = params_valid(params)
        key_soc, key_temp = jax.random.split(key)
        soc = jax.random.uniform(
            key_soc, (), self.dtype, minval=params.initial_soc_min, maxval=params.initial_soc_max
        )
        temp_k = KELVIN + jax.random.uniform(
            key_temp, (), self.dtype, minval=params.initial_temp_min_degc, maxval=params.initial_temp_max_degc
        )
        soc = jnp.where(valid_params, soc, 0.5)
        temp_k = jnp.where(valid_params, temp_k, KELVIN + 25.0)
        ambient_k = self._ambient_k(params, valid_params)
        cell = self.model.initial_state(self.parameter_set, soc, temp_k)
        zero = jnp.zeros((), self.dtype)
        signals = self.model.rest_outputs(self.parameter_set, cell, ambient_k)  # gymnax resets at every step
        count = jnp.zeros((), jnp.int32)
        state = EnvState(
            cell=cell,
            soc=signals["soc"],
            voltage_v=signals["voltage_v"],
            surface_temp_degc=signals["surface_temp_degc"],
            core_temp_degc=signals["core_temp_degc"],
            anode_potential_v=signals["anode_potential_v"],
            current_a=zero,
            charge_time_s=zero,
            n_voltage_violations=count,
            n_temperature_violations=count,
            n_plating_violations=count,
            invalid=~valid_params,
            time=count,
        )
        return self.get_obs(state, params), state

    def get_obs(self, state: EnvState, params: EnvParams | None = None, key=None) -> jax.Array:
        """The normalised observation of the module docstring (float32, shape (7,)); zero for invalid ``params``."""
        params = self.default_params if params is None else params
        return jnp.where(params_valid(params), observation(state, params, self.capacity_ah), 0.0)

    def is_terminated(self, state: EnvState, params: EnvParams) -> jax.Array:
        """Target reached or the last step was invalid."""
        return (state.soc >= params.target_soc) | state.invalid

    def _ambient_k(self, params: EnvParams, valid_params) -> jax.Array:
        return jnp.where(valid_params, jnp.asarray(params.ambient_temp_degc + KELVIN, self.dtype), KELVIN + 25.0)

    def _advance(self, cell, current_a, dt_s, ambient_k):
        """``(new_cell, signals, status)``; status is a :data:`STATUS` code >= FIRST_INVALID when invalid."""
        new_cell, signals = advance(
            self.model, self.parameter_set, self.operators, cell, current_a, dt_s, ambient_k, self.substeps, self.solver
        )
        return new_cell, signals, invalid_code(self.model, self.parameter_set, new_cell, signals)

    @property
    def name(self) -> str:
        return "FastCharge-v0"

    @property
    def num_actions(self) -> int:
        return 1

    def action_space(self, params: EnvParams | None = None) -> spaces.Box:
        """Charging C-rate in ``[0, max_c_rate]``."""
        params = self.default_params if params is None else params
        return spaces.Box(low=0.0, high=params.max_c_rate, shape=(1,), dtype=jnp.float32)

    def observation_space(self, params: EnvParams | None = None) -> spaces.Box:
        """Unbounded physical entries; the current and time fractions in ``[0, 1]``."""
        low = jnp.array([-jnp.inf] * 5 + [0.0, 0.0], dtype=jnp.float32)
        high = jnp.array([jnp.inf] * 5 + [1.0, 1.0], dtype=jnp.float32)
        return spaces.Box(low, high, shape=self.obs_shape, dtype=jnp.float32)


def observation(state: EnvState, params: EnvParams, capacity_ah) -> jax.Array:
    """The normalised observation (float32, shape (7,)): SOC; voltage, surface and core temperature and anode
    potential relative to their limits, over ``VOLTAGE_SCALE_V``, ``TEMP_SCALE_K``, ``ANODE_SCALE_V``; the
    charging current as a fraction of ``max_c_rate``; the elapsed fraction of the episode."""
    return jnp.stack(
        [
            state.soc,
            (state.voltage_v - params.voltage_max_v) / VOLTAGE_SCALE_V,
            (state.surface_temp_degc - params.surface_temp_max_degc) / TEMP_SCALE_K,
            (state.core_temp_degc - params.surface_temp_max_degc) / TEMP_SCALE_K,
            (state.anode_potential_v - params.anode_potential_min_v) / ANODE_SCALE_V,
            -state.current_a / (capacity_ah * params.max_c_rate),
            state.time / params.max_steps_in_episode,
        ]
    ).astype(jnp.float32)


def decode_observation(obs: jax.Array, params: EnvParams) -> dict[str, jax.Array]:
    """The physical values an :func:`observation` carries (the policies' view of the cell)."""
    return {
        "soc": obs[0],
        "voltage_v": params.voltage_max_v + VOLTAGE_SCALE_V * obs[1],
        "surface_temp_degc": params.surface_temp_max_degc + TEMP_SCALE_K * obs[2],
        "core_temp_degc": params.surface_temp_max_degc + TEMP_SCALE_K * obs[3],
        "anode_potential_v": params.anode_potential_min_v + ANODE_SCALE_V * obs[4],
        "c_rate": obs[5] * params.max_c_rate,
        "time_fraction": obs[6],
    }


def limit_excess(voltage_v, surface_temp_degc, anode_potential_v, params: EnvParams, valid=True):
    """``(voltage, temperature, plating)`` excess over the limits (positive: violated); 0 where not ``valid``."""
    return (
        jnp.where(valid, voltage_v - params.voltage_max_v, 0.0),
        jnp.where(valid, surface_temp_degc - params.surface_temp_max_degc, 0.0),
        jnp.where(valid, params.anode_potential_min_v - anode_potential_v, 0.0),
    )


def action_to_c_rate(action, params: EnvParams) -> jax.Array:
    """The C-rate an action applies: a size-1 action clipped to ``[0, max_c_rate]``; NaN/inf -> 0."""
    action = jnp.reshape(jnp.asarray(action), ())
    if not jnp.issubdtype(action.dtype, jnp.floating):
        action = action.astype(jnp.float32)
    finite = jnp.isfinite(action)
    return jnp.clip(jnp.where(finite, action, 0.0), 0.0, params.max_c_rate)


def invalid_code(model, parameter_set, cell, signals) -> jax.Array:
    """:data:`~cellax.status.STATUS` code of the model-validity checks only (0, or >= ``FIRST_INVALID``):
    the first raised :data:`~cellax.status.INVALID` flag of :func:`check_state`, with any non-finite signal
    counting as ``solver_failed``."""
    flags = check_state(model, parameter_set, cell, signals)
    finite = jnp.all(jnp.stack([jnp.isfinite(v) for v in signals.values()]))
    return status_code({**flags, "solver_failed": flags["solver_failed"] | ~finite}, INVALID)
