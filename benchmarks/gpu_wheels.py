"""Make the wheels that ``benchmarks/gpu.py`` needs on a GPU machine without network access.

A lent GPU machine starts bare apart from its image (JAX with CUDA, PyTorch, NumPy, ...)
and reaches no package index; what else ``gpu.py`` imports travels with the working tree
as wheels (``benchmarks/gpu_requirements.txt``), 64 MiB at most together with the tree.
This downloads them for the machine's Python into ``.whl/`` (ignored by git) and trims
CasADi, whose wheel alone is 89 MB: PyBaMM needs its core library and a few plugins
(interpolants, root-finders, integrators, linear solvers, the importer), not the
optimisation solvers, and a wheel cannot hold the symbolic links that its copies stand in
for. ``benchmarks/gpu_device.sh`` installs the wheels there and runs ``gpu.py``.

Run: ``python benchmarks/gpu_wheels.py`` (then see docs/performance.md for the device call).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT_MIB = 64  # the working tree and everything carried, per call
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
# the CasADi plugin kinds PyBaMM loads (interpolant, rootfinder, integrator, external) and what they load in turn
CASADI_PLUGIN_KINDS = ("interpolant", "rootfinder", "integrator", "linsol", "importer", "filesystem", "archiver",
                       "xmlfile", "sundials")
CASADI_OWN = re.compile(r"^libcasadi(_\w+)?\.so")  # not libcasadi-tp-*: those are third-party solvers
SYSTEM_LIBRARY = re.compile(r"^(libc|libm|libdl|libpthread|librt|libgcc_s|libstdc\+\+|ld-linux-x86-64)\.so")


def needed_libraries(path: Path) -> list[str]:
    """The shared libraries an ELF file names as NEEDED (``readelf -d``, from binutils)."""
    out = subprocess.run(["readelf", "-d", str(path)], check=True, capture_output=True, text=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def casadi_keep(package: Path) -> set[str]:
    """The files of an unpacked ``casadi/`` that PyBaMM needs: Python, the extension, core and chosen plugins."""
    names = {p.name for p in package.iterdir() if p.is_file()}
    keep = {n for n in names if n.endswith(".py")} | {"_casadi.so"}
    plugin = re.compile(rf"^libcasadi_({'|'.join(CASADI_PLUGIN_KINDS)})_\w+\.so$")
    keep |= {n for n in names if plugin.match(n)}
    pending = list(keep)
    while pending:  # add what the kept files load, as long as it is CasADi's own; drop plugins that need more
        name = pending.pop()
        if not name.endswith(".so") and ".so." not in name:
            continue
        for library in needed_libraries(package / name):
            if SYSTEM_LIBRARY.match(library) or library in keep:
                continue
            if CASADI_OWN.match(library) and library in names:
                keep.add(library)
                pending.append(library)
            else:
                keep.discard(name)
                break
    return keep


def write_wheel(source: Path, target: Path) -> None:
    """Zip an unpacked wheel tree into ``target`` with a RECORD that matches its files."""
    records = []
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as wheel:
        files = sorted(p for p in source.rglob("*") if p.is_file() and p.name != "RECORD")
        for path in files:
            data = path.read_bytes()
            arcname = path.relative_to(source).as_posix()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            records.append(f"{arcname},sha256={digest},{len(data)}")
            wheel.write(path, arcname)
        record = next(source.glob("*.dist-info")).relative_to(source).as_posix() + "/RECORD"
        wheel.writestr(record, "\n".join([*records, f"{record},,"]) + "\n")


def trim_casadi(wheel: Path) -> Path:
    """Replace CasADi's wheel by one holding only :func:`casadi_keep`'s files; returns its path."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp)
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(tree)
        package = tree / "casadi"
        keep = casadi_keep(package)
        for path in list(package.iterdir()):
            if path.is_dir():
                shutil.rmtree(path)
            elif path.name not in keep:
                path.unlink()
        trimmed = wheel.with_suffix(".trimmed")
        write_wheel(tree, trimmed)
    trimmed.replace(wheel)
    return wheel


def tracked_tree_bytes() -> int:
    """Bytes of the files git tracks: what travels besides the wheels."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout.split(b"\0")
    return sum((ROOT / f.decode()).stat().st_size for f in files if f and (ROOT / f.decode()).is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requirements", type=Path, default=ROOT / "benchmarks" / "gpu_requirements.txt")
    parser.add_argument("--dest", type=Path, default=ROOT / ".whl")
    parser.add_argument("--python-version", default="3.12", help="the GPU machine's Python (3.12 in its image)")
    parser.add_argument("--replace", action="store_true", help="remove the *.whl files already in --dest first")
    args = parser.parse_args()

    existing = sorted(args.dest.glob("*.whl")) if args.dest.exists() else []
    if existing and not args.replace:
        sys.exit(f"{args.dest} already holds {len(existing)} wheels; pass --replace to make them again")
    with tempfile.TemporaryDirectory() as tmp:
        staging = Path(tmp)
        platforms = [flag for p in PLATFORMS for flag in ("--platform", p)]
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "--python-version", args.python_version, "--implementation", "cp", *platforms,
                        "--dest", str(staging), "-r", str(args.requirements)], check=True)
        for wheel in staging.glob("casadi-*.whl"):
            before = wheel.stat().st_size
            trim_casadi(wheel)
            print(f"trimmed {wheel.name}: {before / 2**20:.1f} -> {wheel.stat().st_size / 2**20:.1f} MiB")
        for old in existing:
            old.unlink()
        args.dest.mkdir(parents=True, exist_ok=True)
        for wheel in staging.glob("*.whl"):
            shutil.move(wheel, args.dest / wheel.name)

    wheels_mib = sum(w.stat().st_size for w in args.dest.glob("*.whl")) / 2**20
    tree_mib = tracked_tree_bytes() / 2**20
    print(f"{len(list(args.dest.glob('*.whl')))} wheels, {wheels_mib:.1f} MiB, in {args.dest}; "
          f"with the tracked tree ({tree_mib:.1f} MiB): {wheels_mib + tree_mib:.1f} of {LIMIT_MIB} MiB")
    if wheels_mib + tree_mib > LIMIT_MIB:
        sys.exit("over the device's limit on what travels: carry fewer wheels")
    print("device call: carry ['.whl'], command 'bash benchmarks/gpu_device.sh' (docs/performance.md)")


if __name__ == "__main__":
    main()
