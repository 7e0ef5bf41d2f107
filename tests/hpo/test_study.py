"""A real study on SQLite: two worker processes, pruning reports, a diverging trial recorded with its reason,
the best trial as a config that ``cellax train`` runs, the summary and pictures."""

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import optuna
import yaml
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from cellax.cli import main
from cellax.config import load_config
from cellax.hpo.study import claim
from cellax.train.config import TrainConfig
from tests.hpo.conftest import cellax, write_study


def test_two_workers_finish_the_study_and_a_diverging_trial_fails_with_its_reason(tmp_path, hpo_dataset):
    study_yaml = write_study(tmp_path, hpo_dataset)
    proc = cellax("hpo", study_yaml, "--workers", "2")
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    assert "[worker 0] trial" in out and "[worker 1] trial" in out, out  # a progress line per trial, both workers ran

    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'out' / 'study.db'}")
    trials = study.get_trials()
    assert len(trials) == 4 and sorted(t.number for t in trials) == [0, 1, 2, 3]
    diverged = [t for t in trials if t.params["optimizer.learning_rate"] > 1]
    finished = [t for t in trials if t.params["optimizer.learning_rate"] < 1]
    assert diverged and finished  # seeds 0..3 draw both learning rates
    for t in diverged:
        assert t.state == TrialState.FAIL and "loss became nan" in t.user_attrs["fail_reason"]
    for t in finished:
        assert t.state in (TrialState.COMPLETE, TrialState.PRUNED) and t.intermediate_values
    assert f"{len(diverged)} failed of 4 planned" in out

    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["best"]["value"] == min(t.value for t in finished if t.value is not None)
    assert {p.split("/")[-1] for p in summary["plots"]} >= {"history.png", "parallel_coordinates.png"}
    assert "| trial | state | value |" in (tmp_path / "out" / "summary.md").read_text()

    best = load_config(tmp_path / "out" / "best_config.yaml", TrainConfig)
    assert best.model.width == summary["best"]["params"]["model.width"] and best.steps == 8
    assert main(["train", str(tmp_path / "out" / "best_config.yaml"), "--out", str(tmp_path / "best_run"),
                 "--no-progress"]) == 0
    assert (tmp_path / "best_run" / "checkpoints" / "best").exists()


def test_a_joining_run_must_plan_the_same_study(tmp_path, hpo_dataset, capsys):
    study_yaml = write_study(tmp_path, hpo_dataset, trials=1, space={"model.width": {"choices": [4]}})
    assert main(["hpo", str(study_yaml)]) == 0
    other = write_study(tmp_path, hpo_dataset, trials=2, space={"model.width": {"choices": [4]}})
    assert main(["hpo", str(other), "--storage", f"sqlite:///{tmp_path / 'out' / 'study.db'}"]) == 2
    assert "plans 1 trials, not 2" in capsys.readouterr().err
    assert yaml.safe_load(other.read_text())["trials"] == 2


def test_a_time_budget_sizes_each_trials_schedule_and_prunes_at_equal_fractions_of_it(tmp_path, hpo_dataset):
    budget = {"steps": "fit", "seconds": 3, "evals": 3}
    study_yaml = write_study(tmp_path, hpo_dataset, trials=2, budget=budget,
                             pruner={"kind": "asha", "min_fraction": 0.3, "reduction_factor": 2},
                             space={"model.width": {"choices": [4, 16]}, "batch_size": {"choices": [2, 8]}})
    assert main(["hpo", str(study_yaml)]) == 0

    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'out' / 'study.db'}")
    for t in study.get_trials():
        planned, step_s = t.user_attrs["planned_steps"], t.user_attrs["step_s"]
        assert planned == max(1, int(0.85 * 3 / step_s))  # the schedule fills the budget at the measured speed
        config = json.loads((tmp_path / "out" / "trials" / f"trial-{t.number:04d}" / "config.json").read_text())
        assert config["steps"] == planned and config["eval_every"] == -(-planned // 3)
        # progress is reported in per mille of the trial's own schedule, whatever its length
        assert t.intermediate_values and all(0 < k <= 1000 for k in t.intermediate_values)
        assert set(t.intermediate_values) <= {min(1000, round(1000 * s / planned))
                                              for s in range(1, planned + 1)}
    best = load_config(tmp_path / "out" / "best_config.yaml", TrainConfig)
    assert best.steps == study.best_trial.user_attrs["planned_steps"]
    assert (tmp_path / "out" / "speed_accuracy.png").stat().st_size > 0  # the speed/accuracy front


def test_concurrent_workers_claim_each_waiting_trial_once(tmp_path):
    """Eight claimers with their own connections to one SQLite study race for its trials: every trial is claimed
    exactly once and left RUNNING (a read-then-write claim lets two workers run the same trial in one folder)."""
    url = f"sqlite:///{tmp_path / 'race.db'}"
    storage = RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    study = optuna.create_study(study_name="race", storage=storage)
    for _ in range(6):
        study.enqueue_trial({})
    start = threading.Barrier(8)

    def claimer(_):
        own = RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
        own_study = optuna.load_study(study_name="race", storage=own)
        start.wait()
        claimed = []
        while (trial_id := claim(own_study, own)) is not None:
            claimed.append(trial_id)
        return claimed

    with ThreadPoolExecutor(8) as pool:
        claims = [trial_id for claimed in pool.map(claimer, range(8)) for trial_id in claimed]
    assert sorted(claims) == sorted(t._trial_id for t in study.get_trials())
    assert all(t.state == TrialState.RUNNING for t in study.get_trials())
