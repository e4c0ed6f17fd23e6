"""Data-parallel training over MPI: one all-reduce of the gradients per step.

Every rank (one process of an ``mpiexec`` job) holds a whole copy of the model. A training step on a global
batch of G examples goes:

1. every rank draws the same epoch permutation from the same seed and takes the same global batch of G
   indices; rank r of N keeps its contiguous slice of :math:`G_r` examples (:func:`shard`: the first
   ``G mod N`` ranks get one more, and a rank may get none of a small last batch);
2. forward and backward on that slice, with the gradient of the loss scaled by :math:`G_r / G`;
3. **one all-reduce** (a sum over the ranks) of all the gradients packed in one flat buffer
   (:class:`GradientBuffer`, in buckets of at most ``bucket_bytes``), after which every rank holds

   .. math::

      g = \\sum_r \\frac{G_r}{G} \\, ∇ L_r = ∇ \\Big( \\frac{1}{G} \\sum_{i \\in \\text{global batch}} ℓ_i \\Big),

   the gradient of the global batch's mean loss, exactly as one process with batch G computes it (the uneven
   last batch included);
4. the same optimizer step on every rank, so the copies stay equal without ever sending the weights again.

The losses and metrics reported are the global ones (their sums and counts are all-reduced too, a few
float64 numbers per step). ``BatchNormalization(synchronized=True)`` computes its batch statistics over all
ranks (two small all-gathers per layer and step; see
:class:`tinynet.layers.normalization.BatchNormalization`); a layer that is not synchronized uses its rank's
slice, as in PyTorch's DistributedDataParallel, and its moving statistics are averaged over the ranks, weighted
by :math:`G_r / G`, in the gradient buffer (so every rank keeps the same copy).
Dropout draws the global batch's mask on every rank from the shared generator and keeps its slice, and
augmentation runs on the whole global batch, so both match one process too.

Cost of the all-reduce: a ring all-reduce of B bytes over N ranks sends and receives
:math:`2 \\frac{N-1}{N} B` bytes per rank, so with link bandwidth β a step takes at least

.. math:: T_{step} = T_{compute} + 2 \\frac{N-1}{N} \\frac{B}{β}

when, as here, communication does not overlap the backward pass (``benchmarks/distributed_bench.py``
measures both terms and projects them to 8–64 ranks).

Using it
--------
``Trainer(..., distributed=True)`` or ``engine.fit(..., distributed=True)`` (and :func:`distribute` for a
compiled :class:`tinynet.Model`) do all of the above, plus: the weights, optimizer state and random generators
are broadcast from rank 0 when training starts; only rank 0 shows progress and writes checkpoints, CSV logs
and ``ModelCheckpoint`` files (callbacks whose ``chief_only`` is True); an uncaught exception on any rank ends
the whole job (:func:`install_abort_hook`) instead of leaving the others waiting in an all-reduce. Launch with
``mpiexec -n 2 python script.py`` (``pip install -e '.[distributed]'`` installs mpi4py and MPICH).

The batch size is the global batch (as in Keras' distribution strategies; Horovod and PyTorch DDP count per
process): results, checkpoints and resumption do not depend on the number of ranks.

GPU arrays: when the model is on the GPU (CuPy arrays) and CuPy has NCCL, the gradient buffer is all-reduced by
NCCL on the device (a ``cupy.cuda.nccl.NcclCommunicator`` made from an id broadcast over MPI); without NCCL it
goes through host memory and MPI. **This GPU path has not been run**: no GPU was available where it was
written; only its construction on a CPU machine (which fails with a clear message) is tested.

Importing this module needs neither mpi4py nor an MPI library; asking for a communicator without them raises
:class:`DistributedError` naming ``pip install -e '.[distributed]'``.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback

import numpy as np

from . import backend

INSTALL_HINT = "pip install -e '.[distributed]'"

#: at most this many bytes per all-reduce call (a flat buffer is reduced in buckets of this size)
DEFAULT_BUCKET_BYTES = 64 << 20

#: environment variables in which MPI launchers pass a process its rank and the number of processes
_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "MV2_COMM_WORLD_RANK")
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


class DistributedError(RuntimeError):
    """Distributed training cannot run: mpi4py or an MPI library is missing, or NCCL was asked for and is not
    there."""


def _mpi():
    """The ``mpi4py.MPI`` module, or :class:`DistributedError` with the command that installs it."""
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise DistributedError(f"distributed training needs mpi4py and an MPI library: {INSTALL_HINT} "
                               f"(installs mpi4py and MPICH from the package index; {error})") from None
    return MPI


def mpi_available() -> bool:
    """True when mpi4py imports (with an MPI library under it)."""
    try:
        _mpi()
    except DistributedError:
        return False
    return True


def _launcher_variable(names):
    for name in names:
        value = os.environ.get(name)
        if value is not None and value.strip().isdigit():
            return int(value)
    return None


def launched_rank():
    """This process's rank as an MPI launcher (``mpiexec``, ``mpirun``) set it in the environment, or ``None``
    when not launched by one. Reads the environment only: MPI is not initialised."""
    return _launcher_variable(_RANK_VARIABLES)


def launched_size():
    """The number of processes an MPI launcher started, from the environment, or ``None``."""
    return _launcher_variable(_SIZE_VARIABLES)


# ------------------------------------------------------------------------------------------ the communicator
class AllreduceStats:
    """What the gradient all-reduces of a run cost: calls, bytes (per rank, of the buffer) and seconds.

    The seconds include the wait for the slowest rank to arrive: an all-reduce is also a barrier.
    """

    def __init__(self):
        self.reset()

    def reset(self):
        self.calls, self.bytes, self.seconds = 0, 0, 0.0

    def record(self, nbytes, seconds):
        self.calls += 1
        self.bytes += int(nbytes)
        self.seconds += float(seconds)

    def as_dict(self):
        return {"calls": self.calls, "bytes": self.bytes, "seconds": self.seconds}


class Communicator:
    """A group of processes (MPI ranks) and the collective operations data-parallel training uses.

    Parameters
    ----------
    comm : mpi4py.MPI.Intracomm, optional
        Default ``MPI.COMM_WORLD``: every process ``mpiexec`` started.
    nccl : {'auto', True, False}, default 'auto'
        For CuPy arrays: ``'auto'`` uses NCCL when CuPy has it (else host memory and MPI), ``True`` requires it
        (raises :class:`DistributedError` now when it is missing), ``False`` never uses it. NumPy arrays always
        go through MPI.

    Attributes
    ----------
    rank, size : int
    mpi : mpi4py.MPI.Intracomm
    stats : AllreduceStats
        Of :meth:`allreduce_sum_` (the gradient buffers).

    Raises
    ------
    DistributedError
        Without mpi4py (naming ``pip install -e '.[distributed]'``), or ``nccl=True`` without CuPy, NCCL and
        a GPU.
    """

    def __init__(self, comm=None, nccl="auto"):
        mpi = _mpi()
        if nccl not in ("auto", True, False):
            raise ValueError(f"Communicator: nccl must be 'auto', True or False, got {nccl!r}")
        self.mpi = comm if comm is not None else mpi.COMM_WORLD
        self.rank = int(self.mpi.Get_rank())
        self.size = int(self.mpi.Get_size())
        self.nccl = nccl
        self.stats = AllreduceStats()
        self._nccl_comm = None
        self._nccl_problem = None
        self._local_rank = None
        if nccl is True:
            self._nccl_communicator()

    def __repr__(self):
        return f"<Communicator rank {self.rank} of {self.size}>"

    @property
    def is_chief(self) -> bool:
        """Rank 0: the one that prints and writes files."""
        return self.rank == 0

    @property
    def local_rank(self) -> int:
        """The rank among the processes on this machine (to pick a GPU: ``local_rank % device count``)."""
        if self._local_rank is None:
            mpi = _mpi()
            node = self.mpi.Split_type(mpi.COMM_TYPE_SHARED)
            self._local_rank = int(node.Get_rank())
            node.Free()
        return self._local_rank

    # -------------------------------------------------------------- NCCL (CuPy arrays)
    def _nccl_communicator(self):
        """The NCCL communicator (made once, collectively: every rank must call this at the same point), or
        None when NCCL is not to be used; ``nccl=True`` without it raises :class:`DistributedError`.

        Rank 0 makes an NCCL unique id and broadcasts it over MPI; every rank then joins
        ``cupy.cuda.nccl.NcclCommunicator(size, id, rank)`` on its current CUDA device. Not run yet (no GPU).
        """
        if self._nccl_comm is not None or self.nccl is False:
            return self._nccl_comm
        if self._nccl_problem is None:
            problem = None
            try:
                backend.require_gpu()
                from cupy.cuda import nccl  # noqa: F401  (an ImportError when CuPy was built without NCCL)
            except (ImportError, RuntimeError) as error:
                problem = f"{type(error).__name__}: {error}"
            problems = [p for p in self.mpi.allgather(problem) if p is not None]  # every rank decides alike
            self._nccl_problem = problems[0] if problems else ""
            if not problems:
                from cupy.cuda import nccl

                uid = nccl.get_unique_id() if self.rank == 0 else None
                uid = self.mpi.bcast(uid, root=0)
                self._nccl_comm = nccl.NcclCommunicator(self.size, uid, self.rank)
        if self._nccl_comm is None and self.nccl is True:
            raise DistributedError(f"NCCL was asked for but cannot be used ({self._nccl_problem}); GPU training "
                                   f"across processes needs a CUDA GPU on every rank and CuPy with NCCL "
                                   f"(pip install cupy-cuda13x), or Communicator(nccl=False) to go through MPI")
        return self._nccl_comm

    @staticmethod
    def _nccl_dtype(dtype):
        from cupy.cuda import nccl

        table = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64,
                 np.dtype(np.float16): nccl.NCCL_FLOAT16}
        return table[np.dtype(dtype)]

    # -------------------------------------------------------------- collectives
    def allreduce_sum_(self, buffer, bucket_bytes=DEFAULT_BUCKET_BYTES):
        """Replace the 1-D contiguous ``buffer`` by its sum over the ranks, in place (one call per bucket of at
        most ``bucket_bytes``). NumPy: ``MPI_Allreduce`` with ``MPI_IN_PLACE``; CuPy: NCCL on the device, or
        a round trip through host memory. Counted in :attr:`stats`."""
        began = time.perf_counter()
        step = max(1, int(bucket_bytes) // buffer.itemsize)
        if backend.is_gpu_array(buffer):
            comm = self._nccl_communicator()
            import cupy

            if comm is not None:
                from cupy.cuda import nccl

                stream = cupy.cuda.get_current_stream()
                dtype = self._nccl_dtype(buffer.dtype)
                for start in range(0, buffer.size, step):
                    part = buffer[start:start + step]
                    comm.allReduce(part.data.ptr, part.data.ptr, part.size, dtype, nccl.NCCL_SUM, stream.ptr)
                stream.synchronize()
            else:
                host = cupy.asnumpy(buffer)
                self._mpi_allreduce(host, step)
                buffer[...] = cupy.asarray(host)
        else:
            self._mpi_allreduce(buffer, step)
        self.stats.record(buffer.nbytes, time.perf_counter() - began)
        return buffer

    def _mpi_allreduce(self, array, step):
        mpi = _mpi()
        for start in range(0, array.size, step):
            self.mpi.Allreduce(mpi.IN_PLACE, array[start:start + step], op=mpi.SUM)

    def sum(self, values):
        """``Σ_r values_r`` of a small float64 vector (host memory); every rank gets the result."""
        values = np.array(values, dtype=np.float64).reshape(-1)
        self.mpi.Allreduce(_mpi().IN_PLACE, values, op=_mpi().SUM)
        return values

    def allgather(self, values):
        """Every rank's ``values`` (a small 1-D host array, the same length on every rank), as rows in rank
        order: shape ``(size, len(values))``, float64."""
        mine = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
        out = np.empty((self.size, mine.size), dtype=np.float64)
        self.mpi.Allgather(mine, out)
        return out

    def broadcast_(self, buffer, root=0):
        """Overwrite ``buffer`` (1-D contiguous) on every rank with ``root``'s, in place."""
        if backend.is_gpu_array(buffer):
            comm = self._nccl_communicator()
            import cupy

            if comm is not None:
                stream = cupy.cuda.get_current_stream()
                comm.bcast(buffer.data.ptr, buffer.size, self._nccl_dtype(buffer.dtype), root, stream.ptr)
                stream.synchronize()
            else:
                host = cupy.asnumpy(buffer)
                self.mpi.Bcast(host, root=root)
                buffer[...] = cupy.asarray(host)
        else:
            self.mpi.Bcast(buffer, root=root)
        return buffer

    def bcast_object(self, obj, root=0):
        """``root``'s Python object on every rank (pickled between the job's own processes)."""
        return self.mpi.bcast(obj, root=root)

    def allgather_object(self, obj):
        """Every rank's Python object, in rank order."""
        return self.mpi.allgather(obj)

    def barrier(self):
        self.mpi.Barrier()

    def abort(self, code=1):
        """End every process of the job now with exit code ``code`` (``MPI_Abort``); does not return.

        The streams are flushed first, then the process waits :data:`ABORT_GRACE` seconds: the launcher forwards
        a rank's output through a pipe of its own, and ``MPI_Abort`` kills every rank at once, so output still in
        that pipe (the ``rank R: <error>`` line that says why) was lost now and then (seen once in a CI run)."""
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        time.sleep(ABORT_GRACE)
        self.mpi.Abort(int(code))


#: seconds a rank waits, its output flushed, before ``MPI_Abort`` ends the job (:meth:`Comm.abort`)
ABORT_GRACE = 0.25

_WORLD = None


def world(nccl="auto"):
    """The communicator of every process of the job (made once per process)."""
    global _WORLD
    if _WORLD is None:
        _WORLD = Communicator(nccl=nccl)
    return _WORLD


def get_communicator(distributed=None, communicator=None):
    """The communicator a training loop was asked to use, or ``None`` for a single process.

    Parameters
    ----------
    distributed : bool, Communicator or mpi4py communicator, optional
        True: :func:`world`; False or None: none (unless ``communicator`` is given).
    communicator : Communicator or mpi4py communicator, optional

    Raises
    ------
    ValueError
        For both arguments at once, or one of another type.
    DistributedError
        Without mpi4py.
    """
    if communicator is not None and distributed not in (None, False, True):
        raise ValueError("give the communicator once: distributed=True or communicator=..., not both")
    if communicator is None and distributed not in (None, False, True):
        communicator, distributed = distributed, True
    if communicator is not None:
        if isinstance(communicator, Communicator):
            return communicator
        if hasattr(communicator, "Allreduce") and hasattr(communicator, "Get_rank"):
            return Communicator(communicator)
        raise ValueError(f"distributed: expected True, a tinynet.distributed.Communicator or an mpi4py "
                         f"communicator, got {type(communicator).__name__}")
    if isinstance(distributed, (bool, np.bool_)) or distributed is None:
        return world() if distributed else None
    raise ValueError(f"distributed: expected True or False, got {distributed!r}")


# ------------------------------------------------------------------------------------------ sharding
def shard(n, rank, size):
    """``(start, stop)`` of rank ``rank``'s contiguous share of ``n`` examples split over ``size`` ranks.

    The first ``n mod size`` ranks get ``⌈n/size⌉`` examples, the others ``⌊n/size⌋`` (NumPy's
    ``array_split`` rule); with ``n < size`` the last ranks get none. The shares, in rank order, are the
    ``n`` examples in their order, so the global batch is the same whatever the number of ranks.
    """
    n, rank, size = int(n), int(rank), int(size)
    if size < 1 or not 0 <= rank < size or n < 0:
        raise ValueError(f"shard: need 0 <= rank < size and n >= 0, got n={n}, rank={rank}, size={size}")
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


# ------------------------------------------------------------------------------------------ flat buffers
def _synchronizes_itself(layer):
    """A layer whose state every rank already computes alike (a synchronized BatchNormalization)."""
    return bool(getattr(layer, "synchronized", False))


class GradientBuffer:
    """The flat buffer the gradients travel in: packed, all-reduced in buckets, unpacked as views.

    One buffer per dtype (normally one), allocated once and reused every step. After :meth:`allreduce`,
    ``layer.grads[i]`` are views into it (valid until the next call), so nothing is copied back.

    Parameters
    ----------
    bucket_bytes : int, default 64 MiB
        The largest piece reduced by one call (a 53.5 MB float32 GoogLeNet gradient is one call).
    """

    def __init__(self, bucket_bytes=DEFAULT_BUCKET_BYTES):
        self.bucket_bytes = int(bucket_bytes)
        self.steps = 0  # calls of allreduce
        self._buffers = {}

    @staticmethod
    def entries(model, statistics=True):
        """``(layer, index, kind)`` for every trainable weight (``'grad'``) and, with ``statistics``, every
        non-trainable weight of a layer that does not synchronize itself (``'stat'``: BatchNormalization's
        moving statistics), in the model's layer order."""
        out = []
        for layer in model.layers:
            for i, trainable in enumerate(layer.trainable_flags):
                if trainable:
                    out.append((layer, i, "grad"))
                elif statistics and not _synchronizes_itself(layer):
                    out.append((layer, i, "stat"))
        return out

    def _buffer(self, key, size, like):
        buffer = self._buffers.get(key)
        if buffer is None or buffer.size != size or backend.is_gpu_array(buffer) != backend.is_gpu_array(like):
            buffer = backend.get_array_module(like).empty(size, dtype=like.dtype)
            self._buffers[key] = buffer
        return buffer

    def allreduce(self, model, comm, statistics_weight=None, average=False, zero_gradients=False):
        """Sum every trainable weight's gradient over the ranks (one flat buffer per dtype), in place.

        Parameters
        ----------
        model : tinynet.Model
        comm : Communicator
        statistics_weight : float, optional
            When given, the non-trainable weights of layers that do not synchronize themselves travel in the
            same buffer multiplied by this weight (the rank's share ``G_r / G``), so they come back as their
            weighted mean over the ranks and every rank keeps the same moving statistics.
        average : bool, default False
            Divide the sums by the number of ranks (the mean of per-rank gradients, for equal shares).
        zero_gradients : bool, default False
            Send zeros for this rank's gradients (a rank with no example in the step).

        Returns
        -------
        int : the bytes all-reduced (per rank)
        """
        groups = {}
        for layer, i, kind in self.entries(model, statistics=statistics_weight is not None):
            groups.setdefault(np.dtype(layer.weights[i].dtype), []).append((layer, i, kind))
        total = 0
        for dtype, items in groups.items():
            sizes = [int(layer.weights[i].size) for layer, i, _ in items]
            like = items[0][0].weights[items[0][1]]
            flat = self._buffer(dtype, sum(sizes), like)
            offset = 0
            for (layer, i, kind), size in zip(items, sizes):
                part = flat[offset:offset + size]
                if kind == "grad":
                    g = None if zero_gradients else layer.grads[i]
                    if g is None:
                        part[...] = 0
                    else:
                        part[...] = g.reshape(-1)
                else:
                    part[...] = layer.weights[i].reshape(-1)
                    part *= dtype.type(statistics_weight)
                offset += size
            comm.allreduce_sum_(flat, self.bucket_bytes)
            if average and comm.size > 1:
                flat /= dtype.type(comm.size)
            offset = 0
            for (layer, i, kind), size in zip(items, sizes):
                shape = layer.weights[i].shape
                if kind == "grad":
                    layer.grads[i] = flat[offset:offset + size].reshape(shape)
                else:  # a weight must not alias the buffer that the next step overwrites
                    layer.weights[i] = flat[offset:offset + size].reshape(shape).copy()
                offset += size
            total += flat.nbytes
        self.steps += 1
        return total


def allreduce_gradients(model, comm=None, average=True, bucket_bytes=DEFAULT_BUCKET_BYTES):
    """All-reduce every gradient of ``model`` in one flat buffer (bucketed), for a hand-written loop.

    After ``model.backward(...)`` on each rank's share of a batch, every rank holds the mean (``average=True``,
    for equal shares) or the sum of the ranks' gradients in ``layer.grads``; then ``optimizer.step()`` on every
    rank keeps the copies equal. (The training loop instead scales each rank's loss gradient by ``G_r / G`` and
    sums, which is exact for unequal shares too.)

    Returns
    -------
    int : bytes all-reduced per rank
    """
    comm = comm if comm is not None else world()
    return GradientBuffer(bucket_bytes).allreduce(model, comm, average=average)


def broadcast_weights(model, comm=None, root=0):
    """Overwrite every weight of ``model`` (BatchNormalization statistics included) with rank ``root``'s, in
    place, through one flat buffer per dtype. Called when training starts, so the ranks start equal whatever
    each did before (a different seed, a checkpoint read by one rank only)."""
    comm = comm if comm is not None else world()
    groups = {}
    for layer in model.layers:
        for i, w in enumerate(layer.weights):
            groups.setdefault((np.dtype(w.dtype), backend.is_gpu_array(w)), []).append((layer, i))
    for (dtype, _), items in groups.items():
        sizes = [int(layer.weights[i].size) for layer, i in items]
        like = items[0][0].weights[items[0][1]]
        flat = backend.get_array_module(like).empty(sum(sizes), dtype=dtype)
        offset = 0
        for (layer, i), size in zip(items, sizes):
            flat[offset:offset + size] = layer.weights[i].reshape(-1)
            offset += size
        comm.broadcast_(flat, root=root)
        if comm.rank != root:
            offset = 0
            for (layer, i), size in zip(items, sizes):
                layer.weights[i][...] = flat[offset:offset + size].reshape(layer.weights[i].shape)
                offset += size


def broadcast_training_state(run, comm, root=0):
    """Make every rank's training run equal to rank ``root``'s: weights (:func:`broadcast_weights`), the
    optimizer's state (slots, step count, learning rate) and every random generator (the run's shuffling and
    augmentation generator, each Dropout layer's, tinynet's global one), epoch and history.

    ``run`` is a :class:`tinynet.engine.Engine` (a Trainer, or a compiled model's training state).
    """
    from . import checkpoint

    broadcast_weights(run.model, comm, root)
    state = None
    if comm.rank == root:
        state = {"optimizer": run.optimizer.state_dict(), "rng": checkpoint.rng_states(run.model, run.rng),
                 "epoch": run.epoch, "history": run.history}
    state = comm.bcast_object(state, root=root)
    if comm.rank != root:
        run.optimizer.load_state_dict(state["optimizer"])  # the learning rate (or schedule) included
        checkpoint.set_rng_states(run.model, state["rng"], run.rng)
        run.epoch = state["epoch"]
        run.history = state["history"]


# ------------------------------------------------------------------------------------------ layers
@contextlib.contextmanager
def synchronize_batch_norm(model, comm):
    """Within the block, every ``BatchNormalization(synchronized=True)`` of ``model`` sums its statistics
    over ``comm``'s ranks (the training loop does this for the duration of ``fit``). Nothing global changes,
    and the layers are as before afterwards."""
    layers = [layer for layer in model.layers if _synchronizes_itself(layer) and hasattr(layer, "communicator")]
    before = [layer.communicator for layer in layers]
    for layer in layers:
        layer.communicator = comm
    try:
        yield layers
    finally:
        for layer, old in zip(layers, before):
            layer.communicator = old


class GlobalBatchGenerator:
    """Stands in for a layer's random generator during one data-parallel step: ``random(shape)`` draws the
    numbers of the whole global batch (``(G,) + shape[1:]``) and returns this rank's rows, so a Dropout mask
    is the one a single process would draw. Every other method is the wrapped generator's."""

    def __init__(self, generator, global_batch, start):
        self.generator, self.global_batch, self.start = generator, int(global_batch), int(start)

    def random(self, size=None, dtype=np.float64, out=None):
        if size is None or out is not None or np.ndim(size) == 0:
            return self.generator.random(size, dtype=dtype, out=out)
        shape = tuple(int(s) for s in size)
        whole = self.generator.random((self.global_batch,) + shape[1:], dtype=dtype)
        return whole[self.start:self.start + shape[0]]

    def __getattr__(self, name):
        return getattr(self.generator, name)


def random_layers(model):
    """The layers that draw from their own generator (``layer.rng``: Dropout)."""
    return [layer for layer in model.layers if isinstance(getattr(layer, "rng", None), np.random.Generator)]


@contextlib.contextmanager
def global_batch_draws(model, global_batch, start):
    """Within the block, each Dropout layer draws the global batch's mask and keeps rows ``start ..``
    (:class:`GlobalBatchGenerator`); the generators are put back afterwards."""
    layers = random_layers(model)
    saved = [layer.rng for layer in layers]
    for layer in layers:
        layer.rng = GlobalBatchGenerator(layer.rng, global_batch, start)
    try:
        yield
    finally:
        for layer, generator in zip(layers, saved):
            layer.rng = generator


def join_forward_without_data(model, global_batch):
    """The forward part of a training step that a rank with no example of the global batch must still play:
    every synchronized BatchNormalization's exchange, in node order (so the collectives match the other
    ranks'), and every Dropout draw of the global batch (so the generators stay equal to the other ranks').

    Parameters
    ----------
    model : tinynet.Model
    global_batch : int
        G, the examples of the step over all ranks.
    """
    dropout = {id(layer) for layer in random_layers(model)}
    with global_batch_draws(model, global_batch, global_batch):
        for node in model.nodes:
            layer = node.layer
            if not node.inputs:
                continue
            if hasattr(layer, "join_forward_without_data"):
                layer.join_forward_without_data()
            elif id(layer) in dropout:
                layer.forward(np.zeros((0,) + tuple(node.input_shapes), dtype=layer.dtype), training=True)


def join_backward_without_data(model, with_loss):
    """The backward part: every synchronized BatchNormalization's exchange in reverse node order, for the
    layer calls the loss's gradient reaches (those whose backward the other ranks run).

    Parameters
    ----------
    model : tinynet.Model
    with_loss : list of bool
        Per output, whether a loss sends a gradient back from it.
    """
    reached = {id(t) for t, flag in zip(model.outputs, with_loss) if flag}
    for node in reversed(model.nodes):
        if not node.inputs or id(node.output) not in reached:
            continue
        if hasattr(node.layer, "join_backward_without_data"):
            node.layer.join_backward_without_data()
        reached.update(id(t) for t in node.inputs)


# ------------------------------------------------------------------------------------------ failures
def report_error(comm, error, with_traceback=True, prefix=""):
    """Print ``rank R: <prefix><error>`` on stderr (after the traceback, when asked), flushed."""
    rank = comm.rank if comm is not None else launched_rank()
    if with_traceback:
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    text = str(error) if prefix else f"{type(error).__name__}: {error}"
    print(f"rank {rank if rank is not None else 0}: {prefix}{text}", file=sys.stderr, flush=True)


_HOOK_COMM = None


def _abort_hook(kind, value, tb):
    comm = _HOOK_COMM
    if comm is None or comm.size < 2 or issubclass(kind, SystemExit):
        sys.__excepthook__(kind, value, tb)
        return
    traceback.print_exception(kind, value, tb, file=sys.stderr)
    print(f"rank {comm.rank}: {kind.__name__}: {value}", file=sys.stderr, flush=True)
    comm.abort(130 if issubclass(kind, KeyboardInterrupt) else 1)


def install_abort_hook(comm):
    """Make an uncaught exception on any rank end the whole job (``MPI_Abort`` on ``comm``) after printing its
    traceback and ``rank R: <error>``, instead of leaving the other ranks waiting in their next all-reduce
    forever (mpi4py's ``python -m mpi4py`` does the same).

    The training loop installs it when it is given a communicator of more than one rank, unless another
    ``sys.excepthook`` (IPython's, a debugger's) is already in place.
    """
    global _HOOK_COMM
    if comm is None or comm.size < 2:
        return
    if sys.excepthook is sys.__excepthook__ or sys.excepthook is _abort_hook:
        _HOOK_COMM = comm
        sys.excepthook = _abort_hook


@contextlib.contextmanager
def abort_on_error(comm, code=1):
    """Run a block so that an exception on this rank ends the whole job (after ``rank R: <error>`` and the
    traceback), for code that catches exceptions itself. ``SystemExit(0)`` passes through."""
    try:
        yield
    except SystemExit as stop:
        if stop.code in (None, 0) or comm is None or comm.size < 2:
            raise
        comm.abort(stop.code if isinstance(stop.code, int) else code)
    except BaseException as error:
        if comm is None or comm.size < 2:
            raise
        report_error(comm, error)
        comm.abort(130 if isinstance(error, KeyboardInterrupt) else code)


# ------------------------------------------------------------------------------------------ Keras' API
def distribute(model, distributed=True):
    """Make a compiled :class:`tinynet.Model` train data-parallel in its next ``fit`` (and evaluate on
    shards in ``evaluate``): ``tinynet.distributed.distribute(model)`` after ``model.compile(...)``.

    Parameters
    ----------
    distributed : True, Communicator, mpi4py communicator, or False (back to one process)

    Returns
    -------
    the model
    """
    state = model.training_state
    if state is None:
        raise ValueError("distribute: compile the model first (model.compile(optimizer=..., loss=...))")
    state.set_communicator(get_communicator(distributed))
    return model


__all__ = ["Communicator", "DistributedError", "AllreduceStats", "GradientBuffer", "GlobalBatchGenerator",
           "world", "get_communicator", "mpi_available", "launched_rank", "launched_size", "shard",
           "allreduce_gradients", "broadcast_weights", "broadcast_training_state", "synchronize_batch_norm",
           "global_batch_draws", "join_forward_without_data", "join_backward_without_data", "random_layers",
           "install_abort_hook", "abort_on_error", "report_error", "distribute", "INSTALL_HINT",
           "DEFAULT_BUCKET_BYTES"]
