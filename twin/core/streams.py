"""Random streams: the one table of what every random number of twin is drawn for.

A stream is ``numpy.random.default_rng([*seeds, purpose, index])``: the seeds of the run, the *purpose* below and an
index (a member, a cycle). A stream depends on nothing else (not on the rank that draws it, the number of ranks, the
order of the steps or how often a step ran before), so a resumed campaign draws exactly what an uninterrupted one
would, and the same seeds give the same analysis on any number of ranks.

======================  =====  ============================================================================
purpose                 value  what is drawn (index)
======================  =====  ============================================================================
``INITIAL``             1      prior member ``m``: parameters from their priors, state noise (``m``)
``ANALYSIS``            2      the analysis of cycle ``k``, or ES-MDA iteration ``k``: perturbed observations,
                               random rotations (``k``)
``TRUTH``               3      the twin experiment's nature run: observation noise (0), initial state (1)
``GUARDRAILS``          4      the guardrails' rank-histogram perturbations of cycle ``k`` (``k``)
``PLACEMENT``           5      random gauge layouts of a sensor-placement study (0)
``TRUTH_PARAMETERS``    4      true parameters drawn from their priors (``experiments.truth``); keyed by
                               ``campaign.seed`` alone, without an index (:func:`truth_parameters_rng`),
                               so that experiments of one seed calibrate the same synthetic patient
======================  =====  ============================================================================

A campaign's seeds are ``(campaign.seed, assimilation.seed)`` (:func:`twin.campaign.context.streams`); an
in-memory cycle driver (:class:`twin.assimilation.cycle.EnsembleCycle`) given the same seeds draws the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Sequence

import numpy as np


class Purpose(IntEnum):
    """What a random stream is drawn for (the module's table)."""

    INITIAL = 1
    ANALYSIS = 2
    TRUTH = 3
    GUARDRAILS = 4
    PLACEMENT = 5


#: index of the TRUTH stream that perturbs the synthetic observations
TRUTH_OBSERVATIONS = 0
#: index of the TRUTH stream that draws the nature run's initial state
TRUTH_INITIAL_STATE = 1
#: purpose of the stream of drawn true parameters, keyed by ``campaign.seed`` alone (see the table)
TRUTH_PARAMETERS = 4


@dataclass(frozen=True)
class Streams:
    """The random streams of one run: ``rng(purpose, index)`` is ``default_rng([*seeds, purpose, index])``.

    Parameters
    ----------
    seeds : int or sequence of int
        The run's seeds (non-negative).
    """

    seeds: tuple[int, ...]

    def __init__(self, seeds: int | Sequence[int]):
        values = (seeds,) if np.ndim(seeds) == 0 else tuple(seeds)
        object.__setattr__(self, "seeds", tuple(int(s) for s in values))

    @classmethod
    def of(cls, seeds: "int | Sequence[int] | Streams") -> "Streams":
        """``seeds`` as streams (streams are returned as they are)."""
        return seeds if isinstance(seeds, Streams) else cls(seeds)

    def rng(self, purpose: Purpose | int, index: int) -> np.random.Generator:
        """The generator of ``purpose`` and ``index`` (a member, a cycle)."""
        return np.random.default_rng([*self.seeds, int(purpose), int(index)])


def truth_parameters_rng(campaign_seed: int) -> np.random.Generator:
    """The stream of drawn true parameters: ``default_rng([campaign.seed, TRUTH_PARAMETERS])`` (see the table)."""
    return np.random.default_rng([int(campaign_seed), TRUTH_PARAMETERS])
