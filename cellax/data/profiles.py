"""Seeded current profiles that respect a cell datasheet, and the validator that checks them.

Conventions. Positive current discharges the cell (PyBaMM). A profile is an array
``current_a`` of float64 samples at a fixed step ``dt_s``, sample ``k`` at time ``k dt``.
The generators and the validator treat sample ``k`` as held over ``[k dt, (k+1) dt)`` and
coulomb count SOC with the datasheet's nominal capacity,

    soc[k+1] = soc[k] - current_a[k] * dt_s / (3600 * capacity_ah),

so ``soc`` has one more entry than ``current_a`` (see :func:`coulomb_soc`). The simulators
(PyBaMM's ``Interpolant`` and cellax's :func:`~cellax.physics.simulate.simulate`) instead
interpolate the current linearly between samples, so a step in the profile becomes a ramp over
one sample interval: the charge they move per interval is the trapezoid
``(current_a[k] + current_a[k+1]) dt / 2``. Summed, the two counts differ by
``(current_a[k] - current_a[0]) dt / 2`` of charge at sample ``k`` (the sum telescopes): half a
sample. The ramp never exceeds the larger of its two end samples, so a profile that passes
the datasheet rules here passes them as simulated. (The control interface
:func:`~cellax.physics.simulate.advance` holds its current over the interval, as an RL action is held.)

Datasheet rules (:func:`validate_profile`; :class:`~cellax.data.datasheet.Datasheet` has the
limits). Sample ``k`` is judged at the stricter of the limits at ``soc[k]`` and ``soc[k+1]``, so a
sample that enters the critical SOC region is judged by the critical limits.

* ``non_finite``: NaN or inf samples (they count as 0 A for the other checks).
* ``critical_soc_current``: outside ``[critical_soc_low, critical_soc_high]`` the current must
  stay within ``[critical_charge_a, critical_discharge_a]``; no pulses there.
* ``continuous_current``: beyond a continuous limit in a direction where the datasheet
  allows no pulse (its pulse limit equals the continuous one, e.g. LG M50 charging).
* A *pulse* is a maximal run of consecutive samples beyond the continuous limits (either
  sign) while SOC is inside ``[critical_soc_low, critical_soc_high]``, in a direction that
  allows pulses.
  ``pulse_current``: a pulse sample beyond the pulse limits.
  ``pulse_duration``: a pulse longer than ``pulse_duration_s``, or a pulse that starts less
  than ``pulse_duration_s`` after the previous one ended (*recovery rule*: between two pulses
  the cell spends at least one pulse length within its continuous limits).
* ``soc_window``: SOC outside ``[soc_min, soc_max]`` at either end of a sample.

Generators (:func:`make_profile`) respect these rules by construction: a governor tracks SOC
and the pulse state sample by sample and clips each requested current to what is allowed,
with a 0.5 % margin inside every current limit so the validator's strict comparisons are
robust. SOC is steered inside ``config.soc_window`` intersected with the datasheet window:
segment directions are drawn with a bias towards the middle of the window, and a sample that
would leave it is clipped (an initial SOC outside that window, but inside the datasheet's, is
allowed: the profile only moves back towards it). A profile that starts inside the window
and lasts long enough for a few segments (15 min or more in practice) contains both charge
and discharge: segments last at most 35 % of the profile and a missing direction is forced
after 40 % of it. Kinds:

* ``cc_rest``: constant-current charge and discharge steps (random C-rate, minutes long)
  separated by rests.
* ``drive``: a synthesized speed trace of micro-trips, or a user speed CSV
  (``drive_cycle_csv``), turned into cell current by a vehicle model
  (:mod:`cellax.data.vehicle`); regen braking charges; when SOC runs low the vehicle is
  plugged in for a CC charge. A user current CSV (``current_csv``, e.g. a measured cycle)
  replaces the vehicle model; it is looped from a random start and clipped like any other
  request.
* ``dynamic``: a mix of CC steps, rests, drive segments and short pulse trains up to the
  pulse limit.

Randomness comes only from the ``np.random.Generator`` passed in; :func:`profile_rng` gives
each profile its own stream, independent of worker, process and order.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib

import numpy as np
from pydantic import Field, field_validator, model_validator

from cellax.config import Strict
from cellax.data.datasheet import Datasheet
from cellax.data.vehicle import (
    VehicleConfig,
    grid_speed_to_current_a,
    load_current_csv,
    load_drive_cycle_csv,
    looped_trace,
    synthesize_speed_m_s,
)

PROFILE_KINDS = ("cc_rest", "drive", "dynamic")
VIOLATION_KINDS = (
    "non_finite",
    "continuous_current",
    "pulse_current",
    "pulse_duration",
    "critical_soc_current",
    "soc_window",
)

LIMIT_MARGIN = 0.995  # generators stay within 99.5 % of every current limit
_SOC_MARGIN = 1e-4  # generators stay this far inside the SOC window
_SOC_EPS = 1e-7  # SOC slack when deciding the critical band (rounding of the coulomb count)
_FORCE_AFTER = 0.4  # fraction of the profile after which a missing direction is forced


MAX_DURATION_S = 7 * 24 * 3600.0
MAX_SAMPLES = 10_000_000
"""Bounds of one profile: a week, ten million samples (80 MB per signal in float64)."""


class ProfileConfig(Strict):
    """What profiles to generate: kind weights, length, step, SOC window, drive cycle, vehicle."""


    kinds: dict[str, float] = Field(default_factory=lambda: {kind: 1.0 for kind in PROFILE_KINDS})
    duration_s: float = Field(3600.0, gt=0, le=MAX_DURATION_S)
    dt_s: float = Field(1.0, ge=1e-3, le=3600.0)
    soc_window: tuple[float, float] = (0.1, 0.9)
    drive_cycle_csv: pathlib.Path | None = None
    current_csv: pathlib.Path | None = None
    vehicle: VehicleConfig = VehicleConfig()

    @field_validator("kinds")
    @classmethod
    def _check_kinds(cls, kinds: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(kinds) - set(PROFILE_KINDS))
        if unknown:
            raise ValueError(f"unknown profile kind(s) {unknown}; known: {list(PROFILE_KINDS)}")
        bad = {k: w for k, w in kinds.items() if not (math.isfinite(w) and w >= 0)}
        if bad:
            raise ValueError(f"weights must be finite and >= 0, got {bad}")
        if sum(kinds.values()) <= 0:
            raise ValueError(f"weights must sum to more than 0, got {kinds}")
        return kinds

    @field_validator("drive_cycle_csv")
    @classmethod
    def _check_drive_cycle(cls, path: pathlib.Path | None) -> pathlib.Path | None:
        if path is not None:
            load_drive_cycle_csv(path)
        return path

    @field_validator("current_csv")
    @classmethod
    def _check_current(cls, path: pathlib.Path | None) -> pathlib.Path | None:
        if path is not None:
            load_current_csv(path)
        return path

    @model_validator(mode="after")
    def _one_trace(self) -> "ProfileConfig":
        if self.drive_cycle_csv is not None and self.current_csv is not None:
            raise ValueError("give drive_cycle_csv (speed) or current_csv (current), not both")
        if self.dt_s > self.duration_s:
            raise ValueError(f"dt_s {self.dt_s} is longer than duration_s {self.duration_s}")
        if self.duration_s / self.dt_s > MAX_SAMPLES:
            raise ValueError(f"duration_s / dt_s = {self.duration_s / self.dt_s:.3g} samples per profile; "
                             f"at most {MAX_SAMPLES:.0e}")
        return self

    @field_validator("soc_window")
    @classmethod
    def _check_window(cls, window: tuple[float, float]) -> tuple[float, float]:
        low, high = window
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"must satisfy 0 <= low < high <= 1, got ({low}, {high})")
        return window

    @property
    def n_samples(self) -> int:
        """Samples per profile, ``round(duration_s / dt_s)`` (at least 1)."""
        return max(1, round(self.duration_s / self.dt_s))


def profile_rng(seed: int, profile_id: int) -> np.random.Generator:
    """The random stream of one profile: a function of ``(seed, profile_id)`` only."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(profile_id,)))


def choose_kind(rng: np.random.Generator, config: ProfileConfig) -> str:
    """Draw a profile kind with the weights of ``config.kinds`` (one draw from ``rng``)."""
    kinds = [k for k, w in config.kinds.items() if w > 0]
    weights = np.array([config.kinds[k] for k in kinds], dtype=float)
    return str(rng.choice(kinds, p=weights / weights.sum()))


def coulomb_soc(current_a: np.ndarray, dt_s: float, capacity_ah: float, initial_soc: float) -> np.ndarray:
    """SOC at the sample boundaries, shape ``(len(current_a) + 1,)``, by coulomb counting."""
    charge = np.cumsum(np.asarray(current_a, dtype=np.float64) * (dt_s / (3600.0 * capacity_ah)))
    return initial_soc - np.concatenate([[0.0], charge])


def _pulse_samples(datasheet: Datasheet, dt_s: float) -> tuple[int, int]:
    """(longest pulse, shortest recovery) in samples; shared by generators and validator."""
    ratio = datasheet.pulse_duration_s / dt_s
    return math.floor(ratio + 1e-9), math.ceil(ratio - 1e-9)


# --------------------------------------------------------------------------- validator


@dataclasses.dataclass(frozen=True)
class Violation:
    """One contiguous breach of the datasheet: from the start of its first sample to the end of its last."""

    kind: str
    start_s: float
    end_s: float
    message: str


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` sample ranges where ``mask`` is true."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def validate_profile(current_a: np.ndarray, dt_s: float, datasheet: Datasheet, initial_soc: float) -> list[Violation]:
    """Every breach of ``datasheet`` by the profile (rules in the module docstring); [] if valid.

    Violations are grouped into contiguous runs per kind and sorted by start time.
    """
    current = np.asarray(current_a, dtype=np.float64)
    if current.ndim != 1:
        raise ValueError(f"current_a must be 1-D, got shape {current.shape}")
    if not dt_s > 0:
        raise ValueError(f"dt_s must be > 0, got {dt_s}")
    ds = datasheet
    found: list[Violation] = []

    def report(kind: str, start: int, stop: int, message: str) -> None:
        found.append(Violation(kind, start * dt_s, stop * dt_s, message))

    finite = np.isfinite(current)
    for start, stop in _runs(~finite):
        report("non_finite", start, stop, f"{stop - start} non-finite sample(s), first {current[start]!r}")
    current = np.where(finite, current, 0.0)

    soc = coulomb_soc(current, dt_s, ds.capacity_ah, initial_soc)
    ends = (soc[:-1], soc[1:])
    (cont_c0, cont_d0), (cont_c1, cont_d1) = (ds.continuous_limits_a(s) for s in ends)
    (pulse_c0, pulse_d0), (pulse_c1, pulse_d1) = (ds.pulse_limits_a(s) for s in ends)
    cont_c, cont_d = np.maximum(cont_c0, cont_c1), np.minimum(cont_d0, cont_d1)
    pulse_c, pulse_d = np.maximum(pulse_c0, pulse_c1), np.minimum(pulse_d0, pulse_d1)
    critical = ds.in_critical_band(ends[0]) | ds.in_critical_band(ends[1])
    above, below = current > cont_d, current < cont_c
    no_pulses = (above & (pulse_d <= cont_d)) | (below & (pulse_c >= cont_c))

    def worst(start: int, stop: int, low: np.ndarray, high: np.ndarray) -> str:
        excess = np.maximum(current[start:stop] - high[start:stop], low[start:stop] - current[start:stop])
        k = start + int(np.argmax(excess))
        return f"{current[k]:+.4g} A at {k * dt_s:g} s (SOC {soc[k]:.4f}, limits [{low[k]:.4g}, {high[k]:.4g}] A)"

    for start, stop in _runs((above | below) & critical):
        band = f"[{ds.critical_soc_low}, {ds.critical_soc_high}]"
        report(
            "critical_soc_current",
            start,
            stop,
            f"current beyond the critical-SOC limits with SOC outside {band}: {worst(start, stop, cont_c, cont_d)}",
        )
    for start, stop in _runs((above | below) & ~critical & no_pulses):
        report(
            "continuous_current",
            start,
            stop,
            "current beyond the continuous limits in a direction the datasheet allows no pulses: "
            + worst(start, stop, cont_c, cont_d),
        )
    pulse = (above | below) & ~critical & ~no_pulses
    for start, stop in _runs(pulse & ((current > pulse_d) | (current < pulse_c))):
        report("pulse_current", start, stop, "pulse beyond the pulse limits: " + worst(start, stop, pulse_c, pulse_d))
    longest, recovery = _pulse_samples(ds, dt_s)
    previous_stop = None
    for start, stop in _runs(pulse):
        if stop - start > longest:
            report(
                "pulse_duration",
                start,
                stop,
                f"pulse of {(stop - start) * dt_s:g} s beyond the continuous limits exceeds "
                f"pulse_duration_s = {ds.pulse_duration_s:g} s",
            )
        if previous_stop is not None and start - previous_stop < recovery:
            report(
                "pulse_duration",
                previous_stop,
                start,
                f"only {(start - previous_stop) * dt_s:g} s of recovery before the pulse at {start * dt_s:g} s; "
                f"pulses need pulse_duration_s = {ds.pulse_duration_s:g} s within the continuous limits between them",
            )
        previous_stop = stop

    outside = (soc < ds.soc_min) | (soc > ds.soc_max)
    for start, stop in _runs(outside[:-1] | outside[1:]):
        span = soc[start : stop + 1]
        extreme = span[np.argmax(np.maximum(ds.soc_min - span, span - ds.soc_max))]
        report("soc_window", start, stop, f"SOC reaches {extreme:.4f}, outside [{ds.soc_min}, {ds.soc_max}]")

    return sorted(found, key=lambda v: (v.start_s, VIOLATION_KINDS.index(v.kind)))


# --------------------------------------------------------------------------- generators


class _Governor:
    """Writes a profile sample by sample, clipping each requested current to what is allowed.

    The datasheet limits are piecewise constant in SOC (normal inside the critical band,
    critical outside), so both regimes are evaluated once with the datasheet's methods.
    """

    def __init__(self, datasheet: Datasheet, config: ProfileConfig, initial_soc: float):
        ds = datasheet
        if not (math.isfinite(initial_soc) and ds.soc_min <= initial_soc <= ds.soc_max):
            raise ValueError(f"initial_soc {initial_soc} outside the datasheet window [{ds.soc_min}, {ds.soc_max}]")
        self.low = max(config.soc_window[0], ds.soc_min) + _SOC_MARGIN
        self.high = min(config.soc_window[1], ds.soc_max) - _SOC_MARGIN
        if self.low >= self.high:
            raise ValueError(
                f"soc_window {config.soc_window} and the datasheet window "
                f"[{ds.soc_min}, {ds.soc_max}] leave no room to operate"
            )
        probe = np.array([0.5 * (ds.critical_soc_low + ds.critical_soc_high), -1.0])  # normal, critical
        (self.cont_c, crit_c), (self.cont_d, crit_d) = (x.tolist() for x in ds.continuous_limits_a(probe))
        pulse_c, pulse_d = (float(x[0]) for x in ds.pulse_limits_a(probe))
        self.crit_c, self.crit_d = crit_c * LIMIT_MARGIN, crit_d * LIMIT_MARGIN
        self.pulse_c, self.pulse_d = pulse_c * LIMIT_MARGIN, pulse_d * LIMIT_MARGIN
        self.band = (ds.critical_soc_low + _SOC_EPS, ds.critical_soc_high - _SOC_EPS)
        self.longest, self.recovery = _pulse_samples(ds, config.dt_s)
        self.amps_to_soc = config.dt_s / (3600.0 * ds.capacity_ah)
        self.capacity_as = 3600.0 * ds.capacity_ah
        self.dt_s = config.dt_s
        self.out = np.zeros(config.n_samples)
        self.k, self.soc = 0, float(initial_soc)
        self.run, self.since_pulse = 0, self.recovery  # current pulse length, samples since the last one
        self.has_charge = self.has_discharge = False

    @property
    def done(self) -> bool:
        return self.k >= self.out.size

    @property
    def segment_cap_s(self) -> float:
        """Longest CC or charging segment: 35 % of the profile, leaving room for both directions."""
        return 0.35 * self.out.size * self.dt_s

    @property
    def fraction(self) -> float:
        """Position of SOC in the operating window, 0 at the bottom, 1 at the top."""
        return (self.soc - self.low) / (self.high - self.low)

    def pulses_possible(self) -> bool:
        low, high = self.band
        return (
            self.longest >= 1 and low <= self.soc <= high and (self.pulse_d > self.cont_d or self.pulse_c < self.cont_c)
        )

    def pick_sign(self, rng: np.random.Generator) -> tuple[int, bool]:
        """(+1 discharge / -1 charge, forced): biased to the middle of the window; forces a missing direction."""
        frac = self.fraction
        if frac > 0.97 or frac < 0.03:
            return (1 if frac > 0.5 else -1), False
        if self.k >= _FORCE_AFTER * self.out.size and not (self.has_charge and self.has_discharge):
            return (-1 if not self.has_charge else 1), True
        return (1 if rng.random() < min(max(frac, 0.1), 0.9) else -1), False

    def feed(self, desired_a: np.ndarray) -> None:
        """Append ``desired_a`` (or as much as fits), each sample clipped to the allowed range."""
        band_low, band_high = self.band
        cont_c, cont_d = self.cont_c, self.cont_d
        safe_c, safe_d = cont_c * LIMIT_MARGIN, cont_d * LIMIT_MARGIN
        scale, low, high = self.amps_to_soc, self.low, self.high
        out, k, soc, run, since = self.out, self.k, self.soc, self.run, self.since_pulse
        stop = min(out.size, k + len(desired_a))
        for want in desired_a[: stop - k].tolist():
            if soc < band_low or soc > band_high:
                lo_a, hi_a = self.crit_c, self.crit_d
            elif (0 < run < self.longest) or (run == 0 and since >= self.recovery):
                lo_a, hi_a = self.pulse_c, self.pulse_d
            else:
                lo_a, hi_a = safe_c, safe_d
            lo_a = max(lo_a, min((soc - high) / scale, 0.0))  # stay inside the SOC window
            hi_a = min(hi_a, max((soc - low) / scale, 0.0))
            current = min(max(want, lo_a), hi_a)
            if safe_d < current < cont_d / LIMIT_MARGIN:  # neither clearly continuous nor clearly a pulse
                current = safe_d
            elif cont_c / LIMIT_MARGIN < current < safe_c:
                current = safe_c
            soc_next = soc - current * scale
            if soc_next < band_low or soc_next > band_high:  # entering the critical region
                current = min(max(current, self.crit_c), self.crit_d)
                soc_next = soc - current * scale
            if current > cont_d or current < cont_c:
                run += 1
            else:
                if run:
                    run, since = 0, 0
                since += 1
            out[k] = current
            k += 1
            soc = soc_next
        segment = out[self.k : k]
        self.has_charge = self.has_charge or bool((segment < 0).any())
        self.has_discharge = self.has_discharge or bool((segment > 0).any())
        self.k, self.soc, self.run, self.since_pulse = k, soc, run, since


def _samples(duration_s: float, dt_s: float) -> int:
    return max(1, round(duration_s / dt_s))


def _cc_step(rng: np.random.Generator, gov: _Governor, sign: int, duration_s: tuple[float, float]) -> np.ndarray:
    """A constant current of random C-rate (10-100 % of the continuous limit), capped at the window edge."""
    current = sign * rng.uniform(0.1, 1.0) * (gov.cont_d if sign > 0 else -gov.cont_c)
    room_soc = gov.soc - gov.low if sign > 0 else gov.high - gov.soc
    to_edge_s = max(room_soc, 0.0) * gov.capacity_as / abs(current)
    seconds = max(min(rng.uniform(*duration_s), to_edge_s, gov.segment_cap_s), 30.0)
    return np.full(_samples(seconds, gov.dt_s), current)


def _rest(rng: np.random.Generator, gov: _Governor, duration_s: tuple[float, float]) -> np.ndarray:
    return np.zeros(_samples(min(rng.uniform(*duration_s), 0.5 * gov.segment_cap_s), gov.dt_s))


def _generate_cc_rest(rng, datasheet, config, gov: _Governor) -> None:
    while not gov.done:
        sign, _ = gov.pick_sign(rng)
        gov.feed(_cc_step(rng, gov, sign, (120.0, 1200.0)))
        if rng.random() < 0.75:
            gov.feed(_rest(rng, gov, (60.0, 600.0)))


def _plug_in_charge(rng: np.random.Generator, gov: _Governor) -> np.ndarray:
    """Vehicle parked and plugged in: idle, CC charge towards a random target SOC, idle."""
    current = -rng.uniform(0.3, 1.0) * -gov.cont_c
    target = gov.low + rng.uniform(0.5, 0.95) * (gov.high - gov.low)
    seconds = min(max(target - gov.soc, 0.0) * gov.capacity_as / -current, rng.uniform(600, 2400), gov.segment_cap_s)
    return np.concatenate(
        [
            _rest(rng, gov, (10, 60)),
            np.full(_samples(max(seconds, 120.0), gov.dt_s), current),
            _rest(rng, gov, (10, 60)),
        ]
    )


def _generate_drive(rng, datasheet, config, gov: _Governor) -> None:
    n, dt_s = gov.out.size, config.dt_s
    if config.current_csv is not None:
        current = looped_trace(rng, load_current_csv(config.current_csv), n + 1, dt_s)
        speed = (current > 0).astype(float)  # trips split where discharge starts from rest or regen
    else:
        if config.drive_cycle_csv is not None:
            speed = looped_trace(rng, load_drive_cycle_csv(config.drive_cycle_csv), n + 1, dt_s)
        else:
            speed = synthesize_speed_m_s(rng, config.duration_s, dt_s)
        current = grid_speed_to_current_a(speed, dt_s, config.vehicle, datasheet)
    # feed trip by trip (split where the vehicle starts from standstill, at most 300 s apart)
    starts = np.flatnonzero((speed[: n - 1] == 0) & (speed[1:n] > 0)) + 1
    cuts, last = [], 0
    for cut in np.append(starts, n).tolist():
        while cut - last > _samples(300.0, dt_s):
            last += _samples(300.0, dt_s)
            cuts.append(last)
        cuts.append(cut)
        last = cut
    position, plugged = 0, False
    low_soc = gov.low + 0.05 * (gov.high - gov.low)
    for cut in cuts:
        if gov.done:
            break
        forced = gov.k >= _FORCE_AFTER * n and not gov.has_charge and not plugged
        if gov.soc < low_soc or forced:
            gov.feed(_plug_in_charge(rng, gov))
            plugged = True
        gov.feed(current[position:cut])
        position = cut
    if not gov.done:  # not reached (the trace covers the profile); stay parked if it were
        gov.feed(np.zeros(n - gov.k))


def _pulse_train(rng: np.random.Generator, gov: _Governor, sign: int) -> np.ndarray:
    """3-8 pulses (mostly of ``sign``) up to the pulse limit, each <= pulse_duration_s, with recovery gaps."""
    base = sign * rng.uniform(0.0, 0.3) * (gov.cont_d if sign > 0 else -gov.cont_c)
    pieces = [np.full(gov.recovery, base)]
    for _ in range(rng.integers(3, 9)):
        direction = sign if rng.random() < 0.75 else -sign
        limit = gov.pulse_d / LIMIT_MARGIN if direction > 0 else gov.pulse_c / LIMIT_MARGIN
        pieces.append(np.full(rng.integers(1, gov.longest + 1), rng.uniform(0.5, 1.0) * limit))
        pieces.append(np.full(gov.recovery + rng.integers(0, 2 * gov.recovery + 1), base))
    return np.concatenate(pieces)


def _generate_dynamic(rng, datasheet, config, gov: _Governor) -> None:
    vehicle, dt_s = config.vehicle, config.dt_s
    while not gov.done:
        sign, forced = gov.pick_sign(rng)
        choice = "cc" if forced else rng.choice(["cc", "rest", "drive", "pulses"], p=[0.35, 0.15, 0.25, 0.25])
        if choice == "pulses" and not gov.pulses_possible():
            choice = "cc"
        if choice == "drive" and sign < 0:
            choice = "cc"  # driving mostly discharges; charge comes from regen inside other drive segments
        if choice == "cc":
            gov.feed(_cc_step(rng, gov, sign, (60.0, 900.0)))
        elif choice == "rest":
            gov.feed(_rest(rng, gov, (30.0, 300.0)))
        elif choice == "drive":
            seconds = rng.uniform(120.0, 600.0)
            speed = synthesize_speed_m_s(rng, seconds, dt_s)[: _samples(seconds, dt_s)]
            gov.feed(grid_speed_to_current_a(speed, dt_s, vehicle, datasheet))
        else:
            gov.feed(_pulse_train(rng, gov, sign))


_GENERATORS = {"cc_rest": _generate_cc_rest, "drive": _generate_drive, "dynamic": _generate_dynamic}


def make_profile(
    kind: str, rng: np.random.Generator, datasheet: Datasheet, config: ProfileConfig, initial_soc: float
) -> np.ndarray:
    """Current samples (float64, shape ``(config.n_samples,)``) of ``kind``, valid for ``datasheet``.

    The output is checked with :func:`validate_profile`; a violation there is a bug and raises
    ``RuntimeError``.
    """
    if kind not in _GENERATORS:
        raise ValueError(f"unknown profile kind {kind!r}; known: {list(PROFILE_KINDS)}")
    gov = _Governor(datasheet, config, initial_soc)
    _GENERATORS[kind](rng, datasheet, config, gov)
    violations = validate_profile(gov.out, config.dt_s, datasheet, initial_soc)
    if violations:
        raise RuntimeError(f"generated {kind} profile breaks the datasheet (a cellax bug): {violations[:3]}")
    return gov.out
