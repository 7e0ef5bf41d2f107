"""One status vocabulary from the solver to the HDF5 file to the summary.

The solver (:func:`cellax.physics.simulate.simulate`) reports *why* a run stopped
as a code, an index into :data:`STATUS`; :func:`cellax.physics.simulate.check_state`
raises one named flag per entry. A dataset stores per profile ``"ok"`` or
``"<group>: <detail>"`` (:func:`stopped`), where the group is one of
:data:`GROUPS`; the summary counts profiles by :func:`status_group`.
"""

from __future__ import annotations

STATUS = (
    "completed",
    "voltage_min",
    "voltage_max",
    "soc_min",
    "soc_max",
    "electrolyte_depleted",
    "stoichiometry_out_of_range",
    "solver_failed",
    "invalid_input",
)
"""Solver status codes: the index into this tuple (0: ran to the end); later entries lose to earlier ones.
``invalid_input``: a traced ``dt_s <= 0``, ambient or initial temperature ``<= 0 K``, initial SOC outside
``[0, 1]`` or a non-finite current (checked outside ``jit`` these raise instead; the signals are zero)."""

INVALID = ("electrolyte_depleted", "stoichiometry_out_of_range", "solver_failed")
"""Statuses where the model itself is invalid (rather than an operating limit reached)."""

OK = "ok"
GROUPS = ("ok", "voltage_limit", "temperature_limit", "model_limit", "solver_failed", "invalid_input")
"""Dataset status groups: the text of a stored status before its first ``':'``."""


def code(name: str) -> int:
    """The :data:`STATUS` code of ``name``."""
    return STATUS.index(name)


def group_of(name: str) -> str:
    """The dataset group of a solver :data:`STATUS` name that ended a run early."""
    if name.startswith("voltage"):
        return "voltage_limit"
    return name if name in ("solver_failed", "invalid_input") else "model_limit"


def stopped(group: str, detail: str, time_s: float | None = None) -> str:
    """A stored status: ``"<group>: <detail>[ at t=<time> s]"``."""
    if group not in GROUPS[1:]:
        raise ValueError(f"status group must be one of {GROUPS[1:]}, got {group!r}")
    return f"{group}: {detail}" + ("" if time_s is None else f" at t={time_s:.0f} s")


def status_group(status: str) -> str:
    """The group of a stored status: the text before the first ``':'`` (``"ok"`` stays ``"ok"``)."""
    return str(status).split(":", 1)[0].strip() or "(empty)"
