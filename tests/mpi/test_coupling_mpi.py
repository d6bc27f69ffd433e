"""Partitioned heat coupling on 2 ranks agrees with the same run on 1 rank; restart on 2 ranks is bitwise."""

import json

import numpy as np
from mpi4py import MPI

from twin.kinds.heat.examples import gather_partitioned, partitioned_heat

WORLD = MPI.COMM_WORLD
GAUSSIAN = {"kind": "gaussian", "center": [0.4, 0.3], "width": 0.08}


def _run(comm, tag, t0=0.0, t1=0.3, scheme=None, restore=None):
    pair = partitioned_heat(comm, tag=tag, nx=16, ny=8, split=4, kappa=1.0, dt=0.1, initial=GAUSSIAN,
                            scheme=scheme or {"acceleration": {"kind": "iqn_ils", "reuse": 1}},
                            substeps={f"right{tag}": 2})
    x = pair.initial_state()
    if restore is not None:
        pair.restore_coupling_state(*restore[1:])
        x.getArray()[...] = restore[0]
    pair.advance(x, t0, t1)
    return pair, x


def test_two_ranks_match_one_rank():
    par, x = _run(WORLD, "_par")
    ser, y = _run(MPI.COMM_SELF, "_ser")
    np.testing.assert_allclose(gather_partitioned(par, x), gather_partitioned(ser, y), rtol=0, atol=1e-12)
    assert [d.iterations for d in par.diagnostics] == [d.iterations for d in ser.diagnostics]
    for obj in (par, ser, x, y):
        obj.destroy()


def test_restart_on_two_ranks_is_bitwise():
    ref, x = _run(WORLD, "_ref", t1=0.4)
    first, y = _run(WORLD, "_ref", t1=0.2)
    arrays, meta = first.coupling_state()
    saved = (y.getArray().copy(), {k: v.copy() for k, v in arrays.items()}, json.loads(json.dumps(meta)))
    second, z = _run(WORLD, "_ref", t0=0.2, t1=0.4, restore=saved)
    same = np.array_equal(x.getArray(), z.getArray())
    assert WORLD.allreduce(int(not same)) == 0
    for obj in (ref, first, second, x, y, z):
        obj.destroy()
