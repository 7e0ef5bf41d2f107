"""Building cellax's CPU kernels: once per source, compiler and CPU, crash-safe, with errors that say what to do."""

import os

import pytest

from cellax import kernels
from cellax.kernels import KernelUnavailable, build


@pytest.mark.parametrize("name", ["mamba_step", "attention"])
def test_each_kernel_is_built_once_and_cached(name, tmp_path, monkeypatch):
    monkeypatch.setenv("CELLAX_KERNEL_DIR", str(tmp_path))
    library = build(name)
    assert library.parent == tmp_path and library.exists()
    built = library.stat().st_mtime_ns
    assert build(name) == library and library.stat().st_mtime_ns == built
    assert [p.name for p in tmp_path.iterdir()] == [library.name]  # no partial files left


def test_an_unwritable_cache_names_the_variable_to_set(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CELLAX_KERNEL_DIR", str(blocker / "kernels"))
    with pytest.raises(KernelUnavailable, match="no writable kernel cache at .*CELLAX_KERNEL_DIR"):
        build("mamba_step")


def test_without_a_compiler_the_error_names_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLAX_KERNEL_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", "no-such-compiler")
    with pytest.raises(KernelUnavailable, match="needs a C.. compiler.*apt-get install g..") as info:
        build("mamba_step")
    assert "the XLA form needs none" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_build_reports_the_compiler_and_leaves_nothing(tmp_path, monkeypatch):
    source = tmp_path / "broken.cc"
    source.write_text("this is not C++\n")
    monkeypatch.setattr(kernels, "source", lambda name: source)
    monkeypatch.setenv("CELLAX_KERNEL_DIR", str(tmp_path / "kernels"))
    with pytest.raises(KernelUnavailable, match="building the fused Mamba step failed"):
        build("mamba_step")
    assert os.listdir(tmp_path / "kernels") == []
