"""What this installation runs on: versions of twin and its stack, MPI, parallel HDF5, cores (``twin info``)."""

from __future__ import annotations

import os
import platform


def stack_info() -> dict[str, object]:
    """Versions and capabilities of the numerical stack as loaded in *this* process (collective-free)."""
    import h5py
    import netCDF4
    import numpy
    from mpi4py import MPI
    from petsc4py import PETSc

    import twin

    try:
        import parsl

        parsl_version = parsl.__version__
    except ImportError:  # parsl is needed only for campaigns through workflows/
        parsl_version = "not installed"
    major, minor, sub = PETSc.Sys.getVersion()
    mpi_lib = MPI.Get_library_version().replace("\x00", "").strip().splitlines()[0]  # Open MPI ends it with a NUL
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return {
        "twin": twin.__version__,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "petsc": f"{major}.{minor}.{sub}",
        "petsc4py": __import__("petsc4py").__version__,
        "petsc_scalar": str(PETSc.ScalarType.__name__),
        "mpi": mpi_lib,
        "mpi_standard": "{}.{}".format(*MPI.Get_version()),
        "mpi4py": __import__("mpi4py").__version__,
        "ranks": MPI.COMM_WORLD.Get_size(),
        "hdf5": h5py.version.hdf5_version,
        "h5py": h5py.__version__,
        "hdf5_parallel": bool(h5py.get_config().mpi),
        "netcdf": netCDF4.__netcdf4libversion__,
        "netCDF4": netCDF4.__version__,
        "parsl": parsl_version,
        "cores": cores,
        "host": platform.node(),
        "kinds": _kinds(),
    }


def _kinds() -> str:
    """The installed twin kinds (entry points ``twin.kinds``) with their model types and the distribution each comes
    from (``twin`` for the built-in ones, a plugin package's name and version otherwise), or why they cannot load."""
    from twin.core.errors import ConfigError
    from twin.core.kinds import kinds

    try:
        found = kinds()
    except ConfigError as exc:
        return f"cannot load: {exc}"
    origin = kind_origins()
    return ", ".join(f"{k.name} ({' '.join(m.name for m in k.model_types()) or 'no models'}; "
                     f"{origin.get(k.name, 'unknown package')})" for k in found.values())


def kind_origins() -> dict[str, str]:
    """``{kind: "distribution version"}`` for every entry point of group ``twin.kinds``."""
    from importlib import metadata

    from twin.core.kinds import GROUP

    out = {}
    for ep in metadata.entry_points(group=GROUP):
        dist = getattr(ep, "dist", None)
        out[ep.name] = f"{dist.name} {dist.version}" if dist is not None else "unknown package"
    return out


def format_info(info: dict[str, object]) -> str:
    width = max(len(k) for k in info)
    lines = [f"{k:<{width}}  {v}" for k, v in info.items()]
    if not info["hdf5_parallel"]:
        lines.append("note: h5py is serial in this process; Debian's MPI build of h5py loads only under mpiexec "
                     "(or with H5PY_ALWAYS_USE_MPI=1): try 'mpiexec -n 2 twin info'")
    return "\n".join(lines)
