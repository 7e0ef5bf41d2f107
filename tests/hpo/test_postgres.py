"""Two ``cellax hpo`` workers on one study in a real PostgreSQL server; one is killed with SIGKILL mid-trial.

The test starts a private server (initdb / pg_ctl from the Debian ``postgresql`` package, as the
``postgres`` user when run as root) on a free loopback port. Without the binaries it fails under CI
(``CI`` set: ``.ci/run`` installs them) and is skipped, saying why, elsewhere.
"""

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import optuna
import pytest
from optuna.trial import TrialState

from tests.hpo.conftest import cellax, write_study


def _as_server_user(*cmd):
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*prefix, *cmd], check=True, capture_output=True, text=True)


@pytest.fixture
def postgres_url():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        message = "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin (apt-get install postgresql)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    bin_dir = os.path.dirname(found[-1])
    folder = tempfile.mkdtemp(prefix="cellax-pg-")  # not under pytest's tmp: the server user must reach it
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = os.path.join(folder, "data")
    _as_server_user(f"{bin_dir}/initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync")
    _as_server_user(f"{bin_dir}/pg_ctl", "-D", data, "-l", os.path.join(folder, "log"), "-w", "-o",
                    f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    try:
        _as_server_user(f"{bin_dir}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "cellax")
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/cellax"
    finally:
        _as_server_user(f"{bin_dir}/pg_ctl", "-D", data, "-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def _wait_for(condition, what, procs):
    while not condition():
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"a worker exited ({p.returncode}) while waiting for {what}: {p.stderr.read()[-3000:]}")
        time.sleep(0.2)


def test_a_worker_killed_mid_trial_has_its_trial_rerun_and_the_study_completes_once(tmp_path, hpo_dataset,
                                                                                   postgres_url):
    study_yaml = write_study(tmp_path, hpo_dataset, trials=3, pruner={"kind": "none"},
                             space={"model.width": {"low": 4, "high": 12, "step": 4}})
    storage = optuna.storages.RDBStorage(postgres_url)
    a = cellax("hpo", study_yaml, "--storage", postgres_url, "--out", tmp_path / "a")
    b = None
    try:
        def planned():
            return "tiny" in optuna.get_all_study_names(storage) and len(
                optuna.load_study(study_name="tiny", storage=storage).get_trials()) == 3

        _wait_for(planned, "the study to be planned", [a])
        b = cellax("hpo", study_yaml, "--storage", postgres_url, "--out", tmp_path / "b")  # a second machine joins

        def running_on(proc):
            trials = optuna.load_study(study_name="tiny", storage=storage).get_trials(states=(TrialState.RUNNING,))
            return [t for t in trials if t.user_attrs.get("worker", "").endswith(f":{proc.pid}")]

        _wait_for(lambda: running_on(a) and running_on(b), "both workers to run a trial", [a, b])
        killed = running_on(a)[0]
        os.kill(a.pid, signal.SIGKILL)
        a.wait()
        out, err = b.communicate(timeout=900)
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.kill()
    assert b.returncode == 0, err[-3000:]
    trials = optuna.load_study(study_name="tiny", storage=storage).get_trials()
    by_number = {t.number: t for t in trials}
    assert by_number[killed.number].state == TrialState.FAIL  # failed by its missing heartbeat
    retries = [t for t in trials if t.system_attrs.get("failed_trial") is not None]
    assert [t.system_attrs["failed_trial"] for t in retries] == [killed.number]
    assert retries[0].state == TrialState.COMPLETE and retries[0].params == by_number[killed.number].params
    counted = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(counted) == 3 and len(trials) == 4  # three planned trials, each counted once, plus one retry
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert "3 complete, 0 pruned, 1 failed of 3 planned" in out
