"""fit: four parameters at once from noisy synthetic voltage and temperature, with honest uncertainties."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from cellax.cli import main
from cellax.config import validate_config
from cellax.data.config import DataConfig
from cellax.data.datasheet import LG_M50
from cellax.data.generate import generate
from cellax.data.profiles import ProfileConfig, make_profile, profile_rng
from cellax.physics import load_parameter_set
from cellax.physics.config import FitParameter
from cellax.physics.fit import END_TIME_SIGMA_S, Measurement, _Group, _group_members, fit, forward_jacobian
from cellax.workflows.fit import write_report
from cellax.physics.simulate import simulate
from cellax.physics.spme import SPMe

TRUTH = {
    "neg_diffusivity_scale": 1.0,
    "pos_diffusivity_scale": 1.0,
    "neg_exchange_current_scale": 1.0,
    "heat_transfer_coeff_w_m2k": 10.0,
}


@pytest.fixture(scope="module")
def params():
    return load_parameter_set("Chen2020")


@pytest.fixture(scope="module")
def noisy_profile(params):
    """40 min of the generator's dynamic current, the SPMe's answer plus 2 mV / 0.1 K Gaussian noise."""
    model = SPMe(10, (6, 4, 6))
    current = make_profile("dynamic", profile_rng(5, 0), LG_M50, ProfileConfig(kinds={"dynamic": 1.0}, duration_s=2400.0), 0.7)
    truth = params.with_values(TRUTH)
    signals = simulate(model, truth, current, 1.0, 0.7, 298.15).signals
    rng = np.random.default_rng(0)
    measured = {
        "voltage_v": np.asarray(signals["voltage_v"]) + rng.normal(0, 2e-3, len(current)),
        "surface_temp_degc": np.asarray(signals["surface_temp_degc"]) + rng.normal(0, 0.1, len(current)),
    }
    return model, Measurement(current, 1.0, 0.7, 298.15, measured)


def test_four_parameters_are_recovered_within_5_percent_and_4_sigma(params, noisy_profile, tmp_path):
    model, data = noisy_profile
    start = [2.0, 0.5, 1.5, 6.0]
    parameters = [FitParameter(name=k, lower=TRUTH[k] / 10, upper=TRUTH[k] * 10, initial=s) for k, s in zip(TRUTH, start)]
    result = fit(model, params, parameters, [data])
    assert result.converged
    for name, true in TRUTH.items():
        assert abs(result.values[name] / true - 1) <= 0.05, (name, result.values[name])
        assert abs(result.values[name] - true) <= 4 * result.std[name], (name, result.values[name], result.std[name])
    assert result.rmse["voltage_v"] == pytest.approx(2e-3, rel=0.1)  # the fit reaches the noise floor
    assert result.rmse["surface_temp_degc"] == pytest.approx(0.1, rel=0.1)
    report, picture = write_report(result, [data], tmp_path, truth=TRUTH)
    assert set(json.loads(report.read_text())["relative_error_pct"]) == set(TRUTH)
    assert picture.stat().st_size > 10_000


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="neg_diffusivity_scale", lower=1.0, upper=0.5, initial=0.7), "lower < upper"),
        (dict(name="neg_diffusivity_scale", lower=0.0, upper=2.0, initial=1.0), "positive lower bound"),
        (dict(name="neg_diffusivity_scale", lower=0.5, upper=2.0, initial=3.0), "strictly inside"),
        (dict(name="neg_diffusivity_scale", lower=0.5, upper=2.0, initial=1.0, transform="tanh"), "transform"),
    ],
)
def test_bad_parameter_specifications_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FitParameter(**kwargs)


def test_unknown_parameters_and_bad_measurements_are_refused(params):
    current = np.ones(10)
    with pytest.raises(ValueError, match="has shape"):
        Measurement(current, 1.0, 0.5, 298.15, {"voltage_v": np.ones(9)})
    with pytest.raises(ValueError, match="NaN"):
        Measurement(current, 1.0, 0.5, 298.15, {"voltage_v": np.full(10, np.nan)})
    with pytest.raises(ValueError, match="cannot fit"):
        Measurement(current, 1.0, 0.5, 298.15, {"ocv": np.ones(10)})
    data = Measurement(current, 1.0, 0.5, 298.15, {"voltage_v": np.ones(10)})
    with pytest.raises(ValueError, match="unknown parameter"):
        fit(SPMe(), params, [FitParameter(name="neg_diffusivity", lower=0.1, upper=10, initial=1.0)], [data])


@pytest.mark.parametrize("model, duration_s, initial", [
    ("SPMe", 1800, {"neg_diffusivity_scale": 1.8, "pos_exchange_current_scale": 0.6}),
    ("DFN", 600, {"electrolyte_conductivity_scale": 1.6, "neg_exchange_current_scale": 0.6}),
])
def test_cellax_fit_identifies_parameters_from_a_dataset(model, duration_s, initial, tmp_path, capsys):
    """Noise-free data of the model itself (the jax backend) give back its parameters from a wrong start."""
    job = {
        "name": "fit", "seed": 3, "n_profiles": 1, "backend": "jax", "simulation": {"model": model},
        "profiles": {"duration_s": duration_s, "kinds": {"dynamic": 1}},
        "conditions": {"ambient_temp_degc": 25, "heat_transfer_coeff": 10, "initial_soc": 0.6},
    }
    generate(validate_config(DataConfig, job), tmp_path / "data.h5", progress=False, log=lambda *_: None)
    config = {
        "data": str(tmp_path / "data.h5"),
        "model": model,
        "signals": ["voltage_v"],
        "parameters": {name: {"lower": 0.1, "upper": 10, "initial": value} for name, value in initial.items()},
        "out": str(tmp_path / "fit"),
    }
    (tmp_path / "fit.yaml").write_text(yaml.safe_dump(config))
    assert main(["fit", str(tmp_path / "fit.yaml")]) == 0
    report = json.loads((tmp_path / "fit" / "fit_report.json").read_text())
    for name in config["parameters"]:
        assert report["values"][name] == pytest.approx(1.0, rel=1e-3)
    assert (tmp_path / "fit" / "fit_residuals.png").exists()
    assert next(iter(initial)) in capsys.readouterr().out


def test_cellax_fit_names_the_bad_field(tmp_path, capsys):
    (tmp_path / "fit.yaml").write_text(yaml.safe_dump({"data": "x.h5", "parameters": {"a": {"lower": 1, "upper": 0.5, "initial": 0.7}}}))
    assert main(["fit", str(tmp_path / "fit.yaml")]) == 2
    assert "parameters.a" in capsys.readouterr().err


def test_profiles_of_one_kind_are_grouped_into_length_buckets():
    def measurement(n, end=None, signals=("voltage_v",)):
        return Measurement(np.ones(n), 1.0, 0.5, 298.15, {k: np.ones(n) for k in signals}, end_time_s=end)

    data = [measurement(100), measurement(1000), measurement(120), measurement(110, end=100.0),
            measurement(124), measurement(100, signals=("voltage_v", "core_temp_degc"))]
    assert _group_members(data) == [[0, 2, 4], [1], [3], [5]]


def test_a_padded_group_has_the_residuals_of_its_members_simulated_alone(params):
    """Zero-padding to the bucket's length changes nothing before each profile's end, and a model cut-off
    after a profile's last sample counts as at that sample, as in an unpadded simulation."""
    model = SPMe(10, (6, 4, 6))
    sigmas = {"sigma_v": 2e-3, "sigma_temp_k": 0.1}
    members = []
    for n, soc in ((1000, 0.25), (850, 0.35)):  # the first reaches 2.5 V inside its samples, the second after them
        current = np.full(n, 5.0)
        voltage = np.asarray(simulate(model, params, current, 1.0, soc, 298.15).signals["voltage_v"]) + 1e-3
        members.append(Measurement(current, 1.0, soc, 298.15, {"voltage_v": voltage}, end_time_s=700.0))
    together = np.asarray(_Group.of(members, sigmas).residuals(model, params, {}))
    n = max(len(m.current_a) for m in members)
    for j, m in enumerate(members):
        alone = np.asarray(_Group.of([m], sigmas).residuals(model, params, {}))
        k = len(m.current_a)
        np.testing.assert_allclose(together[j * n: j * n + k], alone[:k], rtol=1e-9, atol=1e-9)
        assert not np.any(together[j * n + k: (j + 1) * n])
        assert together[2 * n + j] == pytest.approx(alone[-1], rel=1e-9)
    assert together[2 * n + 1] == pytest.approx((849 - 700) / END_TIME_SIGMA_S)  # capped at its last sample


def test_the_dense_forward_jacobian_is_the_functions_derivative_in_every_mode():
    """Forward (the Jacobian LM forms), linearised then transposed (its gradient step) and reverse mode all give
    the derivative of the function itself; values are unchanged."""
    def fn(z, args):
        scale, offset = args
        return jnp.stack([jnp.sin(z[0]) * z[1], scale * z[0] ** 3 - offset, jnp.exp(-z[1]) + z[0] * z[1] ** 2])

    z, args = jnp.asarray([0.3, -1.2], dtype=jnp.float64), (jnp.asarray(2.0, dtype=jnp.float64), 0.5)
    dense = forward_jacobian(fn)
    np.testing.assert_array_equal(dense(z, args), fn(z, args))
    np.testing.assert_allclose(jax.jacfwd(dense)(z, args), jax.jacfwd(fn)(z, args), rtol=1e-14)
    residual = fn(z, args)
    _, linear = jax.linearize(lambda z: dense(z, args), z)
    (transposed,) = jax.linear_transpose(linear, z)(residual)
    np.testing.assert_allclose(transposed, jax.jacrev(fn)(z, args).T @ residual, rtol=1e-14)
    np.testing.assert_allclose(jax.jacrev(dense)(z, args), jax.jacrev(fn)(z, args), rtol=1e-14)
