"""Physics-informed loss terms: residuals of the cell's own equations on a sequence model's predictions.

Each term is evaluated on a window of predictions ``ŷ`` (and the task's inputs where a signal is
not predicted), in physical units, with the dataset's cell (:mod:`cellax.data.cell`), and made
dimensionless by a scale from the training data, so that a weight of 1 ranks a term beside the
normalised data loss. Differences are between consecutive samples ``t, t+1`` (``Δ``) and rates are
averaged over the interval (trapezoid, ``\\bar f``), so a trajectory of the true cell sampled at
``dt`` has residuals of order ``dt²``:

* **charge** (conservation of charge):
  :math:`r = \\big(Δ\\mathrm{soc} + \\bar I\\,dt / 3600 Q\\big) / s_\\mathrm{soc}`, with ``Q`` the
  charge between 0 and 100 % SOC (:func:`soc_capacity_ah`);
* **thermal** (the two-node energy balance, :mod:`cellax.physics.thermal`): the residuals of
  :math:`C(T)\\dot T = Q - hA(T - T_s)` and :math:`C_s \\dot T_s = hA(T - T_s) - (T_s - T_a)/R`
  with the Bernardi heat :math:`Q = I(U - V) - I T\\,\\partial U/\\partial T` (plus the collectors'
  Joule heat), ``U`` and ``∂U/∂T`` at the stoichiometries of the SOC;
* **ocv** (consistency of the OCV with the SOC):
  :math:`r = (\\widehat{\\mathrm{ocv}} - U_p(y(\\mathrm{soc}), T) + U_n(x(\\mathrm{soc}), T)) / σ_\\mathrm{ocv}`;
* **cell_model** (consistency with the differentiable SPMe run on the same inputs from the window's
  measured initial SOC and temperature, held fixed): the normalised squared difference of every
  output the SPMe also gives. On the training windows it restates what the data already say; with
  ``cell_model_ambient_degc`` it is evaluated on *collocation windows* instead (:meth:`PhysicsLoss.collocation`):
  each training window's current at an ambient ``a_b = a_lo + (a_hi - a_lo)(b + ½)/B`` spread over the
  batch, started from the measured SOC and the measured temperature rise over ambient, where the
  SPMe's outputs are the only targets. Physics then speaks where there is no data, as a PINN's
  residual points do.

The scales ``s`` are the RMS of the measured one-sample change of each quantity over the training
profiles (:func:`rate_scales`); ``σ`` is the normalisation's standard deviation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from cellax.data.cell import dataset_parameters
from cellax.data.config import DataConfig
from cellax.data.loader import iterate_profiles
from cellax.data.store import open_dataset
from cellax.physics.parameters import ParameterSet, initial_stoichiometries, soc_capacity_ah
from cellax.physics.thermal import collector_heat_w, two_node_rates
from cellax.signals import KELVIN

TERMS = ("charge", "thermal", "ocv", "cell_model")
NEEDS = {  # term -> signals it reads (predicted where the task predicts them, else inputs)
    "charge": ("soc", "current_a"),
    "thermal": ("soc", "current_a", "voltage_v", "ocv_v", "core_temp_degc", "surface_temp_degc", "ambient_temp_degc"),
    "ocv": ("soc", "ocv_v", "core_temp_degc"),
    "cell_model": ("soc", "current_a", "core_temp_degc", "ambient_temp_degc"),
}
RATE_SIGNALS = ("soc", "core_temp_degc", "surface_temp_degc")
CELL_MODEL_OUTPUTS = ("voltage_v", "surface_temp_degc", "core_temp_degc", "soc", "ocv_v")


def check_terms(terms: Iterable[str], inputs: Iterable[str], outputs: Iterable[str]) -> None:
    """Raise ``ValueError`` naming a term that lacks a signal (``soc``, never an input, is always predicted)."""
    available = {*inputs, *outputs}
    for term in terms:
        missing = sorted(set(NEEDS[term]) - available)
        if missing:
            raise ValueError(f"physics.{term} needs signal(s) {missing}, which are neither inputs nor outputs")


def rate_scales(profiles: Iterable[dict], names: Iterable[str] = RATE_SIGNALS) -> dict[str, float]:
    """RMS of the one-sample change of each signal in ``names`` over ``profiles`` (``{name: (T,)}``)."""
    sums = dict.fromkeys(names, 0.0)
    count = 0
    for profile in profiles:
        length = len(next(iter(profile.values())))
        if length < 2:
            continue
        for name in sums:
            sums[name] += float(np.sum(np.diff(np.asarray(profile[name], np.float64)) ** 2))
        count += length - 1
    if count == 0:
        raise ValueError("no training profile has two samples to measure rates from")
    return {name: max(float(np.sqrt(total / count)), 1e-12) for name, total in sums.items()}


@dataclass(frozen=True)
class PhysicsLoss:
    """The weighted physics terms of a task; ``__call__`` gives ``{term: mean squared residual}``.

    ``params`` is the dataset's cell in float32; ``heat_transfer_coeff`` a constant (W/m²K), or
    ``None`` when each window carries it as the condition channel of that name.
    """

    weights: dict[str, float]
    params: ParameterSet
    mean: dict[str, float]
    std: dict[str, float]
    scales: dict[str, float]
    dt_s: float
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    heat_transfer_coeff: float | None = None
    collocation_ambient_degc: tuple[float, float] | None = None

    def physical(self, name: str, prediction: Float[Array, "B T n_out"], batch: dict) -> Float[Array, "B T"]:
        """Signal ``name`` in its unit: predicted where the task predicts it, else the input."""
        normalised = prediction[..., self.outputs.index(name)] if name in self.outputs else batch[name]
        return normalised * self.std[name] + self.mean[name]

    def _h(self, batch: dict):
        if self.heat_transfer_coeff is not None:
            return self.heat_transfer_coeff
        return batch["heat_transfer_coeff"] * self.std["heat_transfer_coeff"] + self.mean["heat_transfer_coeff"]

    def __call__(self, prediction: Float[Array, "B T n_out"], batch: dict, predict=None) -> dict[str, Array]:
        """``{term: value}``; ``predict(batch) -> prediction`` runs the model on the collocation windows
        (needed when ``collocation_ambient_degc`` is set)."""
        get = lambda name: self.physical(name, prediction, batch)  # noqa: E731
        terms = {}
        for term in self.weights:
            if term == "cell_model" and self.collocation_ambient_degc is not None:
                windows, reference = self.collocation(batch)
                terms[term] = self.reference_error(predict(windows), reference)
            else:
                terms[term] = getattr(self, f"_{term}")(get, prediction, batch)
        return terms

    def _charge(self, get, prediction, batch):
        current = get("current_a")
        mean_current = 0.5 * (current[:, 1:] + current[:, :-1])
        step = jnp.diff(get("soc"), axis=1) + mean_current * self.dt_s / (3600.0 * soc_capacity_ah(self.params))
        return jnp.mean((step / self.scales["soc"]) ** 2)

    def _thermal(self, get, prediction, batch):
        p, s = self.params, self.params.scalars
        h = self._h(batch)
        p = p.with_values({"heat_transfer_coeff_w_m2k": jnp.broadcast_to(h, get("soc").shape)})
        current, soc = get("current_a"), get("soc")
        core_k, surface_k = get("core_temp_degc") + KELVIN, get("surface_temp_degc") + KELVIN
        x, y = initial_stoichiometries(p, soc)
        entropic_v_k = p.pos_entropic_change(y) - p.neg_entropic_change(x)
        current_density = current / (s["n_electrodes_parallel"] * s["electrode_area_m2"])
        heat_w = (current * (get("ocv_v") - get("voltage_v")) - current * core_k * entropic_v_k
                  + collector_heat_w(p, current_density))
        core_rate, surface_rate = two_node_rates(p, heat_w, core_k, surface_k, get("ambient_temp_degc") + KELVIN)
        mid = lambda v: 0.5 * (v[:, 1:] + v[:, :-1])  # noqa: E731
        core = (jnp.diff(core_k, axis=1) - mid(core_rate) * self.dt_s) / self.scales["core_temp_degc"]
        surface = (jnp.diff(surface_k, axis=1) - mid(surface_rate) * self.dt_s) / self.scales["surface_temp_degc"]
        return 0.5 * (jnp.mean(core**2) + jnp.mean(surface**2))

    def _ocv(self, get, prediction, batch):
        p = self.params
        temp_k = get("core_temp_degc") + KELVIN
        x, y = initial_stoichiometries(p, jnp.clip(get("soc"), 0.0, 1.0))
        return jnp.mean(((get("ocv_v") - p.pos_ocp(y, temp_k) + p.neg_ocp(x, temp_k)) / self.std["ocv_v"]) ** 2)

    def _measured(self, batch: dict, name: str):  # targets and inputs: the batch holds both
        return batch[name] * self.std[name] + self.mean[name]

    def spme_signals(self, batch: dict, ambient_degc: Float[Array, " B"], temp0_k: Float[Array, " B"]) -> dict:
        """cellax's SPMe on each window's current from its measured initial SOC: ``{name: (B, T)}``, held fixed
        (no gradient), NaN past the SPMe's validity."""
        from cellax.physics.simulate import simulate
        from cellax.physics.spme import SPMe

        h = jnp.broadcast_to(self._h(batch), batch["current_a"].shape)[:, 0]
        soc0 = jnp.clip(self._measured(batch, "soc")[:, 0], 0.0, 1.0)

        def one(current, ambient_k, soc, temp_k, h):
            params = self.params.with_values({"heat_transfer_coeff_w_m2k": h})
            return simulate(SPMe(), params, current, self.dt_s, soc, ambient_k, initial_temp_k=temp_k,
                            limits=False).signals

        return jax.lax.stop_gradient(jax.vmap(one)(
            self._measured(batch, "current_a"), ambient_degc + KELVIN, soc0, temp0_k, h))

    def reference_error(self, prediction: Float[Array, "B T n_out"], reference: dict) -> Array:
        """Mean normalised squared difference of the predicted outputs from the SPMe's (where it is valid)."""
        errors = [jnp.where(jnp.isfinite(reference[name]),
                            (self.physical(name, prediction, {}) - reference[name]) / self.std[name], 0.0)
                  for name in CELL_MODEL_OUTPUTS if name in self.outputs]
        return jnp.mean(jnp.stack(errors) ** 2)

    def _cell_model(self, get, prediction, batch):
        ambient_degc = self._measured(batch, "ambient_temp_degc")[:, 0]
        temp0_k = self._measured(batch, "core_temp_degc")[:, 0] + KELVIN
        return self.reference_error(prediction, self.spme_signals(batch, ambient_degc, temp0_k))

    def collocation(self, batch: dict) -> tuple[dict, dict]:
        """The batch's windows moved to the ambients of ``collocation_ambient_degc`` (see the module docstring):
        ``(windows, reference)``, the normalised signals the model reads (its targets, and so its first
        chunk's initial conditions, are the SPMe's) and the SPMe's signals in physical units."""
        low, high = self.collocation_ambient_degc
        n_windows, length = batch["current_a"].shape
        ambient_degc = low + (high - low) * (jnp.arange(n_windows, dtype=jnp.float32) + 0.5) / n_windows
        rise_k = self._measured(batch, "core_temp_degc")[:, 0] - self._measured(batch, "ambient_temp_degc")[:, 0]
        reference = self.spme_signals(batch, ambient_degc, ambient_degc + rise_k + KELVIN)
        normalise = lambda name, v: ((v - self.mean[name]) / self.std[name]).astype(jnp.float32)  # noqa: E731
        windows = dict(batch, ambient_temp_degc=normalise("ambient_temp_degc",
                                                          jnp.broadcast_to(ambient_degc[:, None], (n_windows, length))))
        for name in self.outputs:
            windows[name] = normalise(name, jnp.nan_to_num(reference[name]))
        return windows, reference


def physics_loss(config, splits: dict, stats, dt_s: float, max_profiles: int = 64) -> PhysicsLoss:
    """The :class:`PhysicsLoss` of a :class:`~cellax.train.config.TrainConfig` on its dataset.

    Raises ``ValueError`` (naming ``physics.<term>``) when the dataset cannot serve a term.
    """
    weights = config.physics.weights
    with open_dataset(config.data) as ds:
        data_config = ds.config
    heat_transfer_coeff = None
    if "heat_transfer_coeff" not in config.input_signals:
        h_range = DataConfig.model_validate(data_config).conditions.heat_transfer_coeff
        low, high = h_range.low, h_range.high
        needs_h = sorted({"thermal", "cell_model"} & set(weights))
        if needs_h and low != high:
            raise ValueError(f"physics.{needs_h[0]}: {config.data} varies the heat transfer coefficient "
                             f"({low}-{high} W/m2K) between profiles; add heat_transfer_coeff to conditions")
        heat_transfer_coeff = low
    x64 = jax.config.jax_enable_x64
    try:
        params = dataset_parameters(data_config).astype(jnp.float32)
    finally:
        jax.config.update("jax_enable_x64", x64)  # PyBaMM's import switches it on; the model trains as configured
    names = [name for name in RATE_SIGNALS if any(name in NEEDS[term] for term in weights)]
    scales = rate_scales(iterate_profiles(config.data, splits["train"][:max_profiles], names), names)
    collocation = config.physics.cell_model_ambient_degc
    return PhysicsLoss(weights, params, dict(stats.mean), dict(stats.std), scales, dt_s,
                       tuple(config.input_signals), tuple(config.output_signals), heat_transfer_coeff,
                       tuple(collocation) if collocation is not None else None)
