"""Configs: the shipped YAML files load; bad values stop with a message naming the field."""

from pathlib import Path

import pytest
import yaml

from cellax.config import ConfigError, load_config
from cellax.data.config import DataConfig
from cellax.physics.config import bundled_parameter_sets

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "data"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_data_configs_load(path):
    config = load_config(path, DataConfig)
    assert isinstance(config, DataConfig) and config.n_profiles > 0


def test_pybamm_parameter_sets_are_listed_without_importing_pybamm():
    assert {"Chen2020", "Marquis2019", "Prada2013"} <= set(bundled_parameter_sets())


def _write(tmp_path, **changes):
    data = yaml.safe_load((CONFIGS / "quickstart.yaml").read_text())
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"datasheet": {"name": "x", "capacity_ah": -5}}, "datasheet.capacity_ah"),
        ({"simulation.parameter_set": "Nope2099"}, "simulation.parameter_set: unknown PyBaMM parameter set 'Nope2099'"),
        ({"conditions.ambient_temp_degc": [35, 10]}, "conditions.ambient_temp_degc: range reversed"),
        ({"conditions.initial_soc": [0.05, 0.5]}, "conditions.initial_soc"),
        ({"n_profiles": 0}, "n_profiles"),
        ({"simulation.model": "P4D"}, "simulation.model"),
        ({"profiles.soc_window": [0.0, 0.99]}, "soc_window"),
        ({"simulation.thermal.casing_heat_capacity_j_k": -1}, "simulation.thermal.casing_heat_capacity_j_k"),
        ({"conditons": {}}, "conditons: Extra inputs are not permitted"),
        ({"profiles.current_csv": "/nonexistent/cycle.csv"}, "profiles.current_csv: /nonexistent/cycle.csv: no such file"),
    ],
)
def test_bad_values_name_the_field(tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config(_write(tmp_path, **changes), DataConfig)


def test_voltage_window_reversed_in_an_inline_datasheet(tmp_path):
    from cellax.data.datasheet import LG_M50

    sheet = {**LG_M50.model_dump(), "voltage_min_v": 4.2, "voltage_max_v": 2.5}
    with pytest.raises(ConfigError, match="datasheet: voltage_min_v .* must be below voltage_max_v"):
        load_config(_write(tmp_path, datasheet=sheet), DataConfig)


def test_unreadable_and_non_mapping_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml", DataConfig)
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(path, DataConfig)
    path.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path, DataConfig)
