"""Specification of cellax.data.profiles: seeded generators that respect the datasheet, and the validator."""

import math

import numpy as np
import pytest
from pydantic import ValidationError

from cellax.data.datasheet import LG_M50, datasheet_for
from cellax.data.profiles import (
    PROFILE_KINDS,
    VIOLATION_KINDS,
    ProfileConfig,
    choose_kind,
    coulomb_soc,
    make_profile,
    profile_rng,
    validate_profile,
)
from cellax.data.vehicle import VehicleConfig, load_drive_cycle_csv, nominal_voltage_v, speed_to_current_a

DATASHEETS = {name: datasheet_for(name) for name in ("Chen2020", "Marquis2019", "Prada2013")}
CONFIG = ProfileConfig()


def _profile(kind, seed, profile_id=0, datasheet=LG_M50, config=CONFIG, initial_soc=0.5):
    return make_profile(kind, profile_rng(seed, profile_id), datasheet, config, initial_soc)


# --------------------------------------------------------------------------- reproducibility


@pytest.mark.parametrize("kind", PROFILE_KINDS)
def test_same_seed_and_id_give_the_same_profile(kind):
    np.testing.assert_array_equal(_profile(kind, 7, 3), _profile(kind, 7, 3))
    assert not np.array_equal(_profile(kind, 7, 3), _profile(kind, 7, 4))
    assert not np.array_equal(_profile(kind, 7, 3), _profile(kind, 8, 3))


def test_profiles_do_not_depend_on_generation_order():
    ids = range(5)
    forward = {i: _profile("dynamic", 1, i) for i in ids}
    backward = {i: _profile("dynamic", 1, i) for i in reversed(ids)}
    for i in ids:
        np.testing.assert_array_equal(forward[i], backward[i])


def test_choose_kind_follows_the_weights():
    config = ProfileConfig(kinds={"drive": 1.0, "cc_rest": 0.0})
    assert {choose_kind(profile_rng(0, i), config) for i in range(50)} == {"drive"}
    assert {choose_kind(profile_rng(0, i), CONFIG) for i in range(50)} == set(PROFILE_KINDS)


# --------------------------------------------------------------------------- generators


@pytest.mark.parametrize("datasheet", DATASHEETS.values(), ids=DATASHEETS.keys())
@pytest.mark.parametrize("kind", PROFILE_KINDS)
def test_generated_profiles_respect_datasheet_and_window(kind, datasheet):
    low = max(CONFIG.soc_window[0], datasheet.soc_min)
    high = min(CONFIG.soc_window[1], datasheet.soc_max)
    for seed in range(16):
        for initial_soc in (0.15, 0.5, 0.85):
            current_a = _profile(kind, seed, 11, datasheet, initial_soc=initial_soc)
            assert current_a.dtype == np.float64 and current_a.shape == (3600,)
            assert np.all(np.isfinite(current_a))
            assert validate_profile(current_a, CONFIG.dt_s, datasheet, initial_soc) == []
            soc = coulomb_soc(current_a, CONFIG.dt_s, datasheet.capacity_ah, initial_soc)
            assert low <= soc.min() and soc.max() <= high, (seed, initial_soc, soc.min(), soc.max())
            assert (current_a < 0).any() and (current_a > 0).any(), (seed, initial_soc)


def test_dynamic_and_drive_profiles_use_datasheet_pulses():
    for kind in ("dynamic", "drive"):
        peaks = [_profile(kind, seed).max() for seed in range(6)]
        assert max(peaks) > LG_M50.discharge_continuous_a, kind  # some pulse beyond the continuous limit
        assert max(peaks) <= LG_M50.discharge_pulse_a


@pytest.mark.parametrize("dt_s", [0.5, 7.0, 60.0])
def test_other_time_steps_and_narrow_window(dt_s):
    config = ProfileConfig(dt_s=dt_s, duration_s=1800.0, soc_window=(0.3, 0.7))
    for kind in PROFILE_KINDS:
        current_a = _profile(kind, 2, config=config)
        assert current_a.shape == (round(1800.0 / dt_s),)
        assert validate_profile(current_a, dt_s, LG_M50, 0.5) == []
        soc = coulomb_soc(current_a, dt_s, LG_M50.capacity_ah, 0.5)
        assert 0.3 <= soc.min() and soc.max() <= 0.7


def test_make_profile_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown profile kind 'hppc'"):
        _profile("hppc", 0)
    with pytest.raises(ValueError, match="initial_soc"):
        _profile("drive", 0, initial_soc=0.995)


# --------------------------------------------------------------------------- validator


def _only(violations, kind):
    assert [v.kind for v in violations] == [kind], violations
    return violations[0]


def test_clean_profile_returns_no_violations():
    current_a = np.full(600, 1.0)
    current_a[100:110] = 15.0  # one pulse of exactly pulse_duration_s
    current_a[120:125] = 15.0  # next pulse after exactly one pulse length of recovery
    assert validate_profile(current_a, 1.0, LG_M50, 0.5) == []


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(bad):
    current_a = np.full(600, 1.0)
    current_a[100] = bad
    violation = _only(validate_profile(current_a, 1.0, LG_M50, 0.5), "non_finite")
    assert (violation.start_s, violation.end_s) == (100.0, 101.0)


def test_continuous_limit_breach_where_no_pulse_is_allowed():
    current_a = np.full(600, 1.0)
    current_a[100:160] = -4.0  # LG M50 allows no charge pulses beyond -3.395 A
    violation = _only(validate_profile(current_a, 1.0, LG_M50, 0.5), "continuous_current")
    assert (violation.start_s, violation.end_s) == (100.0, 160.0)
    assert "-4" in violation.message and "-3.395" in violation.message


def test_pulse_beyond_pulse_limit():
    current_a = np.full(600, 1.0)
    current_a[100:105] = 25.0
    violation = _only(validate_profile(current_a, 1.0, LG_M50, 0.5), "pulse_current")
    assert (violation.start_s, violation.end_s) == (100.0, 105.0)
    assert "+25" in violation.message and "19.04" in violation.message


def test_pulse_too_long():
    current_a = np.full(600, 1.0)
    current_a[100:115] = 10.0
    violation = _only(validate_profile(current_a, 1.0, LG_M50, 0.5), "pulse_duration")
    assert (violation.start_s, violation.end_s) == (100.0, 115.0)
    assert "15 s" in violation.message


def test_recovery_between_pulses_too_short():
    current_a = np.full(600, 1.0)
    current_a[100:105] = 10.0
    current_a[110:115] = 10.0  # 5 s after the first pulse, one pulse length (10 s) is needed
    violation = _only(validate_profile(current_a, 1.0, LG_M50, 0.5), "pulse_duration")
    assert (violation.start_s, violation.end_s) == (105.0, 110.0)
    assert "recovery" in violation.message


def test_recovery_rule_scales_with_time_step():
    current_a = np.full(60, 1.0)
    current_a[10] = current_a[12] = 10.0  # dt 5 s: pulses of 5 s, 5 s apart
    assert _only(validate_profile(current_a, 5.0, LG_M50, 0.5), "pulse_duration").start_s == 55.0
    current_a[12] = 1.0
    current_a[13] = 10.0
    assert validate_profile(current_a, 5.0, LG_M50, 0.5) == []


@pytest.mark.parametrize(
    ("initial_soc", "current"),
    [(0.15, 2.0), (0.15, 5.0), (0.15, -2.0), (0.85, 2.0), (0.85, -2.0)],
)
def test_current_beyond_critical_limits_outside_the_band(initial_soc, current):
    current_a = np.zeros(300)
    current_a[50:53] = current  # within the normal (pulse) limits, beyond the critical ones
    violation = _only(validate_profile(current_a, 1.0, LG_M50, initial_soc), "critical_soc_current")
    assert (violation.start_s, violation.end_s) == (50.0, 53.0)


def test_sample_entering_the_critical_region_is_judged_by_critical_limits():
    # SOC 0.2001 -> 0.1997 during the sample: discharge limit drops from 7.275 A to 0.97 A
    violation = _only(validate_profile(np.array([7.0]), 1.0, LG_M50, 0.2001), "critical_soc_current")
    assert (violation.start_s, violation.end_s) == (0.0, 1.0)


def test_soc_below_minimum():
    current_a = np.full(1000, 0.95)  # within the critical limit of 0.97 A
    violation = _only(validate_profile(current_a, 1.0, LG_M50, 0.05), "soc_window")
    # SOC passes 0.01 during sample 757: 0.05 - 0.95 * 758 / 18000 < 0.01
    assert (violation.start_s, violation.end_s) == (757.0, 1000.0)


def test_soc_above_maximum():
    current_a = np.full(300, -1.1)
    current_a[250:] = 0.5
    violation = _only(validate_profile(current_a, 1.0, LG_M50, 0.97), "soc_window")
    assert violation.start_s == 163.0 and violation.end_s > 250.0
    assert "0.98" in violation.message


def test_several_violations_sorted_by_time():
    current_a = np.full(600, 1.0)
    current_a[400] = np.nan
    current_a[100:120] = 25.0
    violations = validate_profile(current_a, 1.0, LG_M50, 0.5)
    assert [v.kind for v in violations] == ["pulse_current", "pulse_duration", "non_finite"]
    assert all(v.kind in VIOLATION_KINDS for v in violations)


# --------------------------------------------------------------------------- drive cycles


def _write_cycle(tmp_path, rows, header="time_s,speed_kmh"):
    path = tmp_path / "cycle.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_drive_cycle_csv_round_trip(tmp_path):
    speed_kmh = [0, 18, 36, 54, 54, 36, 0]
    path = _write_cycle(tmp_path, [f"{t},{v}" for t, v in enumerate(speed_kmh)])
    time_s, speed_m_s = load_drive_cycle_csv(path)
    np.testing.assert_array_equal(time_s, np.arange(7.0))
    np.testing.assert_allclose(speed_m_s, np.array(speed_kmh) / 3.6)


def test_drive_profile_from_csv_cycle(tmp_path):
    t = np.arange(0, 301)
    speed_kmh = 60 * np.sin(np.pi * t / 300) ** 2  # one 5-minute trip from and back to standstill
    path = _write_cycle(tmp_path, [f"{a},{b:.3f}" for a, b in zip(t, speed_kmh)])
    config = ProfileConfig(drive_cycle_csv=path, duration_s=1800.0)
    current_a = _profile("drive", 4, config=config)
    assert current_a.shape == (1800,)
    assert validate_profile(current_a, 1.0, LG_M50, 0.5) == []
    np.testing.assert_array_equal(current_a, _profile("drive", 4, config=config))
    assert (current_a < 0).any() and (current_a > 0).any()  # regen and traction


@pytest.mark.parametrize(
    ("rows", "header", "match"),
    [
        (["0,0", "1,nan"], "time_s,speed_kmh", "line 3, column speed_kmh: 'nan' is not finite"),
        (["0,0", "1,inf"], "time_s,speed_kmh", "'inf' is not finite"),
        (["0,0", "1,-5"], "time_s,speed_kmh", "line 3, column speed_kmh: negative speed"),
        (["0,0", "1,fast"], "time_s,speed_kmh", "'fast' is not a number"),
        (["0,0", "1"], "time_s,speed_kmh", "line 3, column speed_kmh"),
        (["0,0", "0,5"], "time_s,speed_kmh", "line 3, column time_s: time 0.0 does not increase"),
        (["0,0", "1,5"], "time_s,velocity", "must have column 'time_s' and exactly one of"),
        (["0,0", "1,5"], "t,speed_m_s", "must have column 'time_s'"),
        (["0,0,0", "1,5,5"], "time_s,speed_kmh,speed_mph", "exactly one of"),
    ],
)
def test_drive_cycle_csv_errors(tmp_path, rows, header, match):
    path = _write_cycle(tmp_path, rows, header)
    with pytest.raises(ValueError, match=match) as error:
        load_drive_cycle_csv(path)
    assert "cycle.csv" in str(error.value)


def test_vehicle_model_at_constant_speed_and_when_braking():
    vehicle = VehicleConfig()
    v = 20.0
    current_a = speed_to_current_a(np.array([0.0, 10.0]), np.array([v, v]), vehicle, LG_M50, 1.0)
    assert current_a.shape == (11,)
    road_n = 0.5 * 1.2 * 0.30 * 2.2 * v**2 + 0.010 * 1500 * 9.81
    expected_w = road_n * v / 0.90 + 500.0
    cells = round(40e3 / (LG_M50.capacity_ah * nominal_voltage_v(LG_M50)))
    np.testing.assert_allclose(current_a, expected_w / (cells * 3.35))
    assert 0.05 < current_a[0] / LG_M50.capacity_ah < 1.0  # a realistic cruise C-rate
    braking = speed_to_current_a(np.array([0.0, 10.0]), np.array([20.0, 0.0]), vehicle, LG_M50, 1.0)
    assert np.all(braking[:-1] < 0)  # regen charges the cell
    fixed = VehicleConfig(cells_in_pack=100)
    assert math.isclose(
        speed_to_current_a(np.array([0.0, 1.0]), np.array([v, v]), fixed, LG_M50, 1.0)[0], expected_w / (100 * 3.35)
    )


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"kinds": {"hppc": 1.0}}, "kinds"),
        ({"kinds": {"drive": -1.0}}, "kinds"),
        ({"kinds": {"drive": 0.0}}, "kinds"),
        ({"soc_window": (0.9, 0.1)}, "soc_window"),
        ({"soc_window": (0.1, 1.5)}, "soc_window"),
        ({"duration_s": 0}, "duration_s"),
        ({"dt_s": -1}, "dt_s"),
        ({"cycle": "udds"}, "cycle"),
        ({"vehicle": {"mass_kg": 1500, "wings": 2}}, "wings"),
    ],
)
def test_profile_config_rejects_bad_fields(fields, match):
    with pytest.raises(ValidationError, match=match):
        ProfileConfig(**fields)


def test_profile_config_accepts_yaml_style_values():
    config = ProfileConfig.model_validate({"soc_window": [0.2, 0.8], "kinds": {"drive": 2}, "dt_s": 0.5})
    assert config.soc_window == (0.2, 0.8) and config.n_samples == 7200


def test_drive_profile_from_a_user_current_csv_respects_the_datasheet(tmp_path):
    path = tmp_path / "measured.csv"
    t = np.arange(0, 900.0)
    current = 4.0 * np.sin(t / 40.0) + np.where(t % 200 < 5, 15.0, 0.0)  # includes over-limit spikes
    path.write_text("time_s,current_a\n" + "\n".join(f"{a},{b}" for a, b in zip(t, current)))
    config = ProfileConfig(current_csv=path, kinds={"drive": 1.0}, duration_s=1800.0)
    profile = make_profile("drive", profile_rng(0, 0), LG_M50, config, 0.5)
    assert validate_profile(profile, config.dt_s, LG_M50, 0.5) == []
    assert profile.max() > 3.0 and profile.min() < -1.0


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "abc"])
def test_non_finite_or_non_numeric_currents_in_a_user_csv_are_refused(tmp_path, bad):
    path = tmp_path / "measured.csv"
    path.write_text(f"time_s,current_a\n0,1.0\n1,{bad}\n2,0.5\n")
    with pytest.raises(ValidationError, match=r"(?s)current_csv.*measured.csv: line 3, column current_a"):
        ProfileConfig(current_csv=path)


def test_a_speed_and_a_current_csv_together_are_refused(tmp_path):
    speed, current = tmp_path / "speed.csv", tmp_path / "current.csv"
    speed.write_text("time_s,speed_kmh\n0,0\n1,10\n")
    current.write_text("time_s,current_a\n0,0\n1,1\n")
    with pytest.raises(ValidationError, match="not both"):
        ProfileConfig(drive_cycle_csv=speed, current_csv=current)
    with pytest.raises(ValidationError, match="no such file"):
        ProfileConfig(drive_cycle_csv=tmp_path / "missing.csv")
