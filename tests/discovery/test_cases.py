"""Cases a–c on real cellax simulations at 1 % noise, with the issue's tolerances."""

import numpy as np

from cellax.discovery.cases import circuit, particle, thermal
from cellax.discovery.noise import add_noise
from cellax.discovery.sindy import SindyConfig, discover


def test_thermal_two_node_odes_at_one_percent_noise():
    signals, truth = thermal.simulate_thermal(n_samples=2400)
    noisy = add_noise(signals, thermal.MEASURED, 0.01, seed=1)
    equations = discover(noisy, thermal.STATES, thermal.thermal_library(), noisy["time_s"], SindyConfig())
    result = thermal.score(equations, truth)
    assert result["support_recovered"], result["found"]
    assert result["max_error_pct"] < 1.0, result["coefficient_error_pct"]


def test_particle_diffusivity_within_one_percent_at_one_and_five_percent_noise_and_polynomial_d_of_c():
    u, nodes, volumes, radius, diffusivity = particle.simulate_particle(n_samples=721, seed=particle.PROFILE_SEEDS)
    truth = float(diffusivity(np.asarray(0.5)))
    for level in (0.01, 0.05):
        noisy = add_noise({"c": u}, ["c"], level, seed=0)["c"]
        result = particle.discover_diffusion(noisy, nodes, volumes, radius, 10.0)
        assert result["spherical"], (level, result["structure"], result.get("pair_ratio"))
        assert abs(result["diffusivity_m2_s"] / truth - 1) < 0.01, level
        assert abs(result["noise_std"] / (level * np.std(u)) - 1) < 0.1

    def d_of_u(x):
        return truth * (0.4 + 1.2 * x)

    u2, *_ = particle.simulate_particle(d_of_u, n_samples=721)
    noisy2 = add_noise({"c": u2}, ["c"], 0.01, seed=0)["c"]
    found = particle.discover_diffusivity(noisy2, nodes, volumes, radius, 10.0)
    grid = np.linspace(u2.min(), u2.max(), 50)
    fitted = np.polyval(found["polynomial_m2_s"][::-1], grid)
    assert len(found["equation"].terms()) <= 4
    assert np.max(np.abs(fitted / d_of_u(grid) - 1)) < 0.05


def test_circuit_pairs_and_values_at_one_percent_noise_and_pair_count_at_five():
    signals = circuit.simulate_circuit(n_samples=2400)
    noisy = add_noise(signals, ["I", "V"], 0.01, seed=1)
    result = circuit.score(circuit.discover_circuit(noisy))
    assert result["support_recovered"], result
    assert result["max_error_pct"] < 1.0, result
    found = circuit.discover_circuit(add_noise(signals, ["I", "V"], 0.05, seed=1))
    assert found["n_pairs"] == 2, found["front"]
    assert not found["front"][2]["resolved"], found["front"]
