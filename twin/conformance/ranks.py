"""The child process of the 1-vs-2-ranks check: ``mpiexec -n N python -m twin.conformance.ranks SPEC.json``.

Builds the subject of ``SPEC.json`` (:func:`twin.conformance.subject.from_spec`) on ``COMM_WORLD``, advances its
initial state from ``t0`` to ``t2`` and writes the whole state (natural order) to the ``.npy`` file ``out`` from rank 0.
An error is one ``error:`` line on rank 0's standard error and exit code 1.
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    from twin.core.petsc import init_petsc

    init_petsc([])
    import numpy as np
    from mpi4py import MPI

    from twin.conformance.subject import from_spec
    from twin.core.errors import TwinError

    comm = MPI.COMM_WORLD
    spec = json.loads(open(argv[0]).read())
    try:
        model = from_spec(spec["subject"]).build(comm)
        try:
            x = model.initial_state()
            model.advance(x, float(spec["t0"]), float(spec["t2"]))
            whole = model.grid.gather(x)
            x.destroy()
        finally:
            model.destroy()
    except TwinError as exc:
        if comm.Get_rank() == 0:
            print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    if comm.Get_rank() == 0:
        np.save(spec["out"], np.asarray(whole, dtype=float).ravel())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
