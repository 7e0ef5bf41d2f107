"""Bad input, command by command (one table each): exit status 2, one line naming the field or file, nothing created.

Every case here fails during validation, before any simulation, training or fitting starts.
"""

import math
from pathlib import Path

import pytest
import yaml

from cellax.cli import main
from cellax.data.store import write_dataset
from tests.conftest import synthetic_records

NAN, INF = math.nan, math.inf
ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("bcdefgh", "cdefghi"))


def merged(base: dict, changes: dict) -> dict:
    out = dict(base)
    for key, value in changes.items():
        out[key] = merged(out.get(key, {}), value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*"))


def refused(argv, folder: Path, capsys, named: str) -> None:
    """Run the command in ``folder``; exit 2, one line on stderr naming ``named``, no new file anywhere below."""
    before = files(folder)
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cellax: error: "), err
    assert named in err, err
    assert files(folder) == before


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_config(folder: Path, data) -> Path:
    path = folder / "config.yaml"
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


# --------------------------------------------------------------------------- generate

DATA = {"name": "bad", "seed": 1, "n_profiles": 2, "profiles": {"duration_s": 600}}
GENERATE = [
    ({"conditions": {"ambient_temp_degc": [NAN, 30]}}, "conditions.ambient_temp_degc"),
    ({"conditions": {"heat_transfer_coeff": [5, INF]}}, "conditions.heat_transfer_coeff"),
    ({"conditions": {"initial_soc": [NAN, 0.5]}}, "conditions.initial_soc"),
    ({"conditions": {"initial_soc": [0.9, 0.2]}}, "range reversed"),
    ({"profiles": {"duration_s": NAN}}, "profiles.duration_s"),
    ({"profiles": {"duration_s": 1e12}}, "profiles.duration_s"),
    ({"profiles": {"dt_s": 1e-9}}, "profiles.dt_s"),
    ({"profiles": {"dt_s": 700}}, "dt_s 700.0 is longer than duration_s"),
    ({"n_profiles": 10**12}, "n_profiles"),
    ({"n_profiles": 0}, "n_profiles"),
    ({"n_profiles": "many"}, "n_profiles"),
    ({"seed": -1}, "seed"),
    ({"seed": 2**70}, "seed"),
    ({"simulation": {"parameter_set": "Nope2099"}}, "parameter_set"),
    ({"simulation": {"rtol": INF}}, "simulation.rtol"),
    ({"backend": "fortran"}, "backend"),
    ({"colour": "blue"}, "colour"),
    ({"n_profiles": True}, "n_profiles: a number is needed"),
    ({"n_profiles": 1_000_000, "profiles": {"duration_s": 604800}}, "GB"),  # cannot fit the disk
]


@pytest.mark.parametrize("changes, named", GENERATE, ids=[n for _, n in GENERATE])
def test_generate_refuses(here, capsys, changes, named):
    config = write_config(here, merged(DATA, changes))
    refused(["generate", config, "--out", here / "d.h5"], here, capsys, named)


@pytest.mark.parametrize("content, named", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe garbage", "not a text file"),
    ("name: [unclosed", "not valid YAML"),
    ("- a list\n- not a mapping", "must be a mapping"),
    (ALIAS_BOMB, "expands to more than"),
], ids=["binary", "yaml-syntax", "list", "alias-bomb"])
def test_generate_refuses_unreadable_configs(here, capsys, content, named):
    config = write_config(here, content)
    refused(["generate", config, "--out", here / "d.h5"], here, capsys, named)


def test_generate_refuses_a_folder_as_out_even_with_overwrite(here, capsys):
    config = write_config(here, DATA)
    (here / "d.h5").mkdir()
    refused(["generate", config, "--out", here / "d.h5", "--overwrite"], here, capsys, "is a folder")
    refused(["generate", config, "--out", here / "d.h5", "--workers", "0"], here, capsys, "--workers")
    refused(["generate", config, "--out", here / "no" / "d.h5"], here, capsys, "does not exist")


# --------------------------------------------------------------------------- train

@pytest.fixture
def data_file(here):
    return write_dataset(here / "data.h5", synthetic_records(8), {"config": {"name": "s", "n_profiles": 8}})


TRAIN = [
    ({"split_fractions": [NAN, 0.5, 0.5]}, "split_fractions"),
    ({"split_fractions": [-0.1, 0.6, 0.5]}, "split_fractions"),
    ({"split_fractions": [0.5, 0.3, 0.1]}, "split_fractions"),
    ({"optimizer": {"learning_rate": INF}}, "optimizer.learning_rate"),
    ({"optimizer": {"learning_rate": NAN}}, "optimizer.learning_rate"),
    ({"loss": {"weights": {"voltage_v": -1.0}}}, "loss.weights"),
    ({"name": "../../x"}, "name"),
    ({"batch_size": 10**9}, "batch_size"),
    ({"model": {"kind": "gru", "width": 10**9}}, "width"),
    ({"steps": 0}, "steps"),
    ({"steps": "many"}, "steps"),
    ({"data": "missing.h5"}, "missing.h5"),
    ({"model": {"kind": "lstm9"}}, "model"),
    ({"steps": True}, "steps: a number is needed"),
    ({"model": {"kind": "transformer", "width": 8, "n_heads": 2}, "chunk_len": 5000}, "model.max_len 4096"),
]


@pytest.mark.parametrize("changes, named", TRAIN, ids=[n for _, n in TRAIN])
def test_train_refuses(here, data_file, capsys, changes, named):
    base = {"name": "t", "data": str(data_file), "model": {"kind": "gru", "width": 8}, "chunk_len": 8, "steps": 2}
    config = write_config(here, merged(base, changes))
    refused(["train", config, "--no-progress"], here, capsys, named)


def test_train_states_its_memory_and_refuses_a_job_that_cannot_fit(here, data_file, capsys):
    """XLA sizes the compiled step before any folder exists: 65536 windows of 1e6 samples fit nowhere."""
    base = {"name": "t", "data": str(data_file), "model": {"kind": "gru", "width": 8}, "chunk_len": 8, "steps": 2}
    huge = write_config(here, merged(base, {"batch_size": 65536, "chunk_len": 1_000_000}))
    refused(["train", huge, "--no-progress"], here, capsys, "memory: the run needs about")
    small = write_config(here, base)
    refused(["train", small, "--no-progress", "--memory-gb", "1e-6"], here, capsys, "--memory-gb if the estimate")
    assert main(["train", str(small), "--no-progress", "--memory-gb", "1e-6"]) == 2
    assert capsys.readouterr().out.startswith("job: 8 profiles, batch 32 x window 8; memory: ")
    refused(["train", small, "--memory-gb", "nan"], here, capsys, "--memory-gb")


def test_train_refuses_a_file_as_out_and_resume_without_a_run(here, data_file, capsys):
    config = write_config(here, {"name": "t", "data": str(data_file), "chunk_len": 8})
    (here / "taken").write_text("")
    refused(["train", config, "--out", here / "taken"], here, capsys, "is a file")
    refused(["train", config, "--resume"], here, capsys, "--resume")


# --------------------------------------------------------------------------- rl train

RL = {"name": "r", "env": {"n_shells": 6, "x_counts": [4, 3, 4], "substeps": 1}, "ppo": {"num_envs": 16}}
RL_TRAIN = [
    ({"ppo": {"num_envs": "32"}}, "ppo.num_envs"),
    ({"ppo": {"num_envs": 32.0}}, "ppo.num_envs"),
    ({"ppo": {"learning_rate": NAN}}, "ppo.learning_rate"),
    ({"ppo": {"gamma": -0.1}}, "ppo.gamma"),
    ({"ppo": {"gamma": 1.5}}, "ppo.gamma"),
    ({"ppo": {"total_updates": 0}}, "ppo.total_updates"),
    ({"ppo": {"num_minibatches": 7}}, "num_minibatches"),
    ({"ppo": {"epochs": 3}}, "ppo.epochs"),
    ({"env": {"params": {"target_soc": NAN}}}, "env.params.target_soc"),
    ({"env": {"params": {"control_interval_s": -30.0}}}, "env.params.control_interval_s"),
    ({"env": {"params": {"max_steps_in_episode": 1.5}}}, "env.params.max_steps_in_episode"),
    ({"env": {"params": {"initial_soc_min": 1.5}}}, "env.params.initial_soc_min"),
    ({"env": {"params": {"max_c_rate": NAN}}}, "env.params.max_c_rate"),
    ({"env": {"params": {"colour": 1}}}, "env.params.colour"),
    ({"env": {"parameter_set": "Nope2099"}}, "env.parameter_set"),
    ({"env": {"x_counts": [0, 0, 0]}}, "env.x_counts"),
    ({"env": {"solver": "euler"}}, "env.solver"),
    ({"evaluation": {"initial_temp_degc": NAN}}, "evaluation.initial_temp_degc"),
    ({"evaluation": {"cccv_c_rates": [0.0]}}, "evaluation.cccv_c_rates"),
    ({"evaluation": {"cccv_c_rates": [-1.0]}}, "evaluation.cccv_c_rates"),
    ({"evaluation": {"initial_soc": 0.9}}, "target_soc"),
    ({"protocol": {"gamma": NAN}}, "protocol.gamma"),
    ({"name": "../x"}, "name"),
]


@pytest.mark.parametrize("changes, named", RL_TRAIN, ids=[n for _, n in RL_TRAIN])
def test_rl_train_refuses(here, capsys, changes, named):
    config = write_config(here, merged(RL, changes))
    refused(["rl", "train", config, "--no-progress"], here, capsys, named)


def test_rl_train_refuses_an_alias_bomb_in_env_params(here, capsys):
    config = write_config(here, "name: r\nenv:\n  params:\n" + "".join(f"    {line}\n" for line in ALIAS_BOMB.splitlines()))
    refused(["rl", "train", config], here, capsys, "expands to more than")


# --------------------------------------------------------------------------- fit

FIT = [
    ({"sigma_v": INF}, "sigma_v"),
    ({"sigma_temp_k": NAN}, "sigma_temp_k"),
    ({"max_steps": 0}, "max_steps"),
    ({"profiles": []}, "profiles"),
    ({"parameters": {}}, "parameters"),
    ({"parameters": {"neg_diffusivity_scale": {"lower": 0.1, "upper": 10.0, "initial": NAN}}}, "initial"),
    ({"signals": ["pressure"]}, "signals"),
]


@pytest.mark.parametrize("changes, named", FIT, ids=[n for _, n in FIT])
def test_fit_refuses(here, data_file, capsys, changes, named):
    base = yaml.safe_load((Path(__file__).parents[1] / "configs" / "fit" / "example.yaml").read_text())
    config = write_config(here, {**merged(base, {"data": str(data_file)}), **changes})
    refused(["fit", config], here, capsys, named)


def test_fit_refuses_a_file_as_out_before_fitting(here, data_file, capsys):
    base = yaml.safe_load((Path(__file__).parents[1] / "configs" / "fit" / "example.yaml").read_text())
    config = write_config(here, {**base, "data": str(data_file)})
    (here / "report").write_text("")
    refused(["fit", config, "--out", here / "report"], here, capsys, "is a file")


# --------------------------------------------------------------------------- command-line arguments

@pytest.mark.parametrize("argv, named", [
    (["evaluate", "run", "--split", "bogus"], "argument --split: invalid choice: 'bogus'"),
    (["train", "c.yaml", "--memory-gb", "abc"], "argument --memory-gb: invalid float value: 'abc'"),
    (["data", "merge"], "the following arguments are required"),
    (["colour"], "argument COMMAND: invalid choice: 'colour'"),
], ids=["choice", "type", "missing", "command"])
def test_argument_errors_are_one_line(here, capsys, argv, named):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and err.startswith("cellax: error: cellax"), err
    assert named in err and not files(here)


# --------------------------------------------------------------------------- evaluate and data

def test_evaluate_and_data_commands_refuse(here, data_file, capsys):
    (here / "run").mkdir()
    refused(["evaluate", here / "run"], here, capsys, "not a cellax training run")
    refused(["evaluate", here / "run", "--max-profiles", "0"], here, capsys, "--max-profiles")
    refused(["rl", "evaluate", here / "run"], here, capsys, "not a cellax rl run")
    refused(["data", "info", here / "missing.h5"], here, capsys, "missing.h5")
    refused(["data", "info", here / "run"], here, capsys, "run")
    refused(["data", "plot", data_file, "--out", here / "png", "--profiles", "-1"], here, capsys, "--profiles")
    refused(["data", "plot", here / "missing.h5", "--out", here / "png"], here, capsys, "missing.h5")
    refused(["data", "merge", here / "m.h5", data_file, here / "missing.h5"], here, capsys, "missing.h5")
    refused(["data", "merge", here / "m.h5", data_file, data_file], here, capsys, "profile_id 0 is in both")
    refused(["data", "merge", data_file, data_file], here, capsys, "exists")
