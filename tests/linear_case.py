"""The small linear campaign several tests run: advection-diffusion of a tracer on 8 cells (PETSc TS), three point
observations, an ETKF; each test states what it changes (name, start date, ensemble size, cycles, solver, what
follows the assimilation section)."""

from __future__ import annotations


def linear_campaign(name: str, *, start: str = "0.0", N: int = 6, cycles: int = 4, solver: str = "",
                    tail: str = "") -> str:
    """The campaign text; ``solver`` is a YAML mapping for the model's PETSc options, ``tail`` the YAML after the
    assimilation section (a decision, resources)."""
    solver_line = f"    solver: {solver}\n" if solver else ""
    return f"""\
schema_version: 1
campaign: {{name: {name}, seed: 5}}
models:
  tracer:
    type: linear_advection_diffusion
    n: 8
    dt: {{value: 0.01, units: s}}
    velocity: {{value: 0.5, units: m/s}}
    diffusivity: {{value: 0.01, units: m^2/s}}
    initial_condition: {{shape: gaussian, amplitude: 1.0, width: {{value: 0.2, units: m}}}}
{solver_line}timeline: {{start: {start}, end: 1.0, units: s}}
assimilation:
  method: etkf
  N: {N}
  seed: 2
  background_std: 0.3
  schedule: {{every: 5, cycles: {cycles}}}
  observations: [{{type: points, points: [[0.1], [0.45], [0.8]], error_std: 0.1}}]
{tail}"""
