"""Datasheet limits: the LG M50 default, SOC-dependent limits, validation of bad sheets."""

import numpy as np
import pytest
from pydantic import ValidationError

from cellax.data.datasheet import LG_M50, Datasheet, datasheet_for


def test_lg_m50_matches_its_datasheet():
    assert LG_M50.capacity_ah == 5.0
    assert (LG_M50.voltage_min_v, LG_M50.voltage_max_v) == (2.5, 4.2)
    assert (LG_M50.charge_continuous_a, LG_M50.discharge_continuous_a) == (-3.395, 7.275)
    assert LG_M50.discharge_pulse_a == 19.04 and LG_M50.pulse_duration_s == 10.0
    assert (LG_M50.soc_min, LG_M50.soc_max) == (0.01, 0.98)
    assert datasheet_for("Chen2020") is LG_M50


def test_limits_tighten_outside_the_critical_soc_band():
    soc = np.array([0.1, 0.5, 0.9])
    charge, discharge = LG_M50.continuous_limits_a(soc)
    np.testing.assert_allclose(charge, [-1.455, -3.395, -1.455])
    np.testing.assert_allclose(discharge, [0.970, 7.275, 0.970])
    _, pulse = LG_M50.pulse_limits_a(soc)
    np.testing.assert_allclose(pulse, [0.970, 19.04, 0.970])


def test_other_parameter_sets_read_their_yaml_and_unknown_ones_say_so():
    assert datasheet_for("Marquis2019").capacity_ah == pytest.approx(0.680616)
    assert datasheet_for("Prada2013").voltage_max_v == 3.6
    with pytest.raises(ValueError, match="no datasheet for parameter set 'Nope'"):
        datasheet_for("Nope")


@pytest.mark.parametrize(
    "change, field",
    [
        ({"capacity_ah": -5.0}, "capacity_ah"),
        ({"voltage_min_v": 4.3}, "voltage_min_v"),
        ({"charge_continuous_a": 3.0}, "charge_continuous_a"),
        ({"soc_min": 0.99}, "soc_min"),
        ({"discharge_pulse_a": 1.0}, "discharge_pulse_a"),
    ],
)
def test_inconsistent_datasheets_are_rejected_naming_the_field(change, field):
    with pytest.raises(ValidationError, match=field):
        Datasheet.model_validate({**LG_M50.model_dump(), **change})
