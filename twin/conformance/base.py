"""What every check of the conformance kit works with: its result, the report of a run, the context the checks
share (the subject, its windows, the serial result), and the helpers that build and run a fresh model."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from twin.conformance.subject import Subject

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"


@dataclass
class CheckResult:
    """One line of the report: the check's name, PASS/FAIL/SKIP and what was measured."""

    name: str
    status: str
    measured: str

    def line(self, width: int = 28) -> str:
        return f"{self.status}  {self.name:<{width}} {self.measured}"


@dataclass
class Report:
    """The results of every check, in order."""

    subject: str
    results: list[CheckResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.status != FAIL for r in self.results)

    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == FAIL]

    def result(self, name: str) -> CheckResult:
        return next(r for r in self.results if r.name == name)

    def text(self) -> str:
        width = max([len(r.name) for r in self.results] + [10])
        return "\n".join([self.subject] + [r.line(width) for r in self.results])

    def assert_ok(self) -> None:
        """Raise ``AssertionError`` with the report when a check failed (for model authors' tests)."""
        if not self.ok:
            raise AssertionError("model contract checks failed:\n" + self.text())


@dataclass
class Context:
    """What the checks share: the subject, the windows and results of earlier checks."""

    subject: Subject
    comm: Any
    steps: int
    ranks: int
    rank_rtol: float
    t0: float = 0.0
    t1: float = 0.0
    t2: float = 0.0
    #: the serial state at t2 (natural order), from the restart check
    final: np.ndarray | None = None
    workdir: Path | None = None


class Failed(Exception):
    """A check's outcome other than a pass: ``status`` (FAIL or SKIP) and what was measured."""

    def __init__(self, status: str, measured: str):
        super().__init__(measured)
        self.status, self.measured = status, measured


def _fail(measured: str) -> Failed:
    return Failed(FAIL, measured)


def _skip(measured: str) -> Failed:
    return Failed(SKIP, measured)


@contextlib.contextmanager
def _model(ctx: Context, solver: dict | None = None):
    model = ctx.subject.build(ctx.comm, solver)
    try:
        yield model
    finally:
        model.destroy()


def _whole(model, vec) -> np.ndarray:
    return np.asarray(model.grid.allgather(vec), dtype=float).ravel()


def _run(model, x0: np.ndarray, t0: float, t1: float) -> np.ndarray:
    vec = model.grid.set_global(x0, model.create_state())
    try:
        model.advance(vec, t0, t1)
        return _whole(model, vec)
    finally:
        vec.destroy()


def _g(x: float) -> str:
    return f"{x:.3g}"


def _whole_param(model, p) -> np.ndarray:
    return np.asarray(model.parameter_grid(p.name).allgather(p.value), dtype=float).ravel()
