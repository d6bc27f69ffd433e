"""Restart from a checkpoint reproduces the uninterrupted run bitwise.

The run: the heat equation u_t = kappa (u_xx + u_yy) on the periodic unit square (kappa = 0.05, 16 x 16 cells), PETSc
TS RK4 with a fixed step of 2e-3, integrated over windows of 0.02 with additive model-error noise (sigma = 1e-3,
drawn from a NumPy Generator) after each window, as an ensemble member's forecast would be. Continuing exactly needs
the state, the time, the TS step size and step number, and the generator's state: all go through the checkpoint.
"""

import numpy as np
import pytest
from petsc4py import PETSc

from twin.core.grid import Grid
from twin.io.checkpoint import checkpoint_path, read_checkpoint, write_checkpoint

KAPPA, DT, WINDOW, SIGMA = 0.05, 2e-3, 0.02, 1e-3

# Debian h5py 3.7 calls np.product, deprecated in NumPy 1.25 (harmless)
pytestmark = pytest.mark.filterwarnings("ignore:`product` is deprecated:DeprecationWarning")


class HeatRun:
    def __init__(self, comm, n=16, seed=2024):
        self.comm = comm
        self.grid = Grid(comm, (n, n), ((0.0, 1.0), (0.0, 1.0)), periodic=True, name="heat")
        self.u = self.grid.from_function(lambda X, Y: np.sin(2 * np.pi * X) * np.cos(2 * np.pi * Y) + 0.3)
        self.local = self.grid.create_local()
        self.f = self.grid.create_global()
        ts = PETSc.TS().create(comm=self.grid.da.getComm())
        ts.setOptionsPrefix("iotest_heat_")
        ts.setType(PETSc.TS.Type.RK)
        ts.setRKType("4")
        ts.setRHSFunction(self._rhs, self.f)
        ts.setTimeStep(DT)
        ts.setMaxSteps(10**6)
        ts.setExactFinalTime(PETSc.TS.ExactFinalTime.MATCHSTEP)
        ts.setFromOptions()
        self.ts = ts
        self.t, self.window = 0.0, 0
        self.rng = np.random.default_rng(seed)

    def _rhs(self, ts, t, u, f):
        g = self.grid
        g.global_to_local(u, self.local)
        a = g.ghosted_array(self.local)
        hx, hy = g.spacing
        c = a[1:-1, 1:-1]
        lap = (a[1:-1, 2:] - 2 * c + a[1:-1, :-2]) / hx**2 + (a[2:, 1:-1] - 2 * c + a[:-2, 1:-1]) / hy**2
        g.owned_array(f)[...] = KAPPA * lap

    def advance_window(self):
        self.ts.setTime(self.t)
        self.ts.setMaxTime(self.t + WINDOW)
        self.ts.solve(self.u)
        self.t = self.ts.getTime()
        noise = SIGMA * self.rng.standard_normal(self.grid.shape[::-1])  # whole field: same on any decomposition
        self.grid.owned_array(self.u)[...] += noise[self.grid.owned_slices]
        self.window += 1

    def save(self, path):
        return write_checkpoint(path, self.comm, cycle=self.window, time=self.t, fields={"u": (self.grid, self.u)},
                                rng={"model_error": self.rng},
                                meta={"dt": self.ts.getTimeStep(), "step": self.ts.getStepNumber()})

    def restore(self, path, restore_rng=True):
        data = read_checkpoint(path, self.comm, into={"u": (self.grid, self.u)})
        self.t, self.window = data.time, data.cycle
        if restore_rng:
            self.rng = data.rng["model_error"]
        self.ts.setTimeStep(data.meta["dt"])
        self.ts.setStepNumber(data.meta["step"])

    def field(self):
        return self.grid.allgather(self.u)

    def destroy(self):
        for obj in (self.ts, self.u, self.local, self.f):
            obj.destroy()
        self.grid.destroy()


def run_restart_comparison(comm, run_dir, n_windows=6, stop_at=3):
    """(uninterrupted field, restarted field, restarted-without-RNG field, times) after ``n_windows``."""
    full = HeatRun(comm)
    path = checkpoint_path(run_dir, stop_at)
    for w in range(n_windows):
        full.advance_window()
        if full.window == stop_at:
            full.save(path)
    restarted, no_rng = HeatRun(comm, seed=99), HeatRun(comm, seed=99)
    restarted.restore(path)
    no_rng.restore(path, restore_rng=False)
    for run in (restarted, no_rng):
        while run.window < n_windows:
            run.advance_window()
    out = (full.field(), restarted.field(), no_rng.field(), (full.t, restarted.t))
    for run in (full, restarted, no_rng):
        run.destroy()
    return out


def test_restart_is_bitwise_identical(tmp_path, comm_self):
    (tmp_path / "checkpoint").mkdir()
    full, restarted, no_rng, (t_full, t_restart) = run_restart_comparison(comm_self, tmp_path)
    assert t_full == t_restart and abs(t_full - 6 * WINDOW) < 1e-12
    assert full.tobytes() == restarted.tobytes()
    # the comparison is sharp: without the generator state the restart differs at the noise level
    assert 1e-4 < np.abs(full - no_rng).max() < 1e-2
    assert np.abs(full - 0.3).max() > 0.1  # the field did not just decay to its mean
