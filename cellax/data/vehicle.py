"""A vehicle longitudinal model: speed traces (synthesized or from a CSV) to one cell's current.

Standard drive-cycle files cannot be downloaded here, so drive profiles come from
synthesized micro-trips (idle, accelerate, cruise with smooth noise, brake) or from
a user CSV, turned into battery power on a flat road and shared by the pack's cells.
"""

from __future__ import annotations

import csv
import functools
import math
import pathlib

import numpy as np
from pydantic import Field

from cellax.config import Strict
from cellax.data.datasheet import Datasheet

GRAVITY_M_S2 = 9.81


def nominal_voltage_v(datasheet: Datasheet) -> float:
    """Nominal cell voltage for power-to-current conversion: the middle of the voltage window."""
    return 0.5 * (datasheet.voltage_min_v + datasheet.voltage_max_v)


class VehicleConfig(Strict):
    """A small EV, used to turn a speed trace into one cell's current.

    ``cells_in_pack`` cells share the pack power equally; when left ``None`` it is sized from
    ``pack_energy_kwh`` and the cell's nominal energy, so every cell sees the same C-rates.
    """


    mass_kg: float = Field(1500.0, gt=0)
    frontal_area_m2: float = Field(2.2, gt=0)
    drag_coefficient: float = Field(0.30, gt=0)
    rolling_resistance: float = Field(0.010, ge=0)
    drivetrain_efficiency: float = Field(0.90, gt=0, le=1, description="battery to wheel")
    regen_efficiency: float = Field(0.60, ge=0, le=1, description="wheel to battery when braking")
    auxiliary_power_w: float = Field(500.0, ge=0)
    air_density_kg_m3: float = Field(1.2, gt=0)
    pack_energy_kwh: float = Field(40.0, gt=0, description="sizes the pack when cells_in_pack is None")
    cells_in_pack: int | None = Field(None, gt=0)

    def cell_count(self, datasheet: Datasheet) -> int:
        """Cells sharing the pack power: ``cells_in_pack``, else pack energy / cell energy."""
        if self.cells_in_pack is not None:
            return self.cells_in_pack
        cell_wh = datasheet.capacity_ah * nominal_voltage_v(datasheet)
        return max(1, round(self.pack_energy_kwh * 1000.0 / cell_wh))




SPEED_COLUMNS = {"speed_m_s": 1.0, "speed_kmh": 1 / 3.6, "speed_mph": 0.44704}
"""Accepted speed columns of a drive-cycle CSV and their factor to m/s."""


@functools.lru_cache(maxsize=16)
def _read_trace(
    path: str, columns: tuple[tuple[str, float], ...], non_negative: bool, _mtime_ns: int, _size: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(time_s, values * factor)`` of a CSV with ``time_s`` and exactly one of ``columns``."""
    factors = dict(columns)
    with open(path, newline="") as stream:
        rows = [
            (n, row)
            for n, row in enumerate(csv.reader(stream), start=1)
            if row and any(cell.strip() for cell in row) and not row[0].lstrip().startswith("#")
        ]
    if not rows:
        raise ValueError(f"{path}: empty file")
    header_line, header = rows[0]
    header = [name.strip() for name in header]
    found = [name for name in factors if name in header]
    if "time_s" not in header or len(found) != 1:
        raise ValueError(
            f"{path}: header (line {header_line}) must have column 'time_s' and exactly one of "
            f"{list(factors)}; found {header}"
        )
    indices = {"time_s": header.index("time_s"), found[0]: header.index(found[0])}
    values = {name: [] for name in indices}
    for line, row in rows[1:]:
        for name, col in indices.items():
            text = row[col].strip() if col < len(row) else ""
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"{path}: line {line}, column {name}: {text!r} is not a number") from None
            if not math.isfinite(value):
                raise ValueError(f"{path}: line {line}, column {name}: {text!r} is not finite")
            if name != "time_s" and non_negative and value < 0:
                raise ValueError(f"{path}: line {line}, column {name}: negative speed {value}")
            values[name].append(value)
    time_s = np.array(values["time_s"])
    if time_s.size < 2:
        raise ValueError(f"{path}: need at least two rows of data, found {time_s.size}")
    bad = np.flatnonzero(np.diff(time_s) <= 0)
    if bad.size:
        line = rows[1 + bad[0] + 1][0]
        raise ValueError(
            f"{path}: line {line}, column time_s: time {time_s[bad[0] + 1]} does not increase "
            f"(previous {time_s[bad[0]]})"
        )
    trace = np.array(values[found[0]]) * factors[found[0]]
    time_s.flags.writeable = trace.flags.writeable = False
    return time_s, trace


def _load_trace(path, columns: dict[str, float], non_negative: bool) -> tuple[np.ndarray, np.ndarray]:
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    stat = path.stat()
    return _read_trace(str(path), tuple(columns.items()), non_negative, stat.st_mtime_ns, stat.st_size)


def load_drive_cycle_csv(path: str | pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
    """``(time_s, speed_m_s)`` of a drive-cycle CSV.

    The header names ``time_s`` and one of ``speed_m_s``, ``speed_kmh``, ``speed_mph``; other
    columns, blank lines and lines starting with ``#`` are ignored. Raises ``ValueError`` naming
    the file, line and column for non-numeric, NaN/inf or negative values and non-increasing time.
    The arrays are read-only (cached per file version).
    """
    return _load_trace(path, SPEED_COLUMNS, non_negative=True)


def load_current_csv(path: str | pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
    """``(time_s, current_a)`` of a measured current trace (columns ``time_s``, ``current_a``; + = discharge).

    Same rules as :func:`load_drive_cycle_csv`: NaN or infinite currents are refused with
    the line and column.
    """
    return _load_trace(path, {"current_a": 1.0}, non_negative=False)


def looped_trace(rng: np.random.Generator, trace: tuple[np.ndarray, np.ndarray], n: int, dt_s: float) -> np.ndarray:
    """``n`` samples of ``(time_s, values)`` on the ``dt_s`` grid from a random start, looping as needed."""
    time_s, values = trace
    period = math.floor((time_s[-1] - time_s[0]) / dt_s + 1e-9) + 1
    grid = np.interp(time_s[0] + dt_s * np.arange(period), time_s, values)
    start = rng.integers(period)
    return np.tile(grid, (start + n) // period + 1)[start : start + n]


def grid_speed_to_current_a(
    speed_m_s: np.ndarray, dt_s: float, vehicle: VehicleConfig, datasheet: Datasheet
) -> np.ndarray:
    """Cell current for a speed trace sampled every ``dt_s`` (one current per speed sample).

    Over sample ``k`` the vehicle accelerates at ``a = (v[k+1] - v[k]) / dt`` with mean speed
    ``v = (v[k] + v[k+1]) / 2`` (so ``m a v dt`` is exactly the change of kinetic energy; the
    last sample holds its speed). On a flat road

        F = m a + 1/2 rho Cd A v^2 + Crr m g,   P_wheel = F v,
        P_battery = P_wheel / eta_drivetrain  (P_wheel >= 0)  or  P_wheel eta_regen  (braking),
        I_cell = (P_battery + P_aux) / (N_cells V_nominal),

    with ``V_nominal`` the middle of the datasheet voltage window (:func:`nominal_voltage_v`).
    """
    v = np.asarray(speed_m_s, dtype=np.float64)
    v_next = np.append(v[1:], v[-1])
    accel_m_s2 = (v_next - v) / dt_s
    v_mean = 0.5 * (v + v_next)
    m = vehicle.mass_kg
    force_n = (
        m * accel_m_s2
        + 0.5 * vehicle.air_density_kg_m3 * vehicle.drag_coefficient * vehicle.frontal_area_m2 * v_mean**2
        + vehicle.rolling_resistance * m * GRAVITY_M_S2 * (v_mean > 0)
    )
    wheel_w = force_n * v_mean
    battery_w = np.where(wheel_w >= 0, wheel_w / vehicle.drivetrain_efficiency, wheel_w * vehicle.regen_efficiency)
    battery_w += vehicle.auxiliary_power_w
    return battery_w / (vehicle.cell_count(datasheet) * nominal_voltage_v(datasheet))


def speed_to_current_a(
    time_s: np.ndarray, speed_m_s: np.ndarray, vehicle: VehicleConfig, datasheet: Datasheet, dt_s: float
) -> np.ndarray:
    """One cell's current for a vehicle speed trace, resampled to ``t0 + k dt_s`` (linear).

    Returns one sample per grid point from ``time_s[0]`` to ``time_s[-1]``. Longitudinal model
    (flat road), with ``a`` and ``v`` the acceleration and mean speed over each sample:

        F = m a + 1/2 rho Cd A v^2 + Crr m g,   P_wheel = F v,
        P_battery = P_wheel / eta_drivetrain  (P_wheel >= 0)  or  P_wheel eta_regen  (braking),
        I_cell = (P_battery + P_aux) / (N_cells V_nominal),

    ``V_nominal`` being the middle of the datasheet voltage window (:func:`nominal_voltage_v`).
    """
    time_s, speed_m_s = np.asarray(time_s, dtype=np.float64), np.asarray(speed_m_s, dtype=np.float64)
    if time_s.shape != speed_m_s.shape or time_s.ndim != 1 or time_s.size < 2:
        raise ValueError(
            f"time_s and speed_m_s must be 1-D of equal length >= 2, got {time_s.shape}, {speed_m_s.shape}"
        )
    if not (np.all(np.diff(time_s) > 0) and np.all(np.isfinite(speed_m_s)) and np.all(speed_m_s >= 0)):
        raise ValueError("time_s must increase and speed_m_s must be finite and >= 0")
    n = math.floor((time_s[-1] - time_s[0]) / dt_s + 1e-9) + 1
    grid = np.interp(time_s[0] + dt_s * np.arange(n), time_s, speed_m_s)
    return grid_speed_to_current_a(grid, dt_s, vehicle, datasheet)


_SPEED_LEVELS_M_S = ((8.0, 14.0), (14.0, 22.0), (22.0, 34.0))  # urban, suburban, highway
_LEVEL_PROBABILITIES = (0.5, 0.3, 0.2)


def _ramp(v_from: float, v_to: float, accel_m_s2: float) -> np.ndarray:
    """Speeds each second from ``v_from`` (excluded) to ``v_to`` at constant ``|accel_m_s2|``."""
    steps = max(1, math.ceil(abs(v_to - v_from) / accel_m_s2))
    return np.linspace(v_from, v_to, steps + 1)[1:]


def _micro_trip(rng: np.random.Generator) -> np.ndarray:
    """Speed each second of one trip: idle, 1-3 cruise phases with smooth noise, brake to a stop.

    Accelerations stay within about +-3 m/s^2; speed is >= 0 and ends at 0.
    """
    pieces = [np.zeros(rng.integers(5, 60))]
    v = 0.0
    level = rng.choice(3, p=_LEVEL_PROBABILITIES)
    for _ in range(rng.integers(1, 4)):
        target = rng.uniform(*_SPEED_LEVELS_M_S[level])
        pieces.append(_ramp(v, target, rng.uniform(0.8, 2.5)))
        t = np.arange(1, rng.integers(15, 180) + 1)
        amplitude, period, phase = (
            rng.uniform(0, 0.03 * target + 0.2, 3),
            rng.uniform(30, 150, 3),
            rng.uniform(0, 2 * np.pi, 3),
        )
        wobble = (
            amplitude[:, None] * (np.sin(2 * np.pi * t / period[:, None] + phase[:, None]) - np.sin(phase[:, None]))
        ).sum(axis=0)
        pieces.append(np.maximum(target + wobble, 0.0))
        v = float(pieces[-1][-1])
        level = int(np.clip(level + rng.integers(-1, 2), 0, 2))
    pieces.append(_ramp(v, 0.0, rng.uniform(1.0, 3.0)))
    return np.concatenate(pieces)


def synthesize_speed_m_s(rng: np.random.Generator, duration_s: float, dt_s: float) -> np.ndarray:
    """Micro-trips back to back, resampled to ``dt_s``, covering at least ``duration_s``."""
    trips, total = [], 0
    while total <= duration_s + dt_s:
        trips.append(_micro_trip(rng))
        total += trips[-1].size
    speed_1s = np.concatenate(trips)
    n = math.floor(duration_s / dt_s) + 2
    return np.interp(dt_s * np.arange(n), np.arange(speed_1s.size, dtype=np.float64), speed_1s)
