"""Training the hybrid by gradients through the ROS2 solver on DFN profiles (truncated BPTT).

The model runs forward over every training profile (from the DFN's initial SOC and temperatures,
with its ambient and heat-transfer coefficient) and its states are kept at the start of each chunk of
``chunk_s`` seconds; these are refreshed with the current weights every ``refresh_every`` steps. A
step draws ``batch`` chunks, integrates each from its stored state with
:func:`cellax.physics.stepping.ros2_step` and backpropagates through the scan:

.. math::

    \\mathcal L(\\theta, \\phi) = \\frac{1}{|\\Omega|} \\sum_{(p,k) \\in \\Omega} \\sum_{s}
        \\left(\\frac{\\hat s_{p,k} - s^\\text{DFN}_{p,k}}{\\sigma_s}\\right)^2,
    \\qquad s \\in \\{V, U_a, T_\\text{core}, T_\\text{surf}\\},\\ \\sigma = (1\\,\\text{mV}, 1\\,\\text{mV}, 0.1\\,\\text{K}, 0.1\\,\\text{K}),

over the valid samples ``Ω``: DFN data present and the model's state within its validity
(:func:`cellax.physics.simulate.check_state`: voltage window, electrolyte, stoichiometries,
finite). Invalid samples are masked and counted; a non-finite loss or gradient stops training
with the last good checkpoint kept. The physics parameters are fixed unless ``model.fit_parameters`` names some.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from cellax.data.cell import dataset_parameters
from cellax.events import EventLog
from cellax.hybrid.config import HybridConfig
from cellax.hybrid.data import TARGETS, Profiles, config_split, load_profiles
from cellax.hybrid.model import HEAT_SCALE_K_S, VOLTAGE_SCALE_V, HybridSPMe
from cellax.physics.dfn import DFN
from cellax.physics.simulate import check_state, gradient_where, state_flags, status_code
from cellax.physics.spme import SPMe
from cellax.physics.stepping import ros2_step
from cellax.signals import KELVIN
from cellax.status import INVALID, STATUS
from cellax.train.loop import TrainError

SCALES = {"voltage_v": 1e-3, "anode_potential_v": 1e-3, "core_temp_degc": 0.1, "surface_temp_degc": 0.1}


META_DEFAULTS = {"voltage_scale_v": VOLTAGE_SCALE_V, "heat_scale_k_s": HEAT_SCALE_K_S, "time_constants_s": [],
                 "latent_time_constants_s": [], "learn_time_constants": False, "fit_parameters": {}, "heat_times_current": False,
                 "voltage_heat": False, "redistribution_scale_1_s": None, "backbone": "SPMe"}
TRAINED = ("heat", "output", "latent", "log_multipliers", "log_time_constants", "redistribution")
"""The trained parts of a hybrid (those it has: the latent network, the physics log-multipliers and the log time
constants, the particle closure only where the config asks for them)."""


class HybridError(TrainError):
    """A hybrid run that cannot start or continue; the message says why and what was kept (exit 2)."""


def build_model(config: HybridConfig) -> HybridSPMe:
    m = config.model
    backbone = SPMe(m.n_shells, m.mesh) if m.backbone == "SPMe" else DFN(m.n_shells, m.mesh)
    return HybridSPMe(backbone, m.width, m.depth, key=jax.random.PRNGKey(config.seed),
                      dtype=jnp.dtype(m.dtype), voltage_scale_v=m.voltage_scale_v, heat_scale_k_s=m.heat_scale_k_s,
                      time_constants_s=m.time_constants_s, latent_time_constants_s=m.latent_time_constants_s,
                      learn_time_constants=m.learn_time_constants, fit_parameters=m.fit_parameters,
                      heat_times_current=m.heat_times_current, voltage_heat=m.voltage_heat,
                      redistribution_scale_1_s=m.redistribution_scale_1_s)


def invalid_since(codes):
    """Per sample, whether an :data:`~cellax.status.INVALID` status has occurred at or before it."""
    return jnp.cumsum(jnp.isin(codes, jnp.asarray([STATUS.index(name) for name in INVALID]))) > 0


def rollout(model, params, operators, state, current_a, dt_s, ambient_temp_k, trusted=None):
    """Integrate from ``state`` over the samples of ``current_a``: (outputs, states, check codes) at each sample.

    From the first invalid state on (:func:`~cellax.physics.simulate.state_flags`: negative electrolyte,
    a stoichiometry out of range, a non-finite value) the trajectory steps from the last valid state
    instead; those samples keep their invalid code and are masked by :func:`masked_loss`. ``trusted``
    (``(T,)`` bool, default all) marks the steps whose gradient is wanted: the others see the model and
    state through a select with ``stop_gradient``, so the NaN partials of a step that leaves validity
    (NaN times a zero cotangent is NaN) never reach the gradient (see :func:`_chunk_loss`).
    """
    following = jnp.concatenate([current_a[1:], current_a[-1:]])
    trusted = jnp.ones(current_a.shape[0], bool) if trusted is None else trusted

    def sample(carry, inputs):
        currents, ok = inputs
        state, last_valid, broken_code = carry
        flags = state_flags(model, params, jax.lax.stop_gradient(state))
        invalid_code = status_code(flags, list(INVALID)).astype(jnp.int32)
        broken_code = jnp.where(broken_code > 0, broken_code, invalid_code)  # the first invalid status, kept
        broken = broken_code > 0
        last_valid = jax.tree_util.tree_map(lambda a, b: jnp.where(broken, a, b), last_valid, state)
        new_state, out = ros2_step(gradient_where(model, ok), params, operators, gradient_where(last_valid, ok),
                                   currents[0], currents[1], dt_s, ambient_temp_k)
        code = status_code(check_state(model, params, jax.lax.stop_gradient(state), out)).astype(jnp.int32)
        code = jnp.where(broken, broken_code, code)
        return (new_state, last_valid, broken_code), (out, state, code)

    start = (state, state, jnp.asarray(0, dtype=jnp.int32))
    _, (outputs, states, codes) = jax.lax.scan(sample, start, ((current_a, following), trusted))
    return outputs, states, codes


def masked_loss(outputs: dict, targets: dict, mask, codes):
    """``(loss, n_invalid)``: scaled squared errors over the valid samples; invalid ones contribute nothing."""
    valid = mask & (codes == 0)
    for name in TARGETS:
        valid &= jnp.isfinite(outputs[name])
    total = 0.0
    for name in TARGETS:
        safe = jnp.where(valid, outputs[name], targets[name])
        total += jnp.sum(((safe - targets[name]) / SCALES[name]) ** 2)
    return total / jnp.maximum(jnp.sum(valid), 1), jnp.sum(mask & ~valid)


def _trained(model: HybridSPMe) -> tuple[str, ...]:
    return tuple(name for name in TRAINED if getattr(model, name) is not None)


def corrections(model: HybridSPMe):
    """The trained parts of the hybrid (:data:`TRAINED`; the mesh and the other physics parameters stay fixed)."""
    return tuple(getattr(model, name) for name in _trained(model))


def with_corrections(model: HybridSPMe, nets) -> HybridSPMe:
    return _with_parts(model, _trained(model), nets)


def _with_parts(model: HybridSPMe, names, parts) -> HybridSPMe:
    return eqx.tree_at(lambda m: tuple(getattr(m, name) for name in names), model, tuple(parts))


def build_optimiser(config: HybridConfig, model: HybridSPMe):
    """``(optimiser, its initial state)``: Adam on the trained parts, gradient norm clipped at 10; the physics
    log-multipliers and log time constants at ``train.physics_learning_rate`` where it is set (a separate Adam),
    else all at ``train.learning_rate``."""
    lr, physics_lr = config.train.learning_rate, config.train.physics_learning_rate
    if physics_lr is None:
        optimiser = optax.chain(optax.clip_by_global_norm(10.0), optax.adam(lr))
    else:
        labels = tuple("physics" if name.startswith("log_") else "nets" for name in _trained(model))
        optimiser = optax.chain(optax.clip_by_global_norm(10.0),
                                optax.multi_transform({"nets": optax.adam(lr), "physics": optax.adam(physics_lr)}, labels))
    return optimiser, optimiser.init(eqx.filter(corrections(model), eqx.is_array))


def checkpointed(model: HybridSPMe) -> dict:
    """What a checkpoint holds of ``model``: its parts by name, only those it has, so that the checkpoints of
    hybrids without the optional parts are the same tree as before these existed (and those still load)."""
    return {name: getattr(model, name) for name in ("spme", *TRAINED) if getattr(model, name) is not None}


def from_checkpointed(model: HybridSPMe, parts: dict) -> HybridSPMe:
    return _with_parts(model, tuple(parts), parts.values())


def _restore(checkpoints, which: str, model: HybridSPMe, opt_state):
    restored = (checkpoints.restore_best if which == "best" else checkpoints.restore_latest)(checkpointed(model), opt_state)
    return None if restored is None else (from_checkpointed(model, restored[0]), *restored[1:])


def _chunk_loss(nets, model, params, operators, dt_s, batch):
    model = with_corrections(model, nets)

    def one(state, current, targets, mask, ambient_k, h):
        p = params.with_values({"heat_transfer_coeff_w_m2k": h})
        _, _, probe = rollout(gradient_where(model, False), p, operators, jax.lax.stop_gradient(state), current, dt_s,
                              ambient_k)  # a forward pass finds where the chunk leaves validity
        bad = invalid_since(probe)
        trusted = ~jnp.concatenate([bad[1:], bad[-1:]])  # the step into the first invalid state is not trusted
        # nor the steps after the chunk's last DFN sample: they cannot change the loss, and past the data (a profile
        # the DFN ended at a voltage limit, its current held) a model can run into extreme states whose infinite
        # partials times a zero cotangent would make the gradient NaN
        data_after = jnp.flip(jnp.cumsum(jnp.flip(mask.astype(jnp.int32)))) > 0
        trusted &= jnp.concatenate([data_after[1:], jnp.zeros(1, bool)])
        outputs, _, codes = rollout(model, p, operators, state, current, dt_s, ambient_k, trusted)
        return masked_loss(outputs, targets, mask, codes)

    losses, invalid = jax.vmap(one)(*batch)
    return jnp.mean(losses), jnp.sum(invalid)


def _initial_states(model, params, profiles: Profiles):
    soc = jnp.asarray(profiles.initial_soc)
    temp = jnp.asarray(profiles.ambient_temp_degc) + KELVIN
    return jax.vmap(lambda s, t: model.initial_state(params, s, t))(soc, temp)


@eqx.filter_jit
def chunk_states(model, params, operators, dt_s, chunk: int, y0, current, ambient_k, h):
    """``(states, valid)``: the model's states at every ``chunk``-th sample of each profile (from ``y0``), and
    whether the trajectory is still a valid state there (no :data:`~cellax.status.INVALID` status before it:
    past electrolyte depletion or a stoichiometry out of range a start would only carry NaN gradients)."""
    def one(state, c, a, hh):
        p = params.with_values({"heat_transfer_coeff_w_m2k": hh})
        _, states, codes = rollout(model, p, operators, state, c, dt_s, a)
        broken = invalid_since(codes)
        return jax.tree_util.tree_map(lambda leaf: leaf[::chunk], states), ~broken[::chunk]

    return jax.vmap(one)(y0, current, ambient_k, h)


def _train_step_fn(optimiser):
    @eqx.filter_jit
    def step(model, opt_state, params, operators, dt_s, batch):
        nets = corrections(model)
        (loss, invalid), grads = eqx.filter_value_and_grad(_chunk_loss, has_aux=True)(
            nets, model, params, operators, dt_s, batch)
        finite = jnp.isfinite(loss) & jnp.all(
            jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree_util.tree_leaves(eqx.filter(grads, eqx.is_array))])
        )
        updates, new_opt_state = optimiser.update(grads, opt_state, eqx.filter(nets, eqx.is_array))
        return with_corrections(model, eqx.apply_updates(nets, updates)), new_opt_state, loss, invalid, finite

    return step


def run_meta(config: HybridConfig, data_config: dict) -> dict:
    """What a checkpoint depends on besides its arrays: the cell and the mesh."""
    return {
        "parameter_set": data_config["simulation"]["parameter_set"],
        "parameter_overrides": data_config["simulation"].get("parameter_overrides", {}),
        "thermal": data_config["simulation"]["thermal"],
        "backbone": config.model.backbone,
        "n_shells": config.model.n_shells,
        "x_counts": list(config.model.mesh),
        "width": config.model.width,
        "depth": config.model.depth,
        "dtype": config.model.dtype,
        "voltage_scale_v": config.model.voltage_scale_v,
        "heat_scale_k_s": config.model.heat_scale_k_s,
        "time_constants_s": list(config.model.time_constants_s),
        "latent_time_constants_s": list(config.model.latent_time_constants_s),
        "learn_time_constants": config.model.learn_time_constants,
        "fit_parameters": dict(config.model.fit_parameters),
        "heat_times_current": config.model.heat_times_current,
        "voltage_heat": config.model.voltage_heat,
        "redistribution_scale_1_s": config.model.redistribution_scale_1_s,
    }


def check_meta(run_dir: Path, meta: dict) -> None:
    """Refuse a run folder whose checkpoint was trained for another cell or mesh."""
    path = run_dir / "meta.json"
    if not path.exists():
        return
    stored = {**META_DEFAULTS, **json.loads(path.read_text())}  # runs from before these were settable
    differ = sorted(k for k in meta if stored.get(k) != meta[k])
    if differ:
        raise HybridError(
            f"{run_dir}: its checkpoint was trained with a different {', '.join(differ)} "
            f"({', '.join(f'{k}={stored.get(k)!r}' for k in differ)}); use another run folder"
        )


def check_run_folder(run_dir: Path, config: HybridConfig, resume: bool) -> None:
    """Refuse to mix runs: an existing run needs ``resume``, and then the same config except ``train.steps``."""
    from cellax.train.loop import has_checkpoint

    if run_dir.exists() and not run_dir.is_dir():
        raise HybridError(f"out: {run_dir} is a file, not a run folder")
    started = (run_dir / "config.json").exists() and has_checkpoint(run_dir / "checkpoints" / "latest")
    if started and not resume:
        raise HybridError(f"{run_dir} holds a run; pass --resume to continue it or choose another --out")
    if resume and not started:
        raise HybridError(f"--resume: {run_dir} holds no run to resume")
    if resume:
        stored = HybridConfig.model_validate_json((run_dir / "config.json").read_text()).model_dump()
        new = config.model_dump()
        stored["train"].pop("steps"), new["train"].pop("steps")
        differ = sorted(k for k in new if stored.get(k) != new[k])
        if differ:
            raise HybridError(f"--resume: {run_dir} was started with a config that differs in {', '.join(differ)} "
                              "(only train.steps may change)")


def train(config: HybridConfig, run_dir: str | Path, resume: bool = False, progress: bool = True, log=print) -> dict:
    """Train the hybrid of ``config`` into ``run_dir`` (``resume``: continue the run there, bit for bit as an
    uninterrupted run); returns the training summary."""
    from cellax.train.checkpoint import Checkpoints

    run_dir = Path(run_dir)
    check_run_folder(run_dir, config, resume)
    profiles, data_config = load_profiles(config.data)
    rows = config_split(config, profiles)
    if not rows["train"].size:
        raise HybridError(f"{config.data}: no training profiles after the split")
    meta = run_meta(config, data_config)
    check_meta(run_dir, meta)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "meta.json").write_text(json.dumps(meta, indent=1))
    (run_dir / "config.json").write_text(config.model_dump_json(indent=1))

    params = dataset_parameters(data_config)
    model = build_model(config)
    operators = model.stiff_operators(params)
    optimiser, opt_state = build_optimiser(config, model)
    checkpoints = Checkpoints(run_dir / "checkpoints")
    start, best = 0, float("inf")
    restored = _restore(checkpoints, "latest", model, opt_state) if resume else None
    if restored is not None:
        model, opt_state, start, best = restored
        log(f"resuming {config.name} from step {start}")
    history_path = run_dir / "train_history.jsonl"
    kept = [line for line in history_path.read_text().splitlines() if json.loads(line)["step"] <= start] \
        if resume and history_path.exists() else []
    history_path.write_text("".join(line + "\n" for line in kept))  # steps after the checkpoint are redone

    data = profiles.take(rows["train"])
    dt = data.dt_s
    chunk = max(2, int(round(config.train.chunk_s / dt)))
    n_chunks = data.current_a.shape[1] // chunk
    if n_chunks < 1:
        raise HybridError(f"train.chunk_s {config.train.chunk_s} is longer than the profiles ({data.current_a.shape[1] * dt:.0f} s)")
    usable = np.argwhere(data.mask[:, : n_chunks * chunk : chunk])  # (profile, chunk) pairs that start on DFN data
    current = jnp.asarray(data.current_a)
    ambient_k = jnp.asarray(data.ambient_temp_degc + KELVIN)
    h = jnp.asarray(data.heat_transfer_coeff)
    y0 = _initial_states(model, params, data)
    targets = {k: jnp.asarray(v) for k, v in data.targets.items()}
    mask = jnp.asarray(data.mask)
    step_fn = _train_step_fn(optimiser)
    history, starts, last_saved = [json.loads(line) for line in kept], None, start
    t0 = time.perf_counter() - (history[-1].get("elapsed_s", 0.0) if history else 0.0)  # a resumed run's clock goes on
    bar = tqdm(total=config.train.steps, initial=start, disable=not progress, unit="step", desc=f"hybrid {config.name}")
    metrics = open(history_path, "a")  # one line per step, written as it happens
    events = EventLog(run_dir / "events")  # the same as TensorBoard scalars
    try:
        for step in range(start, config.train.steps):
            if starts is None or step % config.train.refresh_every == 0:
                starts, start_valid = chunk_states(model, params, operators, dt, chunk, y0, current, ambient_k, h)
            pick = jax.random.choice(jax.random.fold_in(jax.random.PRNGKey(config.seed), step), len(usable),
                                     (config.train.batch,), replace=len(usable) < config.train.batch)
            p, c = usable[np.asarray(pick)].T
            index = (p[:, None], c[:, None] * chunk + np.arange(chunk)[None, :])
            valid = start_valid[p, c]  # an invalid start is swapped for the profile's first state and masked out

            def start_state(leaf, first):
                return jnp.where(valid.reshape(-1, *[1] * (leaf.ndim - 2)), leaf[p, c], first[p])

            batch = (
                jax.tree_util.tree_map(start_state, starts, y0),
                current[index],
                {k: v[index] for k, v in targets.items()},
                mask[index] & valid[:, None],
                ambient_k[p],
                h[p],
            )
            new_model, new_opt_state, loss, invalid, finite = step_fn(model, opt_state, params, operators, dt, batch)
            if not bool(finite):
                raise HybridError(
                    f"non-finite loss or gradient at step {step}; stopped, the checkpoint of step {last_saved} is kept"
                )
            model, opt_state = new_model, new_opt_state
            history.append({"step": step + 1, "loss": float(loss), "invalid_samples": int(invalid),
                            "invalid_starts": int(np.sum(~np.asarray(valid))),
                            "elapsed_s": round(time.perf_counter() - t0, 3)})
            metrics.write(json.dumps(history[-1]) + "\n")
            metrics.flush()
            events.write(step + 1, history[-1])
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss):.3g}")
            done = step + 1
            if done % config.train.checkpoint_every == 0 or done == config.train.steps:
                recent = float(np.mean([h_["loss"] for h_ in history[-config.train.refresh_every:]]))
                checkpoints.save("latest", done, checkpointed(model), opt_state, min(best, recent))
                if recent < best:
                    best = recent
                    checkpoints.save("best", done, checkpointed(model), opt_state, best)
                last_saved = done
    finally:
        bar.close()
        checkpoints.close()
        metrics.close()
        events.close()
    summary = {"steps": config.train.steps, "resumed_from": start, "train_wall_s": time.perf_counter() - t0,  # resumes included
               "n_train_profiles": int(rows["train"].size), "history": history}
    return summary


def load_run(run_dir: str | Path, which: str = "latest"):
    """``(config, model, params, data_config)`` of a trained run folder."""
    from cellax.train.checkpoint import Checkpoints

    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not path.exists():
        raise HybridError(f"{run_dir} is not a hybrid run folder (no config.json)")
    config = HybridConfig.model_validate_json(path.read_text())
    _, data_config = load_profiles(config.data)
    check_meta(run_dir, run_meta(config, data_config))
    model = build_model(config)
    _, opt_state = build_optimiser(config, model)
    checkpoints = Checkpoints(run_dir / "checkpoints")
    try:
        restored = _restore(checkpoints, which, model, opt_state)
    except ValueError as err:
        raise HybridError(f"{run_dir}: its checkpoint does not fit this model and optimiser "
                          f"({' '.join(str(err).split())[:200]})") from None
    finally:
        checkpoints.close()
    if restored is None:
        raise HybridError(f"{run_dir}: no checkpoint yet")
    return config, restored[0], dataset_parameters(data_config), data_config
