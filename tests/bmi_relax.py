"""A small Basic Model Interface model for the tests of coupling and parameters of ``type: bmi``
(tests/unit/test_bmi.py, tests/integration/test_bmi_coupling.py): relaxation of a field toward a target field.

    du/dt = -rate (u - target) + source

on a ``uniform_rectilinear`` grid of ``shape`` (rows, columns) nodes, ``spacing`` and ``origin`` rows first; ``rate``
(1/s) and ``source`` (K/s) are scalars on a ``scalar`` grid, ``target`` (K) a field on the grid of ``u``. Each step of
``dt`` is exact for inputs held constant over it:

    u <- target + s / k + (u - target - s / k) exp(-k dt)        (k = rate > 0, s = source)

``u`` starts at ``u0`` (a number, or a list of ``rows * columns`` values), ``target`` at ``target`` (a number).
Inputs: ``u``, ``target``, ``rate``, ``source``; outputs: ``u``, ``target``, ``rate``, ``flux`` (``rate (target -
u)``, K/s). Configured by a JSON file. A bmipy.Bmi subclass, importable as ``bmi_relax:RelaxBmi`` with the tests
directory on the path (pytest puts it there; a ``twin`` subprocess needs ``PYTHONPATH``).
"""

from __future__ import annotations

import json

import numpy as np
from bmipy import Bmi

#: variable -> (grid, units); grid 0 the field grid, grid 1 a scalar
VARIABLES = {"u": (0, "K"), "target": (0, "K"), "rate": (1, "1/s"), "source": (1, "K/s"), "flux": (0, "K/s")}
INPUTS = ("u", "target", "rate", "source")
OUTPUTS = ("u", "target", "rate", "flux")


class RelaxBmi(Bmi):
    """The model of the module docstring."""

    def initialize(self, config_file):
        with open(config_file) as f:
            cfg = json.load(f)
        self.shape = tuple(int(n) for n in cfg.get("shape", (3, 4)))
        self.spacing = tuple(float(h) for h in cfg.get("spacing", (1.0, 1.0)))
        self.origin = tuple(float(o) for o in cfg.get("origin", (0.0, 0.0)))
        self.dt = float(cfg.get("dt", 0.1))
        self.end = float(cfg.get("end", 1e6))
        self.t = 0.0
        n = int(np.prod(self.shape))
        self.values = {"u": np.broadcast_to(np.asarray(cfg.get("u0", 1.0), dtype=float), (n,)).copy(),
                       "target": np.full(n, float(cfg.get("target", 0.0))),
                       "rate": np.array([float(cfg.get("rate", 0.1))]),
                       "source": np.array([float(cfg.get("source", 0.0))])}
        #: number of update() calls (a test counts them)
        self.updates = 0

    def update(self):
        u, g = self.values["u"], self.values["target"]
        k, s = float(self.values["rate"][0]), float(self.values["source"][0])
        if k > 0:
            eq = g + s / k
            u[:] = eq + (u - eq) * np.exp(-k * self.dt)
        else:
            u += s * self.dt
        self.t += self.dt
        self.updates += 1

    def update_until(self, time):
        while self.t < time - 1e-9 * self.dt:
            self.update()

    def finalize(self):
        self.values = {}

    # -- information -----------------------------------------------------------------------------------------------
    def get_component_name(self):
        return "relaxation"

    def get_input_item_count(self):
        return len(INPUTS)

    def get_output_item_count(self):
        return len(OUTPUTS)

    def get_input_var_names(self):
        return INPUTS

    def get_output_var_names(self):
        return OUTPUTS

    def get_var_grid(self, name):
        return VARIABLES[name][0]

    def get_var_type(self, name):
        return "float64"

    def get_var_units(self, name):
        return VARIABLES[name][1]

    def get_var_itemsize(self, name):
        return 8

    def get_var_nbytes(self, name):
        return 8 * self.get_grid_size(VARIABLES[name][0])

    def get_var_location(self, name):
        return "node"

    # -- time ------------------------------------------------------------------------------------------------------
    def get_current_time(self):
        return self.t

    def get_start_time(self):
        return 0.0

    def get_end_time(self):
        return self.end

    def get_time_units(self):
        return "s"

    def get_time_step(self):
        return self.dt

    # -- values ----------------------------------------------------------------------------------------------------
    def _value(self, name):
        if name == "flux":
            return self.values["rate"][0] * (self.values["target"] - self.values["u"])
        return self.values[name]

    def get_value(self, name, dest):
        dest[:] = self._value(name)
        return dest

    def get_value_ptr(self, name):
        return self.values[name]

    def get_value_at_indices(self, name, dest, inds):
        dest[:] = self._value(name)[inds]
        return dest

    def set_value(self, name, src):
        if name not in INPUTS:
            raise KeyError(f"{name} is not an input")
        self.values[name][:] = np.asarray(src, dtype=float).ravel()

    def set_value_at_indices(self, name, inds, src):
        self.values[name][inds] = src

    # -- grids -----------------------------------------------------------------------------------------------------
    def get_grid_rank(self, grid):
        return 2 if grid == 0 else 0

    def get_grid_size(self, grid):
        return int(np.prod(self.shape)) if grid == 0 else 1

    def get_grid_type(self, grid):
        return "uniform_rectilinear" if grid == 0 else "scalar"

    def get_grid_shape(self, grid, shape):
        shape[:] = self.shape
        return shape

    def get_grid_spacing(self, grid, spacing):
        spacing[:] = self.spacing
        return spacing

    def get_grid_origin(self, grid, origin):
        origin[:] = self.origin
        return origin

    def get_grid_x(self, grid, x):
        raise NotImplementedError

    def get_grid_y(self, grid, y):
        raise NotImplementedError

    def get_grid_z(self, grid, z):
        raise NotImplementedError

    def get_grid_node_count(self, grid):
        return self.get_grid_size(grid)

    def get_grid_edge_count(self, grid):
        raise NotImplementedError

    def get_grid_face_count(self, grid):
        raise NotImplementedError

    def get_grid_edge_nodes(self, grid, edge_nodes):
        raise NotImplementedError

    def get_grid_face_edges(self, grid, face_edges):
        raise NotImplementedError

    def get_grid_face_nodes(self, grid, face_nodes):
        raise NotImplementedError

    def get_grid_nodes_per_face(self, grid, nodes_per_face):
        raise NotImplementedError
