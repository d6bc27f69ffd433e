"""The typed error hierarchy of twin.

Every error that twin raises on purpose derives from :class:`TwinError`. A message says what went wrong, where (file,
line, component, time) and what to change; the CLI prints it as one line per problem, without a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


class TwinError(Exception):
    """Root of all errors raised deliberately by twin."""

    def lines(self) -> list[str]:
        """The message as a list of one-line problems (for the CLI)."""
        return [str(self)]


@dataclass(frozen=True)
class ConfigProblem:
    """One problem found in a configuration file.

    Parameters
    ----------
    file : str
        Path of the YAML file.
    line, column : int or None
        1-based position of the offending key or value, where known.
    path : str
        Dotted key path, e.g. ``models.tumour.parameters.k``.
    message : str
        What was expected and, where useful, what to write instead.
    """

    file: str
    line: int | None
    column: int | None
    path: str
    message: str

    def __str__(self) -> str:
        if not self.file:
            return f"{self.path + ': ' if self.path else ''}{self.message}"
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.path + ': ' if self.path else ''}{self.message}"


class ConfigError(TwinError):
    """A configuration file (or a value derived from it) is invalid; carries every problem found."""

    def __init__(self, problems: list[ConfigProblem] | str):
        if isinstance(problems, str):
            problems = [ConfigProblem("", None, None, "", problems)]
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    def lines(self) -> list[str]:
        return [str(p) for p in self.problems]


class ModelError(TwinError):
    """A model was given inputs it cannot run with (refused before any solve)."""

    def __init__(self, component: str, message: str):
        self.component = component
        super().__init__(f"model '{component}': {message}")


class OutOfMemory(ModelError):
    """A model could not get the memory it needs (NumPy's or PETSc's allocation failed): not bad input, so the
    command exits with ``exit_status`` 1 (the run did not finish), not 2."""

    exit_status = 1


class SolverError(TwinError):
    """A PETSc solve failed: names the component, the simulated time and PETSc's converged reason."""

    def __init__(self, component: str, time: float, reason: str, hint: str = "", units: str = "", during: str = ""):
        self.component, self.time, self.reason, self.hint, self.units = component, time, reason, hint, units
        when = f"{time:.6g}" + (f" {units}" if units and units != "1" else "")
        msg = f"model '{component}': solver failed at t={when}{f' in {during}' if during else ''}: {reason}"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)

    def during(self, what: str) -> "SolverError":
        """The same failure, saying what ran (``the nature run``)."""
        return SolverError(self.component, self.time, self.reason, self.hint, self.units, during=what)


class CouplingError(TwinError):
    """A coupling scheme failed (e.g. no convergence within a window, growing interface residual)."""


class AssimilationError(TwinError):
    """Data assimilation could not proceed (bad observation set, degenerate ensemble, optimiser failure)."""


class ObservationError(TwinError):
    """Observations are invalid (outside the domain, non-positive errors, unreadable file)."""


class OutputError(TwinError):
    """An output or checkpoint file could not be written, or a file read back is incomplete or corrupted."""


class WriteError(OutputError):
    """The file system refused a write (full, over quota, read-only, no permission, a file size limit): not bad
    input, so the command exits with ``exit_status`` 1 (the run did not finish; free space or fix the permissions and
    run the same command again), not 2."""

    exit_status = 1


#: what a file another process holds open for writing is (HDF5's file lock refused this process)
BUSY = "is open in another process that may be writing it (HDF5's file lock)"


class FileBusy(OutputError):
    """A file twin must read is held by another process for writing (HDF5's file lock: an ``h5py.File`` open in mode
    ``'a'`` or ``'r+'``): not damage, nothing is set aside or computed again; close it and run the command again
    (``exit_status`` 3, as a run directory another twin command works on)."""

    exit_status = 3


class WorkflowError(TwinError):
    """A campaign workflow failed (task failures beyond the retry policy, bad resources)."""


class TooLittleAddressSpace(WorkflowError):
    """The process's virtual-memory limit is below what a local workflow's processes need, found before any of them
    starts (:func:`workflows.executors.check_address_space`): exit status 1, as every out-of-memory failure (the same
    file runs where the limit is higher)."""

    exit_status = 1
