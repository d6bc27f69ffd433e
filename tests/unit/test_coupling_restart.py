"""Restarting a coupled run from its state vector and coupling state continues bit-for-bit."""

import json

import numpy as np
from mpi4py import MPI

from twin.kinds.heat.examples import partitioned_heat

COMM = MPI.COMM_SELF
GAUSSIAN = {"kind": "gaussian", "center": [0.4, 0.3], "width": 0.08}
DT = 0.05


def _pair(scheme):
    # multirate: the right component takes 3 sub-steps per window with linearly interpolated interface data
    return partitioned_heat(COMM, tag="_rst", nx=12, ny=6, split=4, kappa=1.0, dt=DT, initial=GAUSSIAN,
                            scheme=scheme, substeps={"right_rst": 3})


def _restart_matches(scheme):
    ref = _pair(scheme)
    x = ref.initial_state()
    ref.advance(x, 0.0, 6 * DT)
    expected = x.getArray().copy()
    its = [d.iterations for d in ref.diagnostics]
    ref.destroy()
    x.destroy()

    first = _pair(scheme)
    x = first.initial_state()
    first.advance(x, 0.0, 3 * DT)
    saved_state = x.getArray().copy()
    arrays, meta = first.coupling_state()
    arrays = {k: np.array(v, copy=True) for k, v in arrays.items()}
    meta = json.loads(json.dumps(meta))          # what a checkpoint file keeps
    its_first = [d.iterations for d in first.diagnostics]
    first.destroy()
    x.destroy()

    second = _pair(scheme)
    y = second.create_state()
    y.getArray()[...] = saved_state
    second.restore_coupling_state(arrays, meta)
    second.advance(y, 3 * DT, 6 * DT)
    got = y.getArray().copy()
    its_second = [d.iterations for d in second.diagnostics]
    second.destroy()
    y.destroy()
    return expected, got, its, its_first + its_second, arrays


def test_restart_with_iqn_ils_reuse_is_bitwise():
    scheme = {"acceleration": {"kind": "iqn_ils", "relaxation": 0.5, "reuse": 2}}
    expected, got, its, its_restart, arrays = _restart_matches(scheme)
    assert np.array_equal(expected, got)
    assert its == its_restart
    # the checkpoint really carried quasi-Newton history from past windows
    assert arrays["acceleration/V/left_rst.T_in"].shape[0] > 0


def test_restart_with_aitken_is_bitwise():
    expected, got, its, its_restart, arrays = _restart_matches({"acceleration": {"kind": "aitken"}})
    assert np.array_equal(expected, got)
    assert its == its_restart


def test_restart_without_coupling_state_differs():
    # the coupling state matters: restarting from the state vector alone does not reproduce the run
    scheme = {"acceleration": {"kind": "iqn_ils", "relaxation": 0.5, "reuse": 2}}
    ref = _pair(scheme)
    x = ref.initial_state()
    ref.advance(x, 0.0, 6 * DT)
    first = _pair(scheme)
    y = first.initial_state()
    first.advance(y, 0.0, 3 * DT)
    second = _pair(scheme)
    z = second.create_state()
    y.copy(z)
    second.advance(z, 3 * DT, 6 * DT)
    assert not np.array_equal(x.getArray(), z.getArray())
    for obj in (ref, first, second, x, y, z):
        obj.destroy()
