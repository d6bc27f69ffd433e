"""Guardrails in a file-based campaign: the per-cycle checks of :mod:`twin.decision.guardrails` as the screen of the
analysis of :func:`twin.campaign.steps.analyse` (:class:`twin.assimilation.analysis.EnsembleAnalysis`), with their
state carried from checkpoint to checkpoint.

When the campaign has ``decision.guardrails``, every analysis

1. rebuilds the :class:`~twin.decision.guardrails.Guardrails` of the experiment from the checkpoint it starts from
   (``meta["guardrails"]``: per-sensor CUSUM sums ``S+``/``S-``, alarmed and active sensors, the sliding windows of
   the spread/skill and rank-histogram checks, every flag so far). Each cycle's rank histogram has as many bins as
   that cycle had live members plus one, so after a member is dropped the window holds histograms of two sizes;
   :func:`~twin.decision.guardrails.window_rank_flatness` tests them together;
2. runs the checks on the observed forecast ensemble ``Y`` (after prior inflation) against ``y`` and ``r``, with the
   truth of the twin experiment for the state-space spread/skill;
3. assimilates the *active* sensors only (policy ``exclude`` removes an alarmed sensor from this and every later
   analysis; ``flag`` only records);
4. stores the new state in the next checkpoint's meta, adds the statistics to the cycle's diagnostics record (the
   variables of :data:`~twin.decision.guardrails.GUARDRAIL_DIAGNOSTICS` in ``diagnostics.nc``) and rewrites
   ``<experiment>/flags.jsonl`` from the flags in the checkpoint (read by ``twin report``).

Because the state lives in the checkpoint, and the rank-histogram perturbations come from the campaign's random stream
of purpose GUARDRAILS (:mod:`twin.core.streams`) and the cycle index, a resumed campaign raises exactly the flags of an
uninterrupted one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from twin.core.streams import Purpose


def settings(cfg):
    """The :class:`~twin.decision.guardrails.GuardrailSettings` of ``decision.guardrails``, or ``None``."""
    from twin.decision.guardrails import GuardrailSettings

    decision = getattr(cfg, "decision", None)
    if decision is None or decision.guardrails is None:
        return None
    return GuardrailSettings.from_config(decision.guardrails)


def restore(cfg, n_obs: int, state: dict[str, Any] | None, cycle: int):
    """The experiment's guardrails at the start of ``cycle`` from the checkpoint meta ``state`` (``None``: fresh),
    or ``None`` when the campaign has no guardrails."""
    from twin.campaign import context as ctx
    from twin.decision.guardrails import Guardrails

    st = settings(cfg)
    if st is None:
        return None
    g = Guardrails(n_obs, st)
    rng = ctx.rng(cfg, Purpose.GUARDRAILS, cycle)
    g.reseed(rng)
    if state:
        try:
            g.restore(state)
        except ValueError as exc:
            from twin.core.errors import WorkflowError

            raise WorkflowError(str(exc)) from None
    return g


def snapshot(g) -> dict[str, Any]:
    """The guardrails' state as JSON-ready data for the checkpoint meta (restored by :func:`restore`)."""
    return g.state()


def write_flags(exp_dir, state: dict[str, Any] | None) -> Path | None:
    """Rewrite ``<exp_dir>/flags.jsonl`` from a checkpoint's guardrail state (one process); owner-only in the
    owner-only directory of a sensitive run."""
    import json

    from twin.decision.records import FLAGS_FILE
    from twin.io.atomic import is_private_directory, write_text

    if state is None:
        return None
    path = Path(exp_dir) / FLAGS_FILE
    return write_text(path, "".join(json.dumps(f, sort_keys=True) + "\n" for f in state["flags"]),
                      private=is_private_directory(exp_dir))


def screen(g):
    """The guardrails ``g`` as the screen of :meth:`twin.assimilation.analysis.EnsembleAnalysis.analyse`: run the
    checks of the cycle on the inflated forecast, return the rows (sensors) still active and the checks'
    statistics for the diagnostics record."""

    def run(cycle: int, time: float, Y: np.ndarray, y: np.ndarray, r: np.ndarray, forecast: np.ndarray,
            truth: np.ndarray | None) -> tuple[np.ndarray, dict[str, float]]:
        r = np.broadcast_to(np.asarray(r, dtype=float), np.shape(y)).copy()
        g.check(cycle, time, Y, y, r, forecast=forecast, truth=truth)
        return np.flatnonzero(g.active), g.diagnostics()

    return run
