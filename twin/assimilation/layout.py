"""Moving an ensemble between the *member* layout of the forecast and the *block* layout of the analysis.

Forecast: members are dealt to groups of ranks (:func:`twin.core.comm.split_ensemble`); every rank of a group holds
the full control vectors (state + parameters, natural order) of its group's members. Analysis: the control entries are
split into contiguous blocks, one per rank of the job; each rank holds its block of *every* member (``n_block x N``).
This is the transposition of operational ensemble systems (e.g. PDAF's "collect/distribute"): a rank never holds the
whole ensemble, and the analysis of a block needs only observation-space quantities from the other ranks.

Both directions are one ``MPI_Alltoallv`` of contiguous float64 buffers. Entries are moved, never summed, so the result
does not depend on the number of ranks.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from twin.core.comm import EnsembleLayout


class EnsembleDistribution:
    """Block partition of ``n_entries`` control entries over ``comm`` and the member <-> block transposition.

    Parameters
    ----------
    comm : mpi4py communicator
        The job's communicator (all groups).
    layout : EnsembleLayout
        How members are dealt to groups.
    n_members : int
    n_entries : int
        Length of a member's control vector.
    """

    def __init__(self, comm, layout: EnsembleLayout, n_members: int, n_entries: int):
        self.comm = comm
        self.layout = layout
        self.n_members = int(n_members)
        self.n_entries = int(n_entries)
        size, rank = comm.Get_size(), comm.Get_rank()
        bounds = np.linspace(0, n_entries, size + 1).round().astype(np.int64)
        self.bounds = bounds
        self.start, self.stop = int(bounds[rank]), int(bounds[rank + 1])
        in_group = layout.member_comm != MPI.COMM_NULL
        self.is_sender = bool(in_group and layout.member_comm.Get_rank() == 0)
        # Who sends which members (group roots), and which members each rank must receive (its group's).
        self.sent_by = comm.allgather(list(layout.members) if self.is_sender else [])
        self.held_by = comm.allgather(list(layout.members))
        # One rank holding every member in order: both layouts are the same array.
        self.serial = size == 1 and list(layout.members) == list(range(self.n_members))

    @property
    def block_size(self) -> int:
        return self.stop - self.start

    def _sizes(self) -> np.ndarray:
        return np.diff(self.bounds)

    def to_blocks(self, members: np.ndarray) -> np.ndarray:
        """Member layout (``n_entries x k``, this group's members in ``layout.members`` order) -> this rank's block
        of every member (``block_size x N``). Collective on ``comm``."""
        if self.serial:
            return np.array(members, dtype=float, copy=True)
        sizes = self._sizes()
        k = len(self.layout.members) if self.is_sender else 0
        if k:
            send = np.concatenate([np.ascontiguousarray(members[self.bounds[s]:self.bounds[s + 1]].T).ravel()
                                   for s in range(sizes.size)])
        else:
            send = np.empty(0)
        scounts = sizes * k
        rcounts = np.array([len(m) for m in self.sent_by]) * self.block_size
        recv = np.empty(int(rcounts.sum()))
        self.comm.Alltoallv([send, (scounts, _displs(scounts)), MPI.DOUBLE],
                            [recv, (rcounts, _displs(rcounts)), MPI.DOUBLE])
        block = np.empty((self.block_size, self.n_members))
        off = 0
        for mem in self.sent_by:
            n = len(mem) * self.block_size
            if mem:
                block[:, mem] = recv[off:off + n].reshape(len(mem), self.block_size).T
            off += n
        return block

    def to_members(self, block: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_blocks`: every rank of a group gets the full control vectors of its members
        (``n_entries x k``). Collective on ``comm``."""
        if self.serial:
            return np.array(block, dtype=float, copy=True)
        sizes = self._sizes()
        send = np.concatenate([np.ascontiguousarray(block[:, mem].T).ravel() for mem in self.held_by])
        scounts = np.array([len(m) for m in self.held_by]) * self.block_size
        mine = list(self.layout.members)
        rcounts = sizes * len(mine)
        recv = np.empty(int(rcounts.sum()))
        self.comm.Alltoallv([send, (scounts, _displs(scounts)), MPI.DOUBLE],
                            [recv, (rcounts, _displs(rcounts)), MPI.DOUBLE])
        out = np.empty((self.n_entries, len(mine)))
        off = 0
        for s in range(sizes.size):
            n = int(sizes[s]) * len(mine)
            out[self.bounds[s]:self.bounds[s + 1]] = recv[off:off + n].reshape(len(mine), int(sizes[s])).T
            off += n
        return out

    def gather(self, block: np.ndarray) -> np.ndarray:
        """The whole ensemble (``n_entries x N``) on every rank (for tests and small outputs). Collective."""
        return np.concatenate(self.comm.allgather(block), axis=0)


def _displs(counts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
