"""Bad studies are refused with one line and exit 2 before any trial, and nothing is created."""

import pytest
import yaml

from cellax.cli import main
from tests.hpo.conftest import write_study


@pytest.mark.parametrize("space, message", [
    ({"model.widht": {"low": 4, "high": 8}}, "space.model.widht: unknown model field"),
    ({"optimizer.lr": {"low": 1e-3, "high": 1e-2}}, "space.optimizer.lr: unknown optimizer field"),
    ({"batchsize": {"choices": [4, 8]}}, "space.batchsize: unknown field"),
    ({"model.width": {"low": 8, "high": 8}}, "empty range: low 8 must be below high 8"),
    ({"model.width": {"low": 16, "high": 8}}, "empty range"),
    ({"model.width": {"choices": []}}, "empty choices"),
    ({"optimizer.learning_rate": {"low": 0.0, "high": 0.01, "log": True}}, "log-scale range [0.0, 0.01] reaches zero"),
    ({"optimizer.learning_rate": {"low": -1.0, "high": 0.01, "log": True}}, "reaches zero or below"),
    ({"chunk_len": {"low": 2, "high": 64}}, "space.chunk_len: 2 is refused by the train config"),
    ({"model.n_heads": {"choices": [2, 4]}}, "no searched model kind (gru) has this field"),
])
def test_a_bad_space_is_one_line_and_exit_2_before_anything_is_created(tmp_path, capsys, hpo_dataset, space, message):
    study = write_study(tmp_path, hpo_dataset, space=space)
    assert main(["hpo", str(study)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("url, message", [
    ("postgresql+psycopg2://nobody@127.0.0.1:1/nodb", "cannot connect"),
    ("sqlite:///{tmp}/missing/study.db", "does not exist"),
    ("not a url", "not a SQLAlchemy URL"),
])
def test_an_unreachable_storage_is_refused_before_any_trial(tmp_path, capsys, hpo_dataset, url, message):
    study = write_study(tmp_path, hpo_dataset)
    assert main(["hpo", str(study), "--storage", url.format(tmp=tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_other_study_fields_are_checked_too(tmp_path, capsys, hpo_dataset):
    for changes, message in (({"objective": {"output": "current_a"}}, "objective.output 'current_a' is not an output"),
                             ({"budget": {}}, "give steps, seconds, or both"),
                             ({"trials": 0}, "trials"),
                             ({"budget": {"steps": "fit"}}, "steps: fit sizes the schedule to seconds; give seconds"),
                             ({"budget": {"steps": "fit", "seconds": 5, "eval_every": 2}}, "set by evals, not eval_every"),
                             ({"budget": {"steps": "fit", "seconds": 5}}, "pruner.min_steps: with budget.steps: fit"),
                             ({"budget": {"steps": "often"}}, "budget.steps"),
                             ({"budget": {"steps": 0}}, "steps must be positive or fit"),
                             ({"pruner": {"min_fraction": 0.2}}, "pruner.min_fraction needs budget.steps: fit"),
                             ({"base": "nothere.yaml"}, "base: cannot read config")):
        study = write_study(tmp_path, hpo_dataset, **changes)
        assert main(["hpo", str(study)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert yaml.safe_load(study.read_text())["base"] == "nothere.yaml"


def test_the_shipped_study_configs_load():
    from pathlib import Path

    from cellax.hpo import load_hpo_config

    for path in sorted(Path(__file__).resolve().parents[2].glob("configs/hpo/*.yaml")):
        config, base = load_hpo_config(path)
        assert config.budget.seconds == 300 and base.task in config.name


@pytest.mark.parametrize("budget, pruner", [({"steps": 8}, {"kind": "asha", "min_steps": 4}),
                                            ({"steps": "fit", "seconds": 3}, {"kind": "asha", "min_fraction": 0.3}),
                                            ({"steps": "fit", "seconds": 3}, {"kind": "median"})])
def test_a_study_config_reaches_its_worker_processes_unchanged(tmp_path, hpo_dataset, budget, pruner):
    """Workers get the study config as JSON: every valid config must validate again on the way."""
    from cellax.hpo import load_hpo_config
    from cellax.hpo.config import HpoConfig

    config, _ = load_hpo_config(write_study(tmp_path, hpo_dataset, budget=budget, pruner=pruner))
    assert HpoConfig.model_validate_json(config.model_dump_json()) == config
