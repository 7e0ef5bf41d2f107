"""The layering of docs/architecture.md holds: which package may import which."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cellax"
APPLICATIONS = {"hybrid", "discovery", "hpo", "deploy"}
FORBIDDEN = {  # layer -> layers it must not import
    "kernels": {"physics", "data", "train", "rl", "models", "workflows", *APPLICATIONS},
    "physics": {"data", "train", "rl", "models", "workflows", *APPLICATIONS},
    "data": {"train", "rl", "models", "workflows", *APPLICATIONS},
    "models": {"data", "physics", "train", "rl", "workflows", *APPLICATIONS},
    "train": {"rl", "workflows", *APPLICATIONS},
    "rl": {"data", "train", "models", "workflows", *APPLICATIONS},
    "workflows": APPLICATIONS,
    **{app: APPLICATIONS - {app} for app in APPLICATIONS},
}


def _imported_layers(path: Path) -> set[str]:
    layers = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        layers.update(n.split(".")[1] for n in names if n.startswith("cellax.") and n.count(".") >= 1)
    return layers


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_layer_imports_a_forbidden_one(layer):
    bad = {str(f.relative_to(PACKAGE)): sorted(_imported_layers(f) & FORBIDDEN[layer])
           for f in (PACKAGE / layer).rglob("*.py")}
    assert {f: b for f, b in bad.items() if b} == {}


def test_train_uses_physics_only_for_its_physics_informed_terms():
    users = sorted(str(f.relative_to(PACKAGE)) for f in (PACKAGE / "train").rglob("*.py") if "physics" in _imported_layers(f))
    assert users == ["train/physics.py"]


def test_the_root_modules_import_no_layer():
    layers = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    for path in PACKAGE.glob("*.py"):
        if path.name != "cli.py":
            assert not _imported_layers(path) & layers, path.name


def test_cell_models_implement_the_contract():
    import equinox as eqx

    from cellax.physics.model import AbstractCellModel
    from cellax.physics.spm import SPM
    from cellax.physics.spme import SPMe

    assert isinstance(SPM(4), AbstractCellModel) and isinstance(SPMe(4, (3, 3, 3)), AbstractCellModel)

    class Incomplete(AbstractCellModel):
        def initial_state(self, params, soc, temp_k):
            return None

    with pytest.raises(TypeError):
        Incomplete()
    assert issubclass(AbstractCellModel, eqx.Module)
