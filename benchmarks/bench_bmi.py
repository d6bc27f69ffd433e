"""Overhead of the BMI adapter (``type: bmi``, twin/kinds/bmi/adapter.py) per member forecast, against driving the BMI
model directly the way an ensemble code would (one instance per member: ``set_value``, ``update_until``,
``get_value``).

Model: landlab's LinearDiffuser through landlab's BMI wrapper on a 64 x 64 raster; 10 members, windows of 5 steps,
the first cycle (which creates the instances) not timed. Goal (issue 19): under 5 % overhead.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.harness import emit

CONFIG = """\
linear_diffuser:
  linear_diffusivity: 0.5
clock: {start: 0.0, stop: 1.0e9, step: 10.0, units: year}
grid:
  RasterModelGrid:
    - [64, 64]
    - xy_spacing: [10.0, 10.0]
    - fields:
        node:
          topographic__elevation:
            sine:
              - {amplitude: 5.0, wavelength: 300.0, a: 1.0, b: 0.5}
"""
MEMBERS, STEPS, CYCLES = 10, 5, 11
VAR = "topographic__elevation"


def direct(config: str, states: list[np.ndarray]) -> float:
    from landlab.bmi.components import LinearDiffuserBMI

    models = []
    for _ in states:
        m = LinearDiffuserBMI()
        m.initialize(config)
        models.append(m)
    out = np.empty_like(states[0])
    elapsed = 0.0
    for k in range(CYCLES):
        start = time.perf_counter()
        for m, s in zip(models, states):
            m.set_value(VAR, s)
            m.update_until((k + 1) * STEPS * 10.0)
            m.get_value(VAR, out)
            s[:] = out
        if k:
            elapsed += time.perf_counter() - start
    return elapsed / ((CYCLES - 1) * len(states))


def adapter(config: str, states: list[np.ndarray]) -> float:
    from mpi4py import MPI

    from twin.kinds.bmi.adapter import BmiModel

    year = 365.25 * 86400
    model = BmiModel("hill", MPI.COMM_SELF, bmi_class="landlab.bmi.components:LinearDiffuserBMI",
                     config_file=config, state=[VAR], time_step=10 * year)
    vec = model.create_state()
    elapsed = 0.0
    for k in range(CYCLES):
        start = time.perf_counter()
        for s in states:
            # one rank: the vector's array is the state in natural order (the copies in and out, as direct() does)
            vec.getArray()[...] = s
            model.advance(vec, k * STEPS * 10 * year, (k + 1) * STEPS * 10 * year)
            s[:] = vec.getArray(readonly=True)
        if k:
            elapsed += time.perf_counter() - start
    vec.destroy()
    model.destroy()
    return elapsed / ((CYCLES - 1) * len(states))


def main() -> None:
    from twin.core.petsc import init_petsc

    init_petsc([])
    with tempfile.TemporaryDirectory() as tmp:
        config = str(Path(tmp) / "diffuser.yaml")
        Path(config).write_text(CONFIG)
        gen = np.random.default_rng(0)
        base = [gen.standard_normal(64 * 64) for _ in range(MEMBERS)]
        # alternated, best of 7 each: the machine may be shared
        runs = [(direct(config, [b.copy() for b in base]), adapter(config, [b.copy() for b in base]))
                for _ in range(7)]
        best_d, best_a = min(r[0] for r in runs), min(r[1] for r in runs)
    context = dict(grid="64x64", members=MEMBERS, steps=STEPS)
    emit("bmi", "direct BMI member forecast", best_d * 1e3, "ms", **context)
    emit("bmi", "adapter member forecast", best_a * 1e3, "ms", **context)
    emit("bmi", "adapter overhead", 100 * (best_a / best_d - 1), "%", goal="under 5 %", **context)


if __name__ == "__main__":
    main()
