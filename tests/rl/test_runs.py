"""`cellax rl train` end to end on a tiny budget: PPO, the gradient-optimised protocol, evaluation against CC-CV."""

import json

import jax
import numpy as np
import yaml

from cellax.cli import main
from cellax.rl.fast_charge import FastCharge
from cellax.rl.gradient_protocol import ProtocolTable, optimise_protocol

TINY = {
    "name": "tiny",
    "env": {"n_shells": 6, "x_counts": [4, 3, 4], "substeps": 2, "dtype": "float32",
            "params": {"max_steps_in_episode": 100}},
    "ppo": {"num_envs": 32, "num_steps": 16, "total_updates": 10, "updates_per_segment": 5, "num_minibatches": 4},
    "protocol": {"iterations": 3},
    "evaluation": {"cccv_c_rates": [1.0, 1.5]},
}


def test_rl_train_writes_agents_and_a_comparison_with_cccv(tmp_path, capsys):
    (tmp_path / "rl.yaml").write_text(yaml.safe_dump({**TINY, "out": str(tmp_path / "run")}))
    assert main(["rl", "train", str(tmp_path / "rl.yaml"), "--no-progress"]) == 0
    report = json.loads((tmp_path / "run" / "eval" / "report.json").read_text())
    assert {"cccv_1C", "cccv_1.5C", "ppo_seed0", "gradient_protocol"} <= set(report["metrics"])
    cccv = report["metrics"]["cccv_1C"]
    assert cccv["charge_time_s"] is not None and 2400 < cccv["charge_time_s"] < 3300  # 10 -> 80 % at 1C
    assert (tmp_path / "run" / "eval" / "charging.png").stat().st_size > 20_000
    assert "best CC-CV within all limits" in capsys.readouterr().out
    assert main(["rl", "evaluate", str(tmp_path / "run")]) == 0


def test_gradient_steps_raise_the_protocols_return():
    env = FastCharge(mesh=(6, (4, 3, 4)), substeps=2, dtype=jax.numpy.float32)
    params = env.default_params.replace(initial_soc_min=0.1, initial_soc_max=0.1, initial_temp_min_degc=25.0,
                                        initial_temp_max_degc=25.0, max_steps_in_episode=100)
    protocol, history, _ = optimise_protocol(env, params, iterations=4, protocol=ProtocolTable(initial_c_rate=0.5))
    assert np.all(np.isfinite(history)) and history[-1] > history[0]
    assert float(protocol.c_rate(0.2, 25.0, 3.0)) > 0.5  # pushed above the slow start where the limits allow


def test_a_bad_rl_config_names_the_field(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**TINY, "ppo": {"num_minibatches": 7}}))
    assert main(["rl", "train", str(tmp_path / "bad.yaml")]) == 2
    assert "ppo" in capsys.readouterr().err
