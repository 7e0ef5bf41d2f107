"""GRU baseline: its forward is its streaming step scanned (the shared contract is in ``test_contract.py``)."""

import equinox as eqx
import jax

from cellax.models import GRU, GRUConfig

from .checks import N_FEATURES, N_OUTPUTS


def test_structure():
    model = GRU(GRUConfig(width=32, n_layers=2), N_FEATURES, N_OUTPUTS, key=jax.random.key(0))
    assert all(isinstance(cell, eqx.nn.GRUCell) for cell in model.cells) and len(model.cells) == 2
    assert model.init_state().shape == (2, 32)
