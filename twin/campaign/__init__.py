"""Campaigns of assimilation cycles on files: the steps shared by online mode (one MPI job) and workflow mode
(Parsl tasks), experiments expanded from a matrix of settings, and the status of a run directory.

=============================  ==================================================================================
:func:`init_experiment`        nature run, synthetic observations and the prior ensemble (checkpoint 0)
:func:`forecast_member`        one member over one cycle, on a communicator, to its forecast file
:func:`analyse`                the ensemble analysis of a cycle: checkpoint ``k + 1`` and a diagnostics record
:func:`finalize`               ``posterior.nc`` and ``forecast.nc``
:func:`status`                 per experiment: cycles done, running, failed (files only)
:func:`run_online`             every experiment inside one MPI job, members over sub-communicators
=============================  ==================================================================================

Importing this package imports neither MPI nor PETSc (the Parsl process imports :mod:`twin.campaign.layout`,
:mod:`twin.campaign.status` and :mod:`twin.campaign.experiments`); the step functions are loaded on first use.
"""

from __future__ import annotations

import importlib

_LAZY = {"init_experiment": "steps", "forecast_member": "steps", "analyse": "steps", "setup": "experiment",
         "finalize": "finalize", "status": "status", "run_online": "online", "expand": "experiments"}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'twin.campaign' has no attribute {name!r}")
    return getattr(importlib.import_module(f"twin.campaign.{module}"), name)
