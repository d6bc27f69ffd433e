"""MPI communicators: the world a run is given, and its split into ensemble-member groups.

Science code never calls ``MPI.COMM_WORLD`` itself: the runner creates communicators here and hands them down.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from mpi4py import MPI

from twin.core.errors import TwinError


def world() -> MPI.Comm:
    """The communicator of the whole job (only the runner and the CLI call this)."""
    return MPI.COMM_WORLD


def self_comm() -> MPI.Comm:
    return MPI.COMM_SELF


def abort_job(comm, line: str, status: int = 1) -> None:
    """End the whole MPI job from this rank alone: ``line`` (``error: ...``) straight to stderr, then ``MPI_Abort``.
    For an error on one rank while the others may wait for it inside a collective call, which would never return.
    Printed, not logged: the rank may not be rank 0, whose log alone is written, and the process ends here. The
    line and its newline go in one write: ``print`` gave them in two, between which ``mpiexec`` once put the first
    line of its abort banner (the line ended in dashes; a CI run, 2026-12-07)."""
    sys.stderr.flush()
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
    comm.Abort(status)


@dataclass
class EnsembleLayout:
    """How the ranks of one job are divided among ensemble members.

    Attributes
    ----------
    member_comm : MPI.Comm
        The communicator of this rank's group; a member's model runs on it.
    group : int
        Index of this rank's group, ``0 <= group < n_groups``.
    n_groups : int
        Number of groups.
    roots_comm : MPI.Comm or None
        Communicator of the group roots (rank 0 of each group); ``None`` on other ranks.
    members : list of int
        The ensemble members this group runs (round-robin over groups).
    """

    member_comm: MPI.Comm
    group: int
    n_groups: int
    roots_comm: MPI.Comm | None
    members: list[int]

    def free(self) -> None:
        for c in (self.member_comm, self.roots_comm):
            if c is not None and c != MPI.COMM_NULL:
                c.Free()


def split_ensemble(comm: MPI.Comm, n_members: int, ranks_per_member: int = 1) -> EnsembleLayout:
    """Split ``comm`` into groups of ``ranks_per_member`` ranks; members are dealt round-robin to groups.

    Raises
    ------
    TwinError
        If the communicator size is not a multiple of ``ranks_per_member``.
    """
    size, rank = comm.Get_size(), comm.Get_rank()
    if ranks_per_member < 1 or size % ranks_per_member:
        raise TwinError(
            f"cannot split {size} ranks into groups of {ranks_per_member}: use a multiple of {ranks_per_member} ranks"
        )
    n_groups = max(1, min(size // ranks_per_member, n_members))
    group = rank // ranks_per_member
    color = group if group < n_groups else MPI.UNDEFINED
    member_comm = comm.Split(color, rank)
    is_root = color != MPI.UNDEFINED and member_comm.Get_rank() == 0
    roots = comm.Split(0 if is_root else MPI.UNDEFINED, rank)
    if member_comm == MPI.COMM_NULL:
        member_comm = MPI.COMM_NULL
    members = list(range(group, n_members, n_groups)) if group < n_groups else []
    return EnsembleLayout(member_comm, group, n_groups, roots if roots != MPI.COMM_NULL else None, members)
