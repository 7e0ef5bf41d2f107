"""A fitted equivalent-circuit model (ECM): the baseline a neural cell model must beat.

Electrical (series resistance and two RC pairs, exact zero-order-hold update over ``dt``)::

    soc_{k+1} = soc_k - I_k dt / (3600 Q)
    v_{j,k+1} = v_{j,k} e^{-dt/τ_j} + R_j (1 - e^{-dt/τ_j}) I_k            j = 1, 2
    V_k       = U(soc_k, T_c) - R_0 a(T_c) I_k - v_{1,k} - v_{2,k}
    U(soc, T) = U_p(y(soc)) - U_n(x(soc)) + (T - T_ref) dU/dT(soc)     (the parameter set's OCPs)

with ``a(soc, T) = (1 + b e^{-soc/0.1}) exp(E (1/T - 1/T_ref))`` on ``R_0``, ``R_1``, ``R_2``: Arrhenius in
temperature and a rise at low SOC. Thermal, two
nodes (core ``T_c``, surface ``T_s``), backward Euler (stable for any fitted constants)::

    C_c dT_c/dt = I (U - V) + I T_c dU/dT - G_cs (T_c - T_s)
    C_s dT_s/dt = G_cs (T_c - T_s) - G_sa (T_s - T_amb),   G_cs = g_0 + g_h h

where ``h`` is the profile's heat-transfer coefficient (the condition the sequence models are given).
Every constant is positive and fitted in log space by least squares (Levenberg–Marquardt) on the training
profiles, run free from each profile's measured initial SOC and temperatures. Float32 arrays.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx

from cellax.signals import KELVIN

T_REF_K = 298.15
OUTPUTS = ("voltage_v", "surface_temp_degc", "core_temp_degc", "soc", "ocv_v")
INITIAL = {  # log-space starting point: a 5 Ah 21700 cell
    "r0_ohm": 0.02, "r1_ohm": 0.01, "tau1_s": 20.0, "r2_ohm": 0.01, "tau2_s": 400.0, "capacity_ah": 5.0,
    "activation_k": 2000.0, "c_core_j_k": 60.0, "c_surf_j_k": 5.0, "g_cs0_w_k": 0.05, "g_csh_m2": 0.005,
    "g_sa_w_k": 0.05, "low_soc_rise": 0.5,
}


def ocv_table(parameter_set: str = "Chen2020", n: int = 201) -> dict[str, np.ndarray]:
    """``soc``, ``ocv_v`` at 25 °C and ``dudt_v_k`` on an ``n``-point SOC grid from a PyBaMM parameter set."""
    from cellax.physics.parameters import initial_stoichiometries, load_parameter_set

    params = load_parameter_set(parameter_set)
    soc = np.linspace(0.0, 1.0, n)
    x, y = initial_stoichiometries(params, soc)
    table = {"soc": soc, "ocv_v": np.asarray(params.pos_ocp(y, T_REF_K) - params.neg_ocp(x, T_REF_K)),
             "dudt_v_k": np.asarray(params.pos_entropic_change(y) - params.neg_entropic_change(x))}
    return {k: np.asarray(v, np.float64) for k, v in table.items()}


class ECM(eqx.Module):
    """OCV(SOC, T) from a parameter set, R0 + 2 RC, two-node thermal; ``log_*`` fields are the fitted constants."""

    log: dict[str, jax.Array]
    table: tuple[tuple[float, ...], ...] = eqx.field(static=True)  # (soc, ocv_v, dudt_v_k): constants, not fitted

    def __init__(self, table: dict[str, np.ndarray], initial: dict[str, float] | None = None):
        self.log = {k: jnp.log(jnp.float32(v)) for k, v in (initial or INITIAL).items()}
        self.table = tuple(tuple(float(v) for v in table[k]) for k in ("soc", "ocv_v", "dudt_v_k"))

    @property
    def constants(self) -> dict[str, jax.Array]:
        return {k: jnp.exp(v) for k, v in self.log.items()}

    def ocv(self, soc, temp_k):
        grids = [jnp.asarray(g, jnp.float32) for g in self.table]
        dudt = jnp.interp(soc, grids[0], grids[2])
        return jnp.interp(soc, grids[0], grids[1]) + (temp_k - T_REF_K) * dudt, dudt

    def __call__(self, current_a, ambient_degc, h, initial, dt_s: float = 1.0) -> jax.Array:
        """Free-running outputs ``(T, 5)`` in :data:`OUTPUTS` order from ``initial = (soc, T_surf, T_core)`` (°C)."""
        p = self.constants
        decay = jnp.exp(-dt_s / jnp.stack([p["tau1_s"], p["tau2_s"]]))
        r_rc = jnp.stack([p["r1_ohm"], p["r2_ohm"]])
        g_cs = p["g_cs0_w_k"] + p["g_csh_m2"] * h

        def step(state, inputs):
            soc, v_rc, t_c, t_s = state
            i_a, t_amb = inputs
            arrhenius = (1 + p["low_soc_rise"] * jnp.exp(-soc / 0.1)) * jnp.exp(p["activation_k"] * (1.0 / t_c - 1.0 / T_REF_K))
            u, dudt = self.ocv(soc, t_c)
            v = u - p["r0_ohm"] * arrhenius * i_a - jnp.sum(v_rc)
            heat_w = i_a * (u - v) + i_a * t_c * dudt
            # backward Euler on the linear two-node network
            a11, a12 = p["c_core_j_k"] / dt_s + g_cs, -g_cs
            a22 = p["c_surf_j_k"] / dt_s + g_cs + p["g_sa_w_k"]
            b1 = p["c_core_j_k"] / dt_s * t_c + heat_w
            b2 = p["c_surf_j_k"] / dt_s * t_s + p["g_sa_w_k"] * t_amb
            det = a11 * a22 - a12 * a12
            t_c1, t_s1 = (b1 * a22 - a12 * b2) / det, (a11 * b2 - a12 * b1) / det
            out = jnp.stack([v, t_s - KELVIN, t_c - KELVIN, soc, u])
            state = (soc - i_a * dt_s / (3600.0 * p["capacity_ah"]), v_rc * decay + r_rc * arrhenius * (1 - decay) * i_a,
                     t_c1, t_s1)
            return state, out

        soc0, t_s0, t_c0 = initial
        state = (soc0, jnp.zeros(2, jnp.float32), t_c0 + KELVIN, t_s0 + KELVIN)
        return jax.lax.scan(step, state, (current_a, ambient_degc + KELVIN))[1]


def stack(profiles: list[dict], conditions: np.ndarray) -> dict[str, jax.Array]:
    """Profiles (dicts of canonical signals) padded to one length, with a mask: the ECM's batch."""
    n = max(len(p["current_a"]) for p in profiles)

    def pad(v):
        v = np.asarray(v, np.float64)
        return np.concatenate([v, np.full(n - len(v), v[-1])])

    batch = {k: jnp.asarray(np.stack([pad(p[k]) for p in profiles]), jnp.float32)
             for k in ("current_a", "ambient_temp_degc", *OUTPUTS)}
    batch["mask"] = jnp.asarray(np.arange(n)[None] < np.array([len(p["current_a"]) for p in profiles])[:, None])
    batch["h"] = jnp.asarray(conditions, jnp.float32)
    return batch


@eqx.filter_jit
def predict(model: ECM, batch: dict, dt_s: float = 1.0) -> jax.Array:
    """``(P, T, 5)`` free-running outputs for a batch from :func:`stack`."""
    initial = (batch["soc"][:, 0], batch["surface_temp_degc"][:, 0], batch["core_temp_degc"][:, 0])
    return jax.vmap(lambda i, a, h, s0, ts, tc: model(i, a, h, (s0, ts, tc), dt_s))(
        batch["current_a"], batch["ambient_temp_degc"], batch["h"], *initial)


def residuals(model: ECM, batch: dict, scales: jax.Array, dt_s: float = 1.0) -> jax.Array:
    """Errors of all outputs at every valid sample, each divided by its scale (e.g. its train std), flattened."""
    target = jnp.stack([batch[k] for k in OUTPUTS], -1)
    err = (predict(model, batch, dt_s) - target) / scales
    return jnp.where(batch["mask"][..., None], err, 0.0).reshape(-1)


def loss(model: ECM, batch: dict, scales: jax.Array, dt_s: float = 1.0) -> jax.Array:
    """Mean squared scaled error over the valid samples."""
    return jnp.sum(residuals(model, batch, scales, dt_s) ** 2) / (jnp.sum(batch["mask"]) * len(OUTPUTS))


def fit(model: ECM, batch: dict, scales, steps: int = 50, dt_s: float = 1.0, log=None) -> tuple[ECM, list[float]]:
    """Least squares on the log constants: Levenberg–Marquardt steps (optimistix) through the free-running scan,
    the Jacobian by forward mode (13 columns). Returns the model and the loss after each accepted step."""
    params, static = eqx.partition(model, eqx.is_array)
    history = [float(loss(model, batch, scales, dt_s))]

    def fn(p, _):
        return residuals(eqx.combine(p, static), batch, scales, dt_s)

    solver = optx.LevenbergMarquardt(rtol=1e-6, atol=1e-9)
    for i in range(0, steps, 10):  # in blocks of 10, to log progress
        with jax.enable_x64(False):  # the ECM is float32; the solver's own scalars must not promote to float64
            solution = optx.least_squares(fn, solver, params, max_steps=min(10, steps - i), throw=False,
                                          options={"jac": "fwd"})
        params = solution.value
        history.append(float(loss(eqx.combine(params, static), batch, scales, dt_s)))
        if log:
            log(f"ecm fit step {i + 10}: loss {history[-1]:.4g}")
        if solution.result == optx.RESULTS.successful:
            break
    return eqx.combine(params, static), history


def estimate(model: ECM, current_a, voltage_v, surface_degc, h, dt_s: float = 1.0, soc0: float = 0.5,
             soc0_std: float = 0.3, voltage_std_v: float = 0.01) -> jax.Array:
    """Extended Kalman filter on the fitted ECM: ``(T, 3)`` estimates of (soc, core temperature °C, OCV).

    State ``(soc, v_1, v_2)`` from a guess ``soc0 ± soc0_std``, updated each sample with the measured
    voltage (``V = U(soc, T_c) - R_0 a I - v_1 - v_2``, noise ``voltage_std_v``, the model's own error);
    the core node is driven by the measured surface temperature through ``G_cs`` and the heat.
    """
    p = model.constants
    decay = jnp.exp(-dt_s / jnp.stack([p["tau1_s"], p["tau2_s"]]))
    r_rc = jnp.stack([p["r1_ohm"], p["r2_ohm"]])
    g_cs = p["g_cs0_w_k"] + p["g_csh_m2"] * h
    q = jnp.diag(jnp.array([1e-5, 1e-4, 1e-4], jnp.float32) ** 2)

    def step(carry, inputs):
        x, cov, t_c = carry
        i_a, v_meas, t_s = inputs
        soc = x[0]
        arrhenius = (1 + p["low_soc_rise"] * jnp.exp(-soc / 0.1)) * jnp.exp(p["activation_k"] * (1.0 / t_c - 1.0 / T_REF_K))
        (u, dudt), du_dsoc = model.ocv(soc, t_c), jax.grad(lambda s: model.ocv(s, t_c)[0])(soc)
        h_row = jnp.array([du_dsoc, -1.0, -1.0], jnp.float32)
        gain = cov @ h_row / (h_row @ cov @ h_row + voltage_std_v**2)
        x = x + gain * (v_meas - (u - p["r0_ohm"] * arrhenius * i_a - x[1] - x[2]))
        cov = (jnp.eye(3, dtype=jnp.float32) - jnp.outer(gain, h_row)) @ cov
        u = model.ocv(x[0], t_c)[0]
        out = jnp.stack([x[0], t_c - KELVIN, u])
        heat_w = i_a * (p["r0_ohm"] * arrhenius * i_a + x[1] + x[2]) + i_a * t_c * dudt  # I (U - V) + reversible
        t_c = (p["c_core_j_k"] / dt_s * t_c + heat_w + g_cs * t_s) / (p["c_core_j_k"] / dt_s + g_cs)
        a = jnp.diag(jnp.concatenate([jnp.ones(1, jnp.float32), decay]))
        x = a @ x + jnp.concatenate([-i_a * dt_s / (3600.0 * p["capacity_ah"])[None],
                                     r_rc * arrhenius * (1 - decay) * i_a])
        return (x, a @ cov @ a.T + q, t_c), out

    x0 = jnp.array([soc0, 0.0, 0.0], jnp.float32)
    cov0 = jnp.diag(jnp.array([soc0_std, 0.01, 0.01], jnp.float32) ** 2)
    t_s = surface_degc + KELVIN
    return jax.lax.scan(step, (x0, cov0, t_s[0]), (current_a, voltage_v, t_s))[1]


@eqx.filter_jit
def estimate_batch(model: ECM, batch: dict, dt_s: float = 1.0) -> jax.Array:
    """``(P, T, 3)`` filter estimates for a batch from :func:`stack` (its measured voltage and surface temperature)."""
    return jax.vmap(lambda i, v, t, h: estimate(model, i, v, t, h, dt_s))(
        batch["current_a"], batch["voltage_v"], batch["surface_temp_degc"], batch["h"])
