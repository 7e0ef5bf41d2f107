"""cellax's hand-written CPU kernels (C++ source beside this file), built on first use and called through XLA's FFI.

XLA:CPU runs small models as many small kernels, each a pass through memory and a dispatch; where a
hot path is dominated by that, one C++ kernel does the work in one call (docs/performance.md):

- ``mamba_step.cc``: the Mamba streaming step (:mod:`cellax.deploy.fused_mamba`);
- ``attention.cc``: causal self-attention's forward and backward for training
  (:mod:`cellax.models.attention_kernel`);
- ``vec.h``: the vector helpers they share.

A kernel is compiled with the machine's C++ compiler (``$CXX``, else ``c++``; ``-O3 -march=native``)
against the FFI headers that jaxlib ships, and cached by source, flags, jaxlib version and CPU in
``$CELLAX_KERNEL_DIR`` (default ``~/.cache/cellax/kernels``). CPU only; ONNX and StableHLO files cannot
carry a custom call, so exports keep the XLA forms.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax

SOURCES = Path(__file__).parent
FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-std=c++17", "-shared", "-fPIC")
NAMES = {"mamba_step": "the fused Mamba step", "attention": "the attention kernel"}


class KernelUnavailable(RuntimeError):
    """A kernel cannot be built or run here (no C++ compiler, a failed build, not a CPU)."""


def _cpu_signature() -> str:
    """What ``-march=native`` compiles for: the CPU's model and flags (a shared cache must not mix CPUs)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    lines = [line for line in text.splitlines() if line.startswith(("model name", "flags"))]
    return "\n".join(sorted(set(lines)))


def kernel_dir() -> Path:
    return Path(os.environ.get("CELLAX_KERNEL_DIR") or Path.home() / ".cache" / "cellax" / "kernels")


def source(name: str) -> Path:
    return SOURCES / f"{name}.cc"


def build(name: str) -> Path:
    """Kernel ``name``'s shared library (``<name>.cc`` beside this module), built into the cache if not there yet.

    Built into a temporary file beside its final name and renamed, so a crash or two
    processes building at once never leave a half-written library under the final name.
    """
    what = NAMES.get(name, name)
    compiler = os.environ.get("CXX") or "c++"
    if shutil.which(compiler) is None:
        raise KernelUnavailable(
            f"{what} needs a C++ compiler ({compiler!r} not found; install g++, e.g. `apt-get install g++`, "
            "or set $CXX); the XLA form needs none")
    code = source(name)
    key = hashlib.sha256("\n".join([
        code.read_text(), *(h.read_text() for h in sorted(SOURCES.glob("*.h"))), compiler, *FLAGS, jax.lib.__version__, _cpu_signature(),
    ]).encode()).hexdigest()[:16]
    target = kernel_dir() / f"{name}-{key}.so"
    if target.exists():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(prefix=f".{name}-", suffix=".so", dir=target.parent)
    except OSError as err:
        raise KernelUnavailable(f"no writable kernel cache at {target.parent} ({err.strerror}); "
                                "set $CELLAX_KERNEL_DIR to a writable folder") from None
    os.close(handle)
    try:
        done = subprocess.run([compiler, *FLAGS, f"-I{jax.ffi.include_dir()}", f"-I{SOURCES}", str(code), "-o", partial],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise KernelUnavailable(f"building {what} failed ({compiler}):\n{done.stderr[-4000:]}")
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return target


@functools.cache
def register(name: str, symbols: tuple[tuple[str, str], ...]) -> None:
    """Build (or find) kernel ``name`` and register its ``(symbol, target)`` handlers with XLA, once per process."""
    if jax.default_backend() != "cpu":
        raise KernelUnavailable(f"{NAMES.get(name, name)} is a CPU kernel; the default backend is {jax.default_backend()}")
    library = ctypes.cdll.LoadLibrary(str(build(name)))
    for symbol, target in symbols:
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")


@functools.cache
def available(name: str, symbols: tuple[tuple[str, str], ...]) -> bool:
    """Whether kernel ``name`` builds and registers here (a CPU backend and a C++ compiler); tried once per process,
    so an ``auto`` choice costs one attempt, not one per trace."""
    try:
        register(name, symbols)
    except KernelUnavailable:
        return False
    return True

