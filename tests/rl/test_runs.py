"""`cellax rl train` end to end on a tiny budget: PPO, the gradient-optimised protocol, evaluation against CC-CV."""

import json

import jax
import numpy as np
import pytest
import yaml

from cellax.cli import main
from cellax.rl.fast_charge import FastCharge
from cellax.rl.gradient_protocol import ProtocolTable, optimise_protocol

TINY = {  # one ROS2 step per interval and few updates: compile time dominates, and it is a third of the default's
    "name": "tiny",
    "env": {"n_shells": 6, "x_counts": [4, 3, 4], "substeps": 1, "dtype": "float32",
            "params": {"max_steps_in_episode": 100}},
    "ppo": {"num_envs": 16, "num_steps": 8, "total_updates": 4, "updates_per_segment": 2, "num_minibatches": 2,
            "update_epochs": 2},
    "protocol": {"iterations": 2},
    "evaluation": {"cccv_c_rates": [1.0, 1.5]},
}


@pytest.mark.timeout(1800)  # a hang guard only: four compiles (~1-2 min idle), over 600 s at load 20 on 2 cores
def test_rl_train_writes_agents_a_comparison_with_cccv_and_refuses_to_mix_runs(tmp_path, capsys):
    run = tmp_path / "run"
    (tmp_path / "rl.yaml").write_text(yaml.safe_dump({**TINY, "out": str(run)}))
    assert main(["rl", "train", str(tmp_path / "rl.yaml"), "--no-progress"]) == 0
    report = json.loads((run / "eval" / "report.json").read_text())
    assert {"cccv_1C", "cccv_1.5C", "ppo_seed0", "gradient_protocol"} <= set(report["metrics"])
    cccv = report["metrics"]["cccv_1C"]
    assert cccv["charge_time_s"] is not None and 2400 < cccv["charge_time_s"] < 3300  # 10 -> 80 % at 1C
    assert report["metrics"]["cccv_1.5C"]["charge_time_s"] < cccv["charge_time_s"]
    assert (run / "eval" / "charging.png").stat().st_size > 20_000
    assert list((run / "ppo" / "events").glob("events.out.tfevents.*"))
    assert "best CC-CV within all limits" in capsys.readouterr().out

    # a second run into the same folder: refused in one line, nothing of the first run touched
    files = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    (tmp_path / "other.yaml").write_text(yaml.safe_dump({**TINY, "out": str(run), "protocol": {"iterations": 3}}))
    assert main(["rl", "train", str(tmp_path / "other.yaml"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{run} exists" in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == files

    # flipped bytes in the networks' checkpoint are named, not restored as weights
    step_dir = max((run / "ppo" / "checkpoints").iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else -1)
    array_file = max((p for p in step_dir.rglob("*") if p.is_file() and p.name != "sha256.json"),
                     key=lambda p: p.stat().st_size)
    data = bytearray(array_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    array_file.write_bytes(bytes(data))
    assert main(["rl", "evaluate", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "damaged" in err and array_file.name in err


def test_gradient_steps_raise_the_protocols_return():
    env = FastCharge(mesh=(6, (4, 3, 4)), substeps=1, dtype=jax.numpy.float32)
    params = env.default_params.replace(initial_soc_min=0.1, initial_soc_max=0.1, initial_temp_min_degc=25.0,
                                        initial_temp_max_degc=25.0, max_steps_in_episode=100)
    protocol, history, _ = optimise_protocol(env, params, iterations=4, protocol=ProtocolTable(initial_c_rate=0.5))
    assert np.all(np.isfinite(history)) and history[-1] > history[0]
    assert float(protocol.c_rate(0.2, 25.0, 3.0)) > 0.5  # pushed above the slow start where the limits allow


def test_the_steps_after_an_episodes_end_pass_no_gradient():
    """The episode runs on past its end (static length) and those steps may reach states whose partials overflow
    (a NaN gradient once stopped the protocol's optimisation on the DFN); the gradient is the truncated episode's."""
    import equinox as eqx

    from cellax.rl.gradient_protocol import episode_return
    from cellax.rl.protocols import rollout

    env = FastCharge(mesh=(6, (4, 3, 4)), substeps=1, dtype=jax.numpy.float32)
    params = env.default_params.replace(initial_soc_min=0.6, initial_soc_max=0.6, initial_temp_min_degc=25.0,
                                        initial_temp_max_degc=25.0, max_steps_in_episode=60)
    protocol = ProtocolTable(initial_c_rate=1.5)
    ended = int(np.asarray(rollout(env, params, protocol, jax.random.key(0), 60)["active"]).sum())
    assert 5 < ended < 30  # 60 -> 80 % SOC, then 30+ steps charging on

    def gradient(n_steps):
        loss = lambda p: episode_return(p, env.with_transition_gradients(), params, jax.random.key(0), n_steps, 0.98)  # noqa: E731
        return np.asarray(eqx.filter_jit(eqx.filter_grad(loss))(protocol).logits)

    whole, truncated = gradient(60), gradient(ended)
    assert np.all(np.isfinite(whole)) and np.abs(whole).max() > 1.0
    np.testing.assert_allclose(whole, truncated, rtol=1e-5, atol=1e-6)


def test_a_bad_rl_config_names_the_field(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**TINY, "ppo": {"num_minibatches": 7}}))
    assert main(["rl", "train", str(tmp_path / "bad.yaml")]) == 2
    assert "ppo" in capsys.readouterr().err
