"""The tools of a GPU run: CasADi cut so that PyBaMM travels as wheels, and ``gpu.py``'s time budget."""

import importlib.metadata
import importlib.util
import json
import multiprocessing
import os
import subprocess
import sys
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SOLVE = """
import casadi, pybamm
model = pybamm.lithium_ion.SPMe({"thermal": "lumped"})
sim = pybamm.Simulation(model, parameter_values=pybamm.ParameterValues("Chen2020"), solver=pybamm.IDAKLUSolver())
solution = sim.solve([0, 600])
print(casadi.__file__, float(solution["Voltage [V]"].entries[-1]))
"""


def load(name: str, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))  # gpu.py's device set-up must not leak
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def installed_casadi_wheel(path: Path) -> Path:
    """The installed CasADi packed back into a wheel (stored, not compressed: only its contents matter here)."""
    dist = importlib.metadata.distribution("casadi")
    root = Path(dist.locate_file(""))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as wheel:
        for file in dist.files:
            if (root / file).is_file() and "__pycache__" not in file.parts:
                wheel.write(root / file, file.as_posix())
    return path


def test_cut_casadi_wheel_still_runs_pybamm(tmp_path, monkeypatch):
    """The cut wheel installs with pip, is a small part of the whole, keeps no optimisation solver, resolves
    every library its files load, and PyBaMM solves a thermal SPMe with it (the one imported, not the full one)."""
    gpu_wheels = load("gpu_wheels", monkeypatch)
    wheel = installed_casadi_wheel(tmp_path / f"casadi-{importlib.metadata.version('casadi')}-py3-none-any.whl")
    full_bytes = sum(info.file_size for info in zipfile.ZipFile(wheel).infolist())
    gpu_wheels.trim_casadi(wheel)
    names = {Path(info.filename).name for info in zipfile.ZipFile(wheel).infolist()}
    assert {"_casadi.so", "casadi.py", "libcasadi_interpolant_linear.so", "libcasadi_rootfinder_newton.so",
            "libcasadi_integrator_idas.so", "RECORD"} <= names
    assert not any(word in name for name in names
               for word in ("libcasadi_nlpsol_", "libcasadi_conic_", "openblas", "libipopt"))
    assert sum(info.file_size for info in zipfile.ZipFile(wheel).infolist()) < 0.15 * full_bytes

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(site),
                    str(wheel)], check=True)
    package = site / "casadi"
    for library in package.glob("*.so*"):
        for needed in gpu_wheels.needed_libraries(library):
            assert gpu_wheels.SYSTEM_LIBRARY.match(needed) or (package / needed).is_file(), (library.name, needed)
    env = {**os.environ, "PYTHONPATH": str(site), "PYBAMM_DISABLE_TELEMETRY": "true"}
    out = subprocess.run([sys.executable, "-c", SOLVE], env=env, check=True, capture_output=True, text=True).stdout
    casadi_file, voltage_v = out.split()[-2:]
    assert Path(casadi_file).is_relative_to(site)
    assert 3.0 < float(voltage_v) < 4.3


def test_budget_shares_time_among_parts_and_records_skips(tmp_path, monkeypatch):
    gpu = load("gpu", monkeypatch)
    results = gpu.Results(tmp_path / "gpu.json", {"benchmark": "gpu"})
    unlimited = gpu.Budget(None, list(gpu.PARTS))
    assert all(unlimited.allows(results, part, "start") for part in gpu.PARTS)

    budget = gpu.Budget(100.0, ["cell", "ppo"])
    shares = [budget.deadlines[p] - budget.start for p in ("cell", "ppo")]
    total = gpu.SHARES["cell"] + gpu.SHARES["ppo"]
    assert shares == pytest.approx([100 * gpu.SHARES["cell"] / total, 100.0])  # ppo's deadline includes cell's
    assert budget.allows(results, "cell", "float64_batch_1024")

    spent = gpu.Budget(0.0, ["env"])
    assert not spent.allows(results, "env", "float64_1024_envs")
    recorded = json.loads((tmp_path / "gpu.json").read_text())["parts"]["env"]["float64_1024_envs"]
    assert recorded["skipped"].startswith("time budget")


def _child_backend() -> str:
    import jax

    return jax.default_backend()


def test_pybamm_workers_are_started_with_jax_on_the_cpu(monkeypatch):
    """The platform the parent was given (here one this machine lacks) does not reach the workers, and the
    parent's setting is back afterwards."""
    devices = load("devices", monkeypatch)
    monkeypatch.setenv("JAX_PLATFORMS", "cuda")
    with devices.cpu_only_children(), ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        assert pool.submit(_child_backend).result() == "cpu"
    assert os.environ["JAX_PLATFORMS"] == "cuda"


def test_the_goals_are_judged_on_the_best_row_and_never_on_an_anchor(monkeypatch):
    gpu = load("gpu", monkeypatch)
    parts = {"cell": {"pybamm_all_cores": {"cell_hours_per_s": 1e9}, "float64_batch_1024": {"cell_hours_per_s": 2e4},
                      "float32_batch_65536": {"cell_hours_per_s": 3e5}, "float64_batch_65536": {"skipped": "budget"}},
             "env": {"pybamm_one_core": {"steps_per_s": 1e8}, "float32_1024_envs": {"steps_per_s": 5e6}},
             "train": {"transformer_26m_bf16": {"cellax_sample_steps_per_s": 4e5, "ratio_cellax_over_torch": 0.9}},
             "ppo": {"fast_charge": {"ppo_seconds": 12.0}}}
    judged = gpu.against_goals(parts)
    assert judged["cell_hours_per_s"] == {"value": 3e5, "goal": 1e5, "met": True, "from": "cell.float32_batch_65536"}
    assert judged["env_steps_per_s"]["value"] == 5e6 and judged["env_steps_per_s"]["met"] is False
    assert judged["transformer_26m_time_steps_per_s"]["met"] is True
    assert judged["transformer_26m_vs_torch"]["met"] is False
    assert judged["ppo_seconds"]["met"] is True  # a ceiling: 12 s is within 20 s
    nothing = gpu.against_goals({"cell": {"float64_batch_1024": {"skipped": "budget"}}})
    assert all(row["value"] is None and row["met"] is None for row in nothing.values())
