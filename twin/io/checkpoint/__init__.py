"""HDF5 checkpoints: everything needed to continue a campaign member exactly from a cycle, verified on read.

One file per experiment and cycle, ``<run>/checkpoint/cycle_NNNN.h5`` (:func:`checkpoint_path`), written atomically
(:mod:`twin.io.atomic`) so that a crash never leaves a file that looks complete.

Layout (format ``twin-checkpoint``, version 1)
----------------------------------------------
::

    /                       attrs: format="twin-checkpoint", format_version=1, cycle (int), time (float, model
                            seconds), checksum="sha256:<hex>" (SHA-256 of the bytes of /manifest)
    /manifest               uint8 dataset: canonical JSON (sorted keys) listing every other object, the digest of
                            its attributes and, for datasets, dtype, shape and the digests of its written blocks
    /provenance             group, attr record: the provenance record as JSON (twin.io.provenance; files written
                            before it have one attribute per field, which readers take as well)
    /meta                   group, attrs: one JSON text per key (coupler history, adaptive inflation, ...)
    /rng/<name>             group, attrs: bit_generator (e.g. "PCG64"), state (JSON of bit_generator.state)
    /fields/<name>          float64 dataset, natural C order of the global grid: (ny, nx) or (nz, ny, nx), with a
                            leading "member" axis for ensembles and a trailing "component" axis when dof > 1;
                            attrs: axes (JSON list of axis names), members (0 = no member axis), grid (JSON: shape in
                            PETSc order, extent, dof, periodic, centering, name), units
    /parameters/<name>      scalar parameters: dataset of shape () or (member,); field parameters: as /fields
    /arrays/<name>          any numeric NumPy array (same on every rank; written by rank 0)

Integrity
---------
A dataset is written in *blocks*: each rank's owned hyperslab of each member (parallel HDF5), or one block per member
(gathered to rank 0; on one rank the owned block is the whole member). The manifest lists every block as ``[start, stop, digest]`` (index box in dataset coordinates
and a digest of its bytes in C order, little-endian). Any reader can check any block whatever its own decomposition,
so verification is parallel (blocks are dealt round-robin to ranks) and independent of the number of ranks; when
:func:`read_checkpoint` loads a field on the decomposition it was written with, each rank checks the blocks it reads
anyway, so verification costs no extra I/O. The block digest is CRC-32 (zlib) by default: it detects every error
burst of up to 32 bits (any flipped byte) and misses a random corruption with probability 2**-32 per block, and at
~3 GB/s per core it keeps checkpointing disk-bound; ``digest="sha256"`` gives a cryptographic digest per block at
~0.3 GB/s per core on this machine (no SHA instructions), which the benchmark shows to cost half or more of the
write throughput. The file's identity is ``sha256:<hex>`` of the manifest, recorded in the root attribute
``checksum``: it covers every attribute and every block digest, and it is what provenance records as a parent
checkpoint. On read, a file that HDF5 cannot open (truncated), a manifest or attribute that does not match, a missing
dataset or a block whose bytes changed each raise :class:`~twin.core.errors.OutputError` naming the file and the
object; :func:`latest_good_checkpoint` then falls back to the previous good cycle.

What the checksum guarantees
----------------------------
It detects *accidents*: a truncated or partly written file, flipped bits on disk or in transfer, a block or an
attribute overwritten, an object added or removed. It does not detect *tampering*: the digests are not keyed, so
whoever can write the file can change the data, recompute the block digests, the manifest and the checksum, and the
file verifies again. Protection against that needs a keyed digest (an HMAC with a secret kept outside the run
directory), which this format does not have; until then, keep the checksums that matter elsewhere (the provenance of
each output records its parent checkpoint's checksum) and the run directory writable by its owner only.

Bounded reads
-------------
Sizes come from the file, so a reader checks them before it allocates: before anything is read, every dataset and
attribute must declare at most as many bytes as the file holds (a checkpoint's datasets are contiguous, uncompressed
and written in full, so a genuine file always passes). A corrupted or crafted header declaring more (a 64 KB file
declaring a 1.5 GiB manifest) is refused with :class:`~twin.core.errors.OutputError`, having read nothing; so is a
manifest whose checksum matches but whose JSON is not a twin manifest.

Parallel I/O
------------
With an MPI build of h5py (``h5py.get_config().mpi``) and more than one rank, the file is opened with the ``mpio``
driver and every rank writes (and reads) its owned hyperslab with collective transfers. Otherwise fields are gathered
to rank 0, which writes alone; readers then open the file read-only on every rank and read their own hyperslabs.
"""

from twin.io.checkpoint.layout import (DIGESTS, FORMAT, FORMAT_VERSION, FieldInfo, block_digest, checkpoint_path,
                                       list_checkpoints, parallel_hdf5_available)
from twin.io.checkpoint.reader import (CheckpointData, CheckpointReader, chained, latest_good_checkpoint,
                                       newest_verified, read_checkpoint)
from twin.io.checkpoint.writer import CheckpointWriter, write_checkpoint

__all__ = ["CheckpointWriter", "write_checkpoint", "CheckpointReader", "CheckpointData", "read_checkpoint",
           "latest_good_checkpoint", "chained", "newest_verified", "list_checkpoints", "checkpoint_path", "parallel_hdf5_available", "FieldInfo",
           "block_digest", "FORMAT", "FORMAT_VERSION", "DIGESTS"]
